"""Hostile input (issue 14, items 1-5): files that bomb, truncate or lie, tiny and extreme shapes, huge
headers, unchecked numbers and policies, and output paths that cannot be written. Each is refused in
one line (InputError; exit 2 and one `fixloop: ...` line on the command line), inputs untouched,
nothing left behind."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixloop.agent import service
from fixloop.checks.images import MAX_PIXELS, InputError, load_image
from tests.conftest import PHOTOS
from tests.hostile import hostile_files, write_hostile, write_shape

FIXLOOP = [str(Path(sys.executable).with_name("fixloop"))]
PHOTO = PHOTOS / "body_bus_01.jpg"
# the 16000x16000 JPEG header decodes reduced; an EXIF IFD that runs off its chunk is ignored (the pixels decode)
BAD = sorted(set(hostile_files()) - {"big_header.jpg", "bad_exif.png"})


def fixloop(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*FIXLOOP, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=180,
                          env=env)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text, text
    return text


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    return write_hostile(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(path)
    return path


def test_hostile_files_are_what_they_claim(hostile):
    assert 50_000 < hostile["ztxt_bomb.png"].stat().st_size < 200_000  # 64 MB when inflated
    assert hostile["big_header.jpg"].stat().st_size == 16_000
    data = hostile["big_header.jpg"].read_bytes()
    sof = data.find(b"\xff\xc0")
    assert data[sof + 5:sof + 9] == bytes.fromhex("3e803e80")  # 16000 x 16000


@pytest.mark.parametrize("name", BAD)
@pytest.mark.parametrize("role", ["candidate", "source", "reference", "history image", "mask", "image"])
def test_every_bad_file_is_one_line_in_every_role(hostile, name, role):
    with pytest.raises(InputError) as caught:
        if role == "mask":
            service.decode_mask(hostile[name])
        else:
            service.decode_image(hostile[name], role)
    assert one_line(caught.value).startswith(f"{role} ")
    assert str(hostile[name]) in str(caught.value)


@pytest.mark.parametrize("name", BAD)
def test_every_bad_file_is_one_line_as_bytes(name):
    data = hostile_files()[name]
    with pytest.raises(InputError) as caught:
        service.decode_image(data, "image")
    one_line(caught.value)


def test_check_refuses_bad_files_in_every_role(hostile, good):
    for name in ("ztxt_bomb.png", "short_phys.png", "garbage_exif.png"):
        bad = hostile[name]
        for kwargs in ({"candidate": bad}, {"candidate": good, "source": bad}, {"candidate": good, "mask": bad},
                       {"candidate": good, "references": [bad]}, {"candidate": good, "history": [bad]}):
            with pytest.raises(InputError) as caught:
                service.check(**kwargs)
            one_line(caught.value)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["check", "fix", "repair"])
def test_command_line_refusal_is_one_line_and_exit_2(hostile, tmp_path, command):
    """The commands as a user runs them: exit 2, one stderr line, stdout empty, nothing written."""
    extra = {"check": [], "fix": ["--tool", "local.exposure_color", "--out", tmp_path / "o.png"],
             "repair": ["--out", tmp_path / "run"]}[command]
    home = {"FIXLOOP_HOME": str(tmp_path / "home")}
    import os

    for name in ("iccp_bomb.png", "short_fctl.png"):
        before = hashlib.sha256(hostile[name].read_bytes()).hexdigest()
        result = fixloop(command, hostile[name], *extra, env={**os.environ, **home})
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("fixloop: "), result.stderr
        assert hashlib.sha256(hostile[name].read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["home"])


def test_an_exif_block_cut_short_is_ignored_quietly(hostile, recwarn):
    assert load_image(hostile["bad_exif.png"]).size == (64, 48)
    assert not [w for w in recwarn if "EXIF" in str(w.message)]


def test_libtiff_says_nothing_beside_the_one_line(tmp_path):
    """A corrupt LZW TIFF: libtiff's own "Using code not yet in table." never reaches stderr."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="TIFF",
                                                                                compression="tiff_lzw")
    data = bytearray(buffer.getvalue())
    for i in range(200, 1200, 7):
        data[i] = int(rng.integers(0, 256))
    path = tmp_path / "lzw.tif"
    path.write_bytes(bytes(data))
    code = ("import sys\nfrom fixloop.checks.images import load_image, InputError\n"
            f"try:\n    load_image({str(path)!r}, 'candidate')\nexcept InputError as e:\n    print('REFUSED', e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "REFUSED" in result.stdout
    assert result.stderr == "", result.stderr


# ---- shapes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(1, 1), (3, 200), (200, 3), (200, 1), (15, 400), (1000, 40)])
def test_tiny_and_extreme_shapes_are_refused_in_one_line(tmp_path, size):
    path = write_shape(tmp_path / "s.png", *size)
    for call in (lambda: service.check(path), lambda: service.fix(path, "local.exposure_color"),
                 lambda: service.check(PHOTO, source=path)):
        with pytest.raises(InputError) as caught:
            call()
        assert f"{size[0]}x{size[1]}" in one_line(caught.value)


@pytest.mark.parametrize("size", [(32, 32), (320, 32), (32, 320), (48, 40)])
def test_small_crops_and_panoramas_up_to_10_to_1_are_checked(tmp_path, size):
    path = write_shape(tmp_path / "s.png", *size)
    report = service.check(path, source=path)
    assert not [c.name for c in report.checks if c.status.value == "error"]


def test_subject_cropped_survives_a_tiny_candidate_and_source():
    """The check itself (reached through the API with arrays) never crashes in ORB's resize."""
    from fixloop.checks.context import CheckContext
    from fixloop.checks.engine import run_checks
    from fixloop.checks.images import decoded_from_array
    from fixloop.checks.policy import load_policy

    for shape in [(1, 1), (3, 200), (200, 3), (1, 200)]:
        image = decoded_from_array(np.full((*shape, 3), 120, np.uint8))
        ctx = CheckContext.build(image, image, None, [], [], max_side=2048)
        report = run_checks(ctx, load_policy(), names=["subject_cropped"])
        assert report.checks[0].status.value != "error", report.checks[0].error


@pytest.mark.parametrize("shape,aspect", [((1, 1), "2:1"), ((1, 200), "1:1"), ((200, 1), "1:1"),
                                          ((100000, 3), "1:1"), ((3, 100000), "1:1"), ((2, 1), "20:1")])
def test_expand_canvas_terminates_on_any_shape(shape, aspect):
    from fixloop.tools.base import RepairError, RepairRequest
    from fixloop.tools.local import expand_canvas

    started = time.perf_counter()
    try:
        result = expand_canvas(RepairRequest(image=np.zeros((*shape, 3), np.uint8), parameters={"aspect": aspect}))
        h, w = result.image.shape[:2]
        assert result.image[result.parameters["offset"][1]:, result.parameters["offset"][0]:][:shape[0], :shape[1]].shape[:2] == shape
        assert h * w <= 40_000_000
    except RepairError as exc:
        one_line(exc)
    assert time.perf_counter() - started < 2


# ---- memory ---------------------------------------------------------------------------------------

def test_a_jpeg_claiming_16000x16000_decodes_reduced(hostile):
    started = time.perf_counter()
    try:
        decoded = load_image(hostile["big_header.jpg"], "candidate")
        assert decoded.size[0] * decoded.size[1] <= MAX_PIXELS
    except InputError as exc:
        one_line(exc)
    assert time.perf_counter() - started < 5


def test_a_large_jpeg_decodes_reduced_and_a_large_png_is_refused(tmp_path):
    image = Image.new("RGB", (9000, 5000), (90, 120, 150))  # 45 MP: over the 40 MP cap
    image.save(tmp_path / "big.jpg", quality=70)
    decoded = load_image(tmp_path / "big.jpg")
    assert decoded.size == (4500, 2500)
    image.save(tmp_path / "big.png", compress_level=1)
    with pytest.raises(InputError, match="too large"):
        load_image(tmp_path / "big.png")
    assert load_image(tmp_path / "big.png", max_pixels=50_000_000).size == (9000, 5000)


def test_the_pixel_cap_is_a_policy_value(tmp_path):
    from fixloop.checks.policy import load_policy

    assert load_policy().analysis.max_pixels == MAX_PIXELS < 268_000_000
    (tmp_path / "p.toml").write_text("[analysis]\nmax_pixels = 1_000_000\n")
    path = tmp_path / "two.png"
    Image.new("RGB", (1500, 1000), (1, 2, 3)).save(path)
    with pytest.raises(InputError, match="too large"):
        service.check(path, policy=tmp_path / "p.toml")


# ---- numbers and policies -------------------------------------------------------------------------

@pytest.mark.parametrize("tool,param", [
    ("local.expand_canvas", "extend=left=1e400"), ("local.exposure_color", "ev=2000"),
    ("local.crop_first", "padding=1e308"), ("local.expand_canvas", 'finding={"evidence": 1}'),
    ("local.expand_canvas", "finding=3"), ("local.expand_canvas", "overlap=100000"),
    ("local.defringe", "grow=100000"), ("local.defringe", "radius=100000"), ("local.exposure_color", "ev=NaN"),
    ("local.exposure_color", "tint=[1]"), ("local.expand_canvas", "aspect=1e400:1"),
    ("local.expand_canvas", "multiple=1e12"), ("local.crop_first", "work_side=true"),
])
def test_unchecked_numbers_are_refused_before_any_work(tool, param):
    parameters = service.parse_params([param])
    started = time.perf_counter()
    with pytest.raises(InputError) as caught:
        service.fix(PHOTO, tool, parameters=parameters)
    text = one_line(caught.value)
    assert param.split("=")[0] in text
    assert time.perf_counter() - started < 1.5  # refused before decoding and checks


@pytest.mark.parametrize("body,expected", [
    ("[gates]\nfail_on = ['P0']\n", "[gates]: did you mean [gate]"),
    ("checks = 5\n", "checks = 5"),
    ("checks = [1, 2]\n", "checks = [1, 2]"),
    ("[checks.mask_spill]\nblur_sigma = 1e9\n", "checks.mask_spill.blur_sigma"),
    ("[checks.mask_spill]\nopening_px = 100000\n", "checks.mask_spill.opening_px"),
    ("[checks]\nmask_spill = 3\n", "checks.mask_spill"),
    ("[repair]\nmax_usd = nan\n", "repair.max_usd"),
    ("[repair]\nmax_seconds = inf\n", "repair.max_seconds"),
    ("[analysis]\nmax_side = 'big'\n", "analysis.max_side"),
    ("[analysis]\nmax_pixels = 1e12\n", "analysis.max_pixels"),
    ("gate = 3\n", "gate = 3"),
])
def test_policy_values_are_typed_and_ranged(tmp_path, body, expected):
    from fixloop.checks.policy import load_policy

    path = tmp_path / "policy.toml"
    path.write_text(body)
    with pytest.raises(InputError) as caught:
        load_policy(path)
    assert expected in one_line(caught.value)


# ---- leftovers --------------------------------------------------------------------------------------

def test_check_out_where_report_json_is_a_folder_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    (out / "report.json").mkdir(parents=True)
    result = fixloop("check", PHOTO, "--out", out)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]


