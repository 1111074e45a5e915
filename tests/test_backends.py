"""tools/base.py's backend registry: each backend declares what it needs and costs in its own module."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fixloop.tools.base import (BACKEND_MODULES, BACKENDS, TOOLS, BackendSpec, RepairError, all_backends,
                                backend_for_tool, backend_names, load_backend, load_tool)


def test_every_backend_is_registered_by_its_own_module():
    assert backend_names() == ["local", "openai", "diffusers"]
    for name in backend_names():
        spec = load_backend(name)
        assert isinstance(spec, BackendSpec) and spec.name == name
        assert spec.module == BACKEND_MODULES[name] and spec.description
        if spec.tool is not None:
            tool = load_tool(spec.tool)
            assert tool.paid == spec.paid, "the tool and its backend agree on money"
            assert backend_for_tool(spec.tool) is spec
    assert set(BACKENDS.names()) == set(backend_names())
    assert [spec.name for spec in all_backends()] == backend_names()
    assert backend_for_tool("local.composite_back") is None


def test_an_unknown_backend_suggests_the_closest_name():
    with pytest.raises(KeyError, match="did you mean 'diffusers'"):
        load_backend("diffuser")


def test_listing_backends_imports_no_backend_module():
    """``fixloop --help`` may list the backends without loading OpenCV pipelines, torch or openai."""
    code = ("import sys; from fixloop.tools.base import backend_names; names = backend_names(); "
            "loaded = [m for m in ('fixloop.tools.openai_images', 'fixloop.tools.diffusion', 'torch', 'openai') "
            "if m in sys.modules]; print(names, loaded)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['local', 'openai', 'diffusers'] []"


def test_local_is_free_and_always_ready(monkeypatch):
    for name in ("OPENAI_API_KEY", "FIXLOOP_DIFFUSION_MODEL"):
        monkeypatch.delenv(name, raising=False)
    local = load_backend("local")
    local.ready(None)
    assert local.is_ready() and not local.paid and local.tool is None and local.keeps_unmasked
    assert local.estimate_usd(None, (4000, 3000), "high") == 0.0
    assert not any(TOOLS.get(name).paid for name in TOOLS.names() if name.startswith("local."))


def test_openai_needs_its_key(monkeypatch):
    openai = load_backend("openai")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RepairError) as error:
        openai.ready(None)
    message = str(error.value)
    assert "\n" not in message and "set OPENAI_API_KEY" in message
    assert not openai.is_ready()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    openai.ready(None)
    assert openai.paid and not openai.keeps_unmasked and openai.resolve_model(None) == "gpt-image-2"
    assert {v.name for v in openai.env} == {"OPENAI_API_KEY", "OPENAI_BASE_URL"}


def test_diffusers_needs_a_checkpoint(monkeypatch, tmp_path):
    pytest.importorskip("diffusers")
    diffusers = load_backend("diffusers")
    monkeypatch.delenv("FIXLOOP_DIFFUSION_MODEL", raising=False)
    with pytest.raises(RepairError) as error:
        diffusers.ready(None)
    message = str(error.value)
    assert "\n" not in message and "needs an inpainting checkpoint" in message
    assert "--model" in message and "FIXLOOP_DIFFUSION_MODEL" in message
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(RepairError, match="does not exist"):
        diffusers.ready(str(missing))
    monkeypatch.setenv("FIXLOOP_DIFFUSION_MODEL", "some-org/some-inpainting-model")  # a hub id: checked at load
    diffusers.ready(None)
    assert diffusers.resolve_model(None) == "some-org/some-inpainting-model"
    assert diffusers.resolve_model("other/model") == "other/model"
    assert not diffusers.paid and diffusers.keeps_unmasked and diffusers.strength and diffusers.control
    assert diffusers.estimate_usd(None, (1024, 1024), "high") == 0.0


def test_diffusers_says_what_to_install_when_torch_is_missing(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(RepairError, match=r"needs torch: pip install 'fixloop\[diffusion\]'"):
        load_backend("diffusers").ready("some-org/model")


def test_openai_estimate_is_the_planners_old_figure():
    """The planner's old estimate for one 1024x1024 high-quality call: 4160 output tokens (gpt-image-1's
    published figure for that size and quality) at the model's image-output price plus 1500
    image-input tokens at its image-input price."""
    openai = load_backend("openai")
    assert openai.estimate_usd("gpt-image-1", (1024, 1024), "high") == pytest.approx((4160 * 40 + 1500 * 10) / 1e6)
    assert openai.estimate_usd("gpt-image-1", (1024, 1024), "high") == pytest.approx(0.1814)
    assert openai.estimate_usd(None, (1024, 1024), "high") == pytest.approx((4160 * 30 + 1500 * 8) / 1e6)  # gpt-image-2
    # a snapshot uses its base model's row; the request size, not the input's, is what is priced
    assert openai.estimate_usd("gpt-image-1-2025-04-15", (1024, 1024), "low") == pytest.approx(
        (272 * 40 + 1500 * 10) / 1e6)
    wide = openai.estimate_usd("gpt-image-1", (3000, 2000), "high")  # sent as 1536x1024: 1.5x the tokens
    assert wide == pytest.approx((4160 * 1.5 * 40 + 1500 * 10) / 1e6)
    assert openai.estimate_usd("no-such-model", (1024, 1024), "high") is None


def test_backend_settings_fill_defaults_and_refuse_unknown_keys():
    openai = load_backend("openai")
    assert openai.settings_from({}) == {"model": "", "quality": "high"}
    assert openai.settings_from({"quality": "low"})["quality"] == "low"
    with pytest.raises(RepairError, match="unknown setting 'qualty' for the openai backend: did you mean 'quality'"):
        openai.settings_from({"qualty": "low"})
    assert load_backend("local").settings_from({}) == {}
