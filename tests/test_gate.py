"""`fixloop gate`: a manifest of shared photos with injected defects, plus a corrupt file, a missing file
and a mismatched mask, through the real command (worker processes, then Ray), read back by the
tools a pipeline uses (junitparser for junit.xml, headless Chromium for report.html).

The photos are scaled to 512 px on their long side so the suite stays quick on two cores.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fixloop.agent import batch
from fixloop.checks.images import InputError
from tests import defects
from tests.conftest import photo

SIDE = 512
CHROMIUM = "/usr/bin/chromium"

# id -> expected verdict (and, for failures, the defect that must be among the findings)
EXPECTED = {
    "clean": ("pass", None),
    "dark": ("fail", "exposure_drift"),
    "spill": ("fail", "mask_spill"),
    "with_refs": ("pass", None),
    "corrupt": ("error", "corrupt.png"),
    "missing": ("error", "nowhere.png"),
    "badmask": ("error", "export the mask"),
}


def small(name: str, side: int = SIDE) -> np.ndarray:
    image = photo(name)
    h, w = image.shape[:2]
    scale = side / max(h, w)
    return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8) if array.dtype != bool else array.astype(np.uint8) * 255).save(path)
    return path


def gate(*args: str, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real command in a fresh process, as a pipeline runs it."""
    done = subprocess.run([sys.executable, "-m", "fixloop.apps.cli", "gate", *args], capture_output=True,
                          text=True, timeout=timeout)
    if check:
        assert done.returncode in (0, 1, 3), done.stderr
    return done


