"""One namespace: an installed fixloop puts nothing but ``fixloop`` at the top of site-packages.

A wheel is built from the checkout and installed (without its dependencies, which the test
environment already has) into a folder of its own; run from outside the checkout, ``import
agent`` fails, ``import fixloop`` and ``fixloop check`` work, and the package data (policy,
templates, schemas, prices) travels with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(args, cwd, env=None, timeout=300):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_editable_install_exposes_only_the_fixloop_namespace(tmp_path):
    probe = ("import importlib.util as u, fixloop.checks.engine as e; "
             "print(all(u.find_spec(n) is None for n in ('agent', 'checks', 'tools', 'prompts', 'apps')), e.__name__)")
    result = run([sys.executable, "-c", probe], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "fixloop.checks.engine"]


@pytest.mark.slow
def test_a_built_wheel_installs_one_namespace_and_checks_an_image(tmp_path):
    wheels = tmp_path / "wheels"
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                 str(ROOT)], cwd=tmp_path, timeout=600)
    assert built.returncode == 0, built.stderr
    wheel = next(wheels.glob("fixloop-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"fixloop"}
    for data in ("fixloop/checks/default_policy.toml", "fixloop/checks/report.schema.json",
                 "fixloop/agent/repair_report.schema.json", "fixloop/prompts/hands.toml", "fixloop/tools/prices.toml"):
        assert data in names, data

    target = tmp_path / "site"
    installed = run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                    cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    # the installed copy, not the checkout: the editable finder is bypassed with -S plus explicit paths
    site = [p for p in sys.path if p.endswith("site-packages")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *site])}
    clean = [sys.executable, "-S", "-c"]
    where = run([*clean, "import fixloop.checks.engine as e; print(e.__file__)"], cwd=tmp_path, env=env)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(target))
    assert run([*clean, "import agent"], cwd=tmp_path, env=env).returncode != 0

    from tests.conftest import photo
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.fromarray(photo("face_obama_01.jpg")).save(image)
    checked = run([*clean, "from fixloop.apps.cli import main; main()", "check", str(image), "--json"],
                  cwd=tmp_path, env=env)
    assert checked.returncode in (0, 1), checked.stderr
    assert '"verdict"' in checked.stdout