def test_write_check_report_removes_what_it_wrote_on_a_failure(tmp_path):
    report = service.check(PHOTO, only=["exposure_drift"])
    out = tmp_path / "new" / "deeper"
    out.parent.mkdir()
    (out.parent / "deeper").write_text("a file where the folder goes")
    with pytest.raises(InputError):
        service.write_check_report(report, out / "x")
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["deeper"]


def test_fix_out_naming_a_folder_is_refused_before_work(tmp_path):
    (tmp_path / "taken.png").mkdir()
    result = fixloop("fix", PHOTO, "--tool", "local.exposure_color", "--param", "ev=1", "--out", tmp_path / "taken.png")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.png"]
    assert list((tmp_path / "taken.png").iterdir()) == []


def test_repair_out_with_a_folder_where_final_goes_is_refused_before_the_loop(tmp_path):
    out = tmp_path / "run"
    (out / "final.jpg").mkdir(parents=True)
    with pytest.raises(InputError, match="final.jpg"):
        service.start_repair(service.RepairOrder(image=PHOTO, out=out), db=tmp_path / "runs.sqlite")
    assert sorted(p.name for p in out.iterdir()) == ["final.jpg"]


def test_repair_of_a_bad_input_creates_nothing(tmp_path, hostile):
    out = tmp_path / "a" / "b"
    for name in ("ztxt_bomb.png", "short_gama.png"):
        with pytest.raises(InputError):
            service.start_repair(service.RepairOrder(image=hostile[name], out=out), db=tmp_path / "runs.sqlite")
        with pytest.raises(InputError):
            service.start_repair(service.RepairOrder(image=PHOTO, source=hostile[name], out=out),
                                 db=tmp_path / "runs.sqlite")
    assert not (tmp_path / "a").exists()