def rows_of(out: Path) -> dict[str, dict]:
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert len({r["id"] for r in rows}) == len(rows), "an id has two rows"
    return {r["id"]: r for r in rows}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A folder with the images and manifest.csv (paths relative to it)."""
    root = tmp_path_factory.mktemp("gate-set")
    clean_src = small("gen_clean_01.jpg")
    dark_src = small("body_couple_01.jpg")
    spill_src = small("face_obama_01.jpg")
    save(clean_src, root / "sources" / "clean.png")
    save(defects.clean_reencode(clean_src).candidate, root / "edits" / "clean.jpg")
    save(dark_src, root / "sources" / "dark.png")
    save(defects.exposure(dark_src, -0.6).candidate, root / "edits" / "dark.jpg")
    spill = defects.edit_spills_outside_mask(spill_src)
    save(spill_src, root / "sources" / "spill.png")
    save(spill.candidate, root / "edits" / "spill.jpg")
    save(spill.mask, root / "masks" / "spill.png")
    save(np.zeros((17, 23), bool) | True, root / "masks" / "badmask.png")  # not the source's size
    (root / "edits" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00 cut off here" * 4)
    rows = [
        {"id": "clean", "candidate": "edits/clean.jpg", "source": "sources/clean.png"},
        {"id": "dark", "candidate": "edits/dark.jpg", "source": "sources/dark.png"},
        {"id": "spill", "candidate": "edits/spill.jpg", "source": "sources/spill.png", "mask": "masks/spill.png"},
        {"id": "with_refs", "candidate": "edits/clean.jpg", "source": "sources/clean.png",
         "reference": "sources/clean.png;sources/clean.png"},
        {"id": "corrupt", "candidate": "edits/corrupt.png", "source": "sources/clean.png"},
        {"id": "missing", "candidate": "edits/nowhere.png"},
        {"id": "badmask", "candidate": "edits/spill.jpg", "source": "sources/spill.png", "mask": "masks/badmask.png"},
    ]
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(batch.MANIFEST_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return root


@pytest.fixture(scope="module")
def local_run(dataset: Path) -> tuple[Path, subprocess.CompletedProcess]:
    out = dataset / "out-local"
    done = gate("--manifest", str(dataset / "manifest.csv"), "--out", str(out), "--jobs", "2", "--json")
    return out, done


# ---- the run: verdicts, error rows, exit code, outputs ------------------------------------------------


def test_manifest_gives_the_right_verdict_per_row_and_exit_3(dataset, local_run):
    out, done = local_run
    assert done.returncode == 3, done.stderr  # error rows win over failures
    rows = rows_of(out)
    assert set(rows) == set(EXPECTED)
    for image_id, (verdict, detail) in EXPECTED.items():
        row = rows[image_id]
        assert row["verdict"] == verdict, (image_id, row["error"], [f["kind"] for f in row["findings"]])
        if verdict == "fail":
            assert detail in {f["kind"] for f in row["findings"]}
            assert row["error"] is None
        if verdict == "error":
            assert detail in row["error"] and "\n" not in row["error"]
    assert rows["with_refs"]["references"] == [str(dataset / "sources" / "clean.png")] * 2
    assert rows["spill"]["mask"] == str(dataset / "masks" / "spill.png")
    assert all(row["key"] and row["seconds"] >= 0 for row in rows.values())
    # nothing was written over an input, and every output is there
    assert {p.name for p in out.iterdir()} >= {"results.jsonl", "summary.json", "junit.xml", "report.html"}
    assert (dataset / "manifest.csv").read_text().startswith("id,candidate")


def test_summary_counts_and_json_stdout(local_run):
    out, done = local_run
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(done.stdout) == summary  # --json prints exactly the summary; progress went to stderr
    assert summary["verdicts"] == {"pass": 2, "fail": 2, "error": 3}
    assert summary["exit_code"] == 3 and summary["total"] == 7 and summary["checked"] == 7
    assert summary["kinds"]["mask_spill"]["P0"] >= 1 and summary["kinds"]["exposure_drift"]["P1"] >= 1
    assert summary["policy"]["fail_on"] == ["P0", "P1"] and summary["policy"]["name"] == "default"
    assert summary["images_per_second"] > 0
    assert "img/s" in done.stderr and "ETA" in done.stderr


def test_each_worker_loads_every_model_once(local_run):
    out, _ = local_run
    workers = json.loads((out / "summary.json").read_text())["workers"]
    assert len(workers) == 2  # --jobs 2
    assert sum(w["images"] for w in workers) == 7
    for worker in workers:
        assert worker["checkers"] == 1
        loads = worker["model_loads"]
        assert max(loads.values()) == 1, loads  # nothing loaded twice
        assert sum(loads.values()) >= 4, loads  # pose, face, hands and the face embedder, warmed at start


def test_junit_read_by_junitparser(local_run):
    junitparser = pytest.importorskip("junitparser")
    out, _ = local_run
    xml = junitparser.JUnitXml.fromfile(str(out / "junit.xml"))
    suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
    cases = {case.name: case for suite in suites for case in suite}
    assert set(cases) == set(EXPECTED)
    suite = suites[0]
    assert (suite.tests, suite.failures, suite.errors) == (7, 2, 3)
    for image_id, (verdict, detail) in EXPECTED.items():
        results = cases[image_id].result
        if verdict == "pass":
            assert cases[image_id].is_passed
        elif verdict == "fail":
            assert isinstance(results[0], junitparser.Failure)
            assert detail in results[0].type and detail in results[0].text
        else:
            assert isinstance(results[0], junitparser.Error)
            assert detail in results[0].message


# ---- pairing folders by file stem ------------------------------------------------------------------------


def test_folders_paired_by_stem_report_unpaired_and_exit_1(dataset, tmp_path):
    edits = tmp_path / "edits"
    edits.mkdir()
    for name in ("dark.jpg", "spill.jpg"):
        shutil.copy(dataset / "edits" / name, edits / name)
    shutil.copy(dataset / "edits" / "dark.jpg", edits / "orphan.jpg")
    (edits / "notes.txt").write_text("not an image")
    sources = tmp_path / "sources"
    shutil.copytree(dataset / "sources", sources)
    masks = tmp_path / "masks"
    masks.mkdir()
    shutil.copy(dataset / "masks" / "spill.png", masks / "spill.png")
    out = tmp_path / "out"
    done = gate(str(edits), "--sources", str(sources), "--masks", str(masks), "--out", str(out), "--jobs", "1")
    assert done.returncode == 1, done.stderr + done.stdout  # failures, no error rows
    rows = rows_of(out)
    assert set(rows) == {"dark", "spill", "orphan"}
    assert rows["spill"]["source"] == str(sources / "spill.png") and rows["spill"]["mask"] == str(masks / "spill.png")
    assert rows["dark"]["mask"] is None and rows["orphan"]["source"] is None
    assert rows["dark"]["verdict"] == "fail" and rows["spill"]["verdict"] == "fail"
    pairing = json.loads((out / "summary.json").read_text())["unpaired"]
    assert pairing["without_source"] == ["orphan"]
    assert sorted(pairing["without_mask"]) == ["dark", "orphan"]
    assert sorted(Path(p).name for p in pairing["unused_sources"]) == ["clean.png"]
    assert "candidates without a source (1): orphan" in done.stdout


def test_pair_by_stem_rules(tmp_path):
    names = ["a.jpg", "b.png", "c.png"]
    candidates = [tmp_path / "c" / n for n in names]
    sources = [tmp_path / "s" / "a.png", tmp_path / "s" / "c.png", tmp_path / "s" / "c.jpg", tmp_path / "s" / "z.png"]
    paired = batch.pair_by_stem(candidates, sources, None)
    by_id = {item.id: item for item in paired.items}
    assert by_id["a"].source == str(sources[0]) and by_id["a"].problem is None
    assert by_id["b"].source is None and paired.without_source == ["b"]
    assert "2 sources share the stem 'c'" in by_id["c"].problem
    assert paired.unused_sources == [str(sources[3])]
    assert paired.without_mask == []  # --masks not given: nothing is missing
    twins = batch.pair_by_stem([tmp_path / "x" / "a.png", tmp_path / "y" / "a.jpg"])
    assert [i.id for i in twins.items] == [str(tmp_path / "x" / "a.png"), str(tmp_path / "y" / "a.jpg")]


def test_manifest_jsonl_and_bad_manifests(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        '{"candidate": "e/one.png", "reference": ["r1.png", "/abs/r2.png"]}\n\n'
        '{"id": "two", "candidate": "/abs/two.png", "source": "s.png", "reference": "r1.png; r3.png"}\n')
    one, two = batch.read_manifest(tmp_path / "m.jsonl")
    assert one.id == "one" and one.candidate == str(tmp_path / "e" / "one.png")
    assert one.references == (str(tmp_path / "r1.png"), "/abs/r2.png")
    assert two.references == (str(tmp_path / "r1.png"), str(tmp_path / "r3.png")) and two.mask is None
    for name, text, message in [
        ("dup.csv", "id,candidate\nx,a.png\nx,b.png\n", "id 'x' is on row 2 and row 3"),
        ("nocol.csv", "image,source\na.png,b.png\n", "no 'candidate' column"),
        ("empty.csv", "id,candidate\nx,\n", "row 2 has no candidate"),
        ("bad.jsonl", '{"candidate": "a.png"}\n{oops\n', "line 2 is not JSON"),
        ("m.txt", "candidate\na.png\n", "use a .csv or .jsonl manifest"),
    ]:
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=message):
            batch.read_manifest(tmp_path / name)


# ---- bad usage: one line, exit 2, nothing written ---------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    ([], "nothing to check"),
    (["--manifest", "{m}", "{edits}"], "not both"),
    (["--manifest", "{m}", "--jobs", "0"], "--jobs 0"),
    (["--manifest", "{m}", "--engine", "spark"], "--engine 'spark'"),
    (["--manifest", "{m}", "--ray-address", "auto"], "--ray-address needs --engine ray"),
    (["--manifest", "{m}", "--fail-on", "P5"], "--fail-on 'P5'"),
    (["--manifest", "{m}", "--sources", "{edits}"], "a manifest names its source"),
    (["{edits}", "--sources", "{edits}"], "also an input folder"),
    (["{root}/nothing-*.png"], "holds no images"),
    (["--manifest", "{m}", "--out", "{m}"], "is a file"),
    (["--manifest", "{root}/nope.csv"], "does not exist"),
])
def test_usage_errors_are_one_line_exit_2(dataset, tmp_path, capsys, args, message):
    from fixloop.apps import cli

    fill = {"m": str(dataset / "manifest.csv"), "edits": str(dataset / "edits"), "root": str(dataset)}
    argv = ["gate", *(a.format(**fill) for a in args)]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    captured = capsys.readouterr()
    assert stopped.value.code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fixloop: ") and message in lines[0], captured.err
    assert not (tmp_path / "out").exists()


def test_out_of_another_run_needs_resume(local_run, dataset, capsys):
    from fixloop.apps import cli

    out, _ = local_run
    before = (out / "results.jsonl").read_bytes()
    with pytest.raises(SystemExit) as stopped:
        cli.main(["gate", "--manifest", str(dataset / "manifest.csv"), "--out", str(out)])
    assert stopped.value.code == 2 and "pass --resume" in capsys.readouterr().err
    assert (out / "results.jsonl").read_bytes() == before


def test_an_output_never_lands_on_an_input(tmp_path, capsys):
    from fixloop.apps import cli

    out = tmp_path / "run"
    out.mkdir()
    (out / "results.jsonl").write_text("")
    (out / "m.csv").write_text("candidate,source\nresults.jsonl,\n")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["gate", "--manifest", str(out / "m.csv"), "--out", str(out)])
    assert stopped.value.code == 2 and "would overwrite the input" in capsys.readouterr().err


# ---- resume ------------------------------------------------------------------------------------------------


def test_resume_after_a_kill_skips_finished_rows(dataset, tmp_path):
    """Kill a gate run after a few rows, resume it: the finished rows stay as they were, the rest are
    checked once, and a file changed since is checked again."""
    base = small("gen_clean_01.jpg", 384)
    lines = ["id,candidate,source"]
    for i in range(8):
        save(base, tmp_path / f"src{i}.png")
        save(defects.exposure(base, -0.1 * (i + 1)).candidate, tmp_path / f"cand{i}.jpg")
        lines.append(f"r{i},cand{i}.jpg,src{i}.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "fixloop.apps.cli", "gate", "--manifest", str(manifest), "--out", str(out), "--jobs", "1"]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if results.is_file() and results.read_text().count("\n") >= 3:
                break
            assert first.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        first.wait(timeout=30)
    text = results.read_text()
    with open(results, "a") as handle:
        handle.write('{"id": "r7", "verdict": "pa')  # a half-written line, as a kill mid-write leaves
    before = {json.loads(line)["id"]: line for line in text.splitlines()}
    assert 3 <= len(before) < 8
    changed = sorted(before)[0]
    save(defects.exposure(base, -0.9).candidate, tmp_path / f"cand{changed[1:]}.jpg")  # edited since: check again

    done = gate("--manifest", str(manifest), "--out", str(out), "--jobs", "1", "--resume", "--json")
    assert done.returncode in (0, 1), done.stderr
    summary = json.loads(done.stdout)
    final = results.read_text().splitlines()
    ids = [json.loads(line)["id"] for line in final]
    assert sorted(ids) == [f"r{i}" for i in range(8)]  # every id, each once
    kept = set(before) - {changed}
    assert summary["resumed"] == len(kept) and summary["checked"] == 8 - len(kept)
    for line in final:
        image_id = json.loads(line)["id"]
        if image_id in kept:
            assert line == before[image_id]  # the very same row: not checked a second time
    assert json.loads(next(line for line in final if json.loads(line)["id"] == changed)) != json.loads(before[changed])

    again = gate("--manifest", str(manifest), "--out", str(out), "--jobs", "1", "--resume", "--json")
    assert json.loads(again.stdout)["checked"] == 0  # nothing left to do
    stricter = gate("--manifest", str(manifest), "--out", str(out), "--jobs", "1", "--resume", "--json",
                    "--fail-on", "P0")
    assert json.loads(stricter.stdout)["checked"] == 8  # another policy: every image again


def test_input_key_follows_content_and_policy(tmp_path):
    a = save(np.zeros((8, 8, 3), np.uint8), tmp_path / "a.png")
    item = batch.GateItem(id="a", candidate=str(a))
    default = batch.policy_digest(batch.gate_policy(None))
    strict = batch.policy_digest(batch.gate_policy(None, ["P0", "P1", "P2"]))
    key = batch.input_key(item, default)
    assert key == batch.input_key(item, default)
    assert key != batch.input_key(item, strict)
    save(np.ones((8, 8, 3), np.uint8), a)
    assert key != batch.input_key(item, default)


def test_read_rows_drops_a_half_written_line():
    rows, intact = batch.read_rows('{"id": "a"}\n{"id": "b"}\n{"id": "c", "ver')
    assert [r["id"] for r in rows] == ["a", "b"] and intact == len('{"id": "a"}\n{"id": "b"}\n')


def test_worst_first_and_exit_codes():
    p0 = {"id": "a", "verdict": "fail", "findings": [{"priority": "P0", "score": 0.02, "threshold": 0.01}]}
    p0_big = {"id": "b", "verdict": "fail", "findings": [{"priority": "P0", "score": 0.5, "threshold": 0.01}]}
    p1 = {"id": "c", "verdict": "fail", "findings": [{"priority": "P1", "score": 3, "threshold": 0.25}]}
    assert [r["id"] for r in sorted([p1, p0, p0_big], key=batch.severity)] == ["b", "a", "c"]
    assert batch.exit_code({"pass": 3}) == 0
    assert batch.exit_code({"pass": 3, "fail": 1}) == 1
    assert batch.exit_code({"fail": 1, "error": 1}) == 3


# ---- slow: the HTML report in a real browser; Ray agrees with the local engine ---------------------------


@pytest.mark.slow
def test_report_html_in_headless_chromium(local_run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (.ci/run installs it)")
    out, _ = local_run
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html  # self-contained
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((out / "report.html").as_uri())
            assert page.inner_text("#count-fail") == "2 fail"
            assert page.inner_text("#count-error") == "3 could not be checked"
            cards = page.locator("article.failing")
            assert cards.evaluate_all("cs => cs.map(c => c.dataset.id)") == ["spill", "dark"]  # P0 before P1
            widths = page.locator("article.failing img").evaluate_all("is => is.map(i => i.complete && i.naturalWidth)")
            assert len(widths) == 2 and all(w > 0 for w in widths)  # the thumbnails decoded
            assert page.locator('article[data-id="spill"] g.region[data-kind="mask_spill"] rect').count() >= 1
            assert "exposure_drift" in page.inner_text('article[data-id="dark"]')
            assert page.locator("#errors tbody tr").count() == 3
            assert "export the mask" in page.inner_text('#errors tr[data-id="badmask"]')
            href = page.get_attribute('article[data-id="spill"] .links a', "href")
            assert (out / href).resolve() == (out.parent / "edits" / "spill.jpg").resolve()
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.slow
def test_ray_engine_gives_the_local_rows(dataset, local_run):
    pytest.importorskip("ray")
    out_local, _ = local_run
    out = dataset / "out-ray"
    done = gate("--manifest", str(dataset / "manifest.csv"), "--out", str(out), "--jobs", "2", "--engine", "ray",
                "--json", timeout=600)
    assert done.returncode == 3, done.stderr
    assert "core_worker" not in done.stderr  # Ray's native notes stay out of the terminal

    def comparable(rows):
        return {k: {f: v for f, v in r.items() if f not in ("seconds", "cpu_seconds")} for k, r in rows.items()}

    assert comparable(rows_of(out)) == comparable(rows_of(out_local))
    summary = json.loads(done.stdout)
    assert summary["engine"] == "ray" and summary["verdicts"] == {"pass": 2, "fail": 2, "error": 3}
    workers = summary["workers"]
    assert len(workers) == 2  # an actor pool of --jobs actors
    for worker in workers:
        assert worker["checkers"] == 1 and max(worker["model_loads"].values()) == 1, worker


def test_a_worker_that_dies_costs_one_error_row_not_the_run(tmp_path):
    """A decoder that brings its process down (simulated: the worker is killed mid-image) is an error
    row for that image; a new worker checks the rest."""
    psutil = pytest.importorskip("psutil")
    base = small("gen_clean_01.jpg", 384)
    lines = ["id,candidate,source"]
    save(base, tmp_path / "src.png")
    for i in range(5):
        save(defects.exposure(base, -0.2 * i).candidate, tmp_path / f"cand{i}.jpg")
        lines.append(f"r{i},cand{i}.jpg,src.png")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "fixloop.apps.cli", "gate", "--manifest", str(tmp_path / "m.csv"),
                            "--out", str(out), "--jobs", "1", "--json"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not ((out / "results.jsonl").is_file() and (out / "results.jsonl").read_text().count("\n") >= 1):
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.02)
        workers = [p for p in psutil.Process(run.pid).children()
                   if any("spawn_main" in part for part in p.cmdline())]
        assert len(workers) == 1
        workers[0].kill()  # while it checks the second image
        stdout, stderr = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 3, stderr
    rows = rows_of(out)
    assert sorted(rows) == [f"r{i}" for i in range(5)]
    died = [r for r in rows.values() if r["verdict"] == "error"]
    assert len(died) == 1 and "worker checking this image died (killed by SIGKILL)" in died[0]["error"]
    assert all(r["verdict"] in ("pass", "fail") for r in rows.values() if r is not died[0])
    assert len(json.loads(stdout)["workers"]) == 2  # the replacement finished the run
