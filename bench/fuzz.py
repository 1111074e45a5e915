"""Fuzz `fixloop check | fix | repair` with generated bad, odd and hostile inputs (issue 14).

Each case is one command line run in this process through ``fixloop.apps.cli.main`` (stdout and
stderr captured, a wall-clock alarm against hangs) in a fresh folder. A case misbehaves when:

- a traceback escapes (an exception other than SystemExit, or "Traceback" on stderr),
- it hangs (runs past ``--limit`` seconds),
- its exit code is outside the contract (0 pass, 1 fail, 2 bad input; 3 "a check crashed" counts
  as a misbehaviour here: no generated input should crash a check),
- a refusal (exit 2) prints more than one stderr line, a line not starting ``fixloop: ``, or
  anything on stdout,
- a refusal leaves a file or folder behind, any run leaves a ``.*.tmp`` file,
- an input file changed.

Categories: files (hostile and mutated files as the candidate), roles (a bad file as source, mask,
reference, history, or fix/repair input), shapes (tiny, thin, extreme aspects), pairs (candidate,
source and mask of disagreeing sizes), policies (generated TOML), params (``fix --param``),
commands (output paths that cannot be written, repair runs). A table per category is printed; the
exit status is 1 when anything misbehaved.

    python -m bench.fuzz --cases 1200 --seed 14          # the full run (a few minutes)
    python -m bench.fuzz --cases 120 --seed 1 --quiet   # the bounded subset of tests/test_fuzz.py
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

CATEGORIES = ("files", "roles", "shapes", "pairs", "policies", "params", "commands")
ALLOWED_EXIT = {0, 1, 2}


@dataclass
class Case:
    category: str
    name: str
    args: list[str]  # argv after "fixloop"; "{in}" / "{out}" are replaced by the case's folders
    files: dict[str, bytes] = field(default_factory=dict)  # inputs written into {in}
    folders: list[str] = field(default_factory=list)  # folders pre-made (relative to the case root)


@dataclass
class Outcome:
    case: Case
    code: int | None
    seconds: float
    problems: list[str]
    stderr: str


# ---- generators ------------------------------------------------------------------------------------


def _png(rng: np.random.Generator, w: int = 64, h: int = 48, mode: str = "RGB") -> bytes:
    array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(array).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _encoded(rng: np.random.Generator, fmt: str, w: int = 64, h: int = 48) -> bytes:
    array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    kwargs = {"compression": "tiff_lzw"} if fmt == "TIFF" else {}
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _insert_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    at = 33
    return png[:at] + _chunk(kind, data) + png[at:]


def mutate(rng: random.Random, nrng: np.random.Generator) -> tuple[str, bytes]:
    """One mutated image file: (how it was made, bytes)."""
    from tests.hostile import bomb

    fmt = rng.choice(["PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP"])
    base = _png(nrng) if fmt == "PNG" else _encoded(nrng, fmt)
    how = rng.choice(["flip", "truncate", "chunk", "garbage", "header", "zero"] if fmt == "PNG"
                     else ["flip", "truncate", "garbage", "header", "zero"])
    data = bytearray(base)
    if how == "flip":
        for _ in range(rng.randint(1, 40)):
            data[rng.randrange(8, len(data))] = rng.randrange(256)
    elif how == "truncate":
        data = data[: rng.randrange(1, len(data))]
    elif how == "chunk":
        kind = rng.choice([b"zTXt", b"iCCP", b"pHYs", b"gAMA", b"fcTL", b"acTL", b"eXIf", b"tEXt", b"iTXt",
                           b"sBIT", b"tRNS", b"cHRM", b"sRGB", b"PLTE", b"IEND"])
        if kind in (b"zTXt", b"iCCP") and rng.random() < 0.3:
            payload = b"k\x00\x00" + bomb(rng.choice([2, 8, 64]) << 20)
        else:
            payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 2, 3, 5, 9, 13, 40])))
        data = bytearray(_insert_chunk(bytes(data), kind, payload))
    elif how == "garbage":
        data = bytearray(rng.randrange(256) for _ in range(rng.randrange(0, 2000)))
    elif how == "header":  # a header that lies about the size
        if fmt == "PNG":
            struct.pack_into(">II", data, 16, rng.choice([0, 1, 16000, 65535, 2**31 - 1]),
                             rng.choice([0, 1, 16000, 65535]))
        elif fmt == "JPEG":
            sof = data.find(b"\xff\xc0")
            if sof > 0:
                struct.pack_into(">HH", data, sof + 5, rng.choice([0, 1, 16000, 65535]), rng.choice([1, 16000, 65535]))
        else:
            data[rng.randrange(0, min(len(data), 64))] ^= 0xFF
    elif how == "zero":
        start = rng.randrange(0, len(data))
        stop = min(len(data), start + rng.randrange(1, 400))
        data[start:stop] = bytes(stop - start)
    return f"{fmt.lower()}-{how}", bytes(data)


def _shape_png(nrng: np.random.Generator, w: int, h: int) -> bytes:
    return _png(nrng, w, h)


def _mask_png(w: int, h: int, kind: str) -> bytes:
    array = np.zeros((h, w), np.uint8)
    if kind == "box":
        array[h // 4: max(h // 4 + 1, 3 * h // 4), w // 4: max(w // 4 + 1, 3 * w // 4)] = 255
    elif kind == "full":
        array[:] = 255
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


SIDES = [1, 2, 3, 8, 15, 16, 17, 31, 32, 33, 48, 64, 100, 160, 200, 256, 320, 511, 640]
HOSTILE_NUMBERS = ["0", "-1", "1e400", "-1e400", "1e308", "nan", "inf", "100000", "2000", "0.5", "true", "[1, 2]",
                   '{"a": 1}', '""', "abc", "3:2", "0:0", "1:0", "-3:2", "2:1", "1e-300", "null", "12345678901234567890"]
TOOLS = ["local.expand_canvas", "local.exposure_color", "local.defringe", "local.crop_first", "local.flip_back",
         "local.composite_back", "local.nonexistent"]
PARAM_KEYS = ["extend", "aspect", "ev", "tint", "cct", "padding", "min_padding", "work_side", "max_upscale", "overlap",
              "grow", "radius", "multiple", "feather", "fill", "anchor", "finding", "polarity", "method", "force",
              "axis", "seam", "repair", "repair_parameters", "exposure", "white_balance", "target", "zzz"]
POLICY_SECTIONS = ["gate", "gates", "analysis", "analyses", "repair", "checks", "check", "Gate", "x"]
POLICY_CHECK_KEYS = {
    "mask_spill": ["margin", "work_side", "blur_sigma", "delta_e_threshold", "ssim_threshold", "opening_px",
                   "fraction_threshold", "min_outside_fraction", "max_regions", "priority", "enabled", "nonsense"],
    "exposure_drift": ["priority", "enabled", "work_side", "limit_ev", "nonsense"],
    "subject_cropped": ["priority", "enabled", "nonsense"],
    "texture_blur": ["max_gain", "priority", "nonsense"],
    "edge_halo": ["priority", "enabled", "nonsense"],
}
TOML_VALUES = ["0", "-1", "1e9", "-1e9", "100000", "nan", "inf", "-inf", "0.5", "true", '"P0"', '"P9"', '"x"',
               "[1, 2]", "[]", "{a = 1}", "3", "1e-9", "2048"]


def generate(count: int, seed: int) -> list[Case]:
    """``count`` cases spread over the categories, reproducible from ``seed``."""
    from tests.hostile import hostile_files

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    hostile = hostile_files()
    good = _png(nrng, 96, 72)
    per = {c: count // len(CATEGORIES) for c in CATEGORIES}
    for c in CATEGORIES[: count - sum(per.values())]:
        per[c] += 1
    cases: list[Case] = []

    def bad_file() -> tuple[str, bytes]:
        if rng.random() < 0.35:
            name = rng.choice(sorted(hostile))
            return name, hostile[name]
        return mutate(rng, nrng)

    # files: as the candidate of check, the image of fix, the image of repair
    for i in range(per["files"]):
        how, data = bad_file()
        command = rng.choices(["check", "fix", "repair"], [6, 2, 1])[0]
        args = {"check": ["check", "{in}/bad"], "fix": ["fix", "{in}/bad", "--tool", "local.exposure_color",
                                                        "--out", "{out}/o.png"],
                "repair": ["repair", "{in}/bad", "--out", "{out}/run", "--budget-passes", "1"]}[command]
        cases.append(Case("files", f"{command}:{how}", args, {"bad": data, "good.png": good}))

    # roles: a bad file in every other role
    roles = [("check", "--source"), ("check", "--mask"), ("check", "--reference"), ("check", "--history"),
             ("check", "--policy"), ("fix", "--source"), ("fix", "--mask"), ("fix", "--reference"),
             ("repair", "--source"), ("repair", "--mask"), ("repair", "--reference")]
    for i in range(per["roles"]):
        how, data = bad_file()
        command, flag = roles[i % len(roles)]
        args = [command, "{in}/good.png", flag, "{in}/bad"]
        if command == "fix":
            args += ["--tool", "local.composite_back" if flag != "--reference" else "local.exposure_color",
                     "--out", "{out}/o.png"]
        if command == "repair":
            args += ["--out", "{out}/run", "--budget-passes", "1"]
        cases.append(Case("roles", f"{command}{flag}:{how}", args, {"bad": data, "good.png": good}))

    # shapes
    for i in range(per["shapes"]):
        w, h = rng.choice(SIDES), rng.choice(SIDES)
        if rng.random() < 0.15:
            w, h = rng.choice([(100000, 3), (3, 100000), (20000, 1), (1, 5000), (4000, 16), (16, 4000)])
        data = _shape_png(nrng, w, h) if w * h <= 400_000 else _png(nrng, w, h)
        command = rng.choices(["check", "check-source", "expand", "fix", "repair"], [3, 2, 2, 1, 1])[0]
        if command == "check":
            args = ["check", "{in}/s.png"]
        elif command == "check-source":
            args = ["check", "{in}/s.png", "--source", "{in}/s.png"]
        elif command == "expand":
            args = ["fix", "{in}/s.png", "--tool", "local.expand_canvas", "--param",
                    f"aspect={rng.choice(['2:1', '1:1', '1:2', '20:1', '1:20', '16:9'])}", "--out", "{out}/o.png"]
        elif command == "fix":
            args = ["fix", "{in}/s.png", "--tool", "local.exposure_color", "--param", "ev=0.5", "--out", "{out}/o.png"]
        else:
            args = ["repair", "{in}/s.png", "--out", "{out}/run", "--budget-passes", "1"]
        cases.append(Case("shapes", f"{command}:{w}x{h}", args, {"s.png": data}))

    # pairs: candidate, source and mask of disagreeing sizes
    for i in range(per["pairs"]):
        cw, ch = rng.choice(SIDES[6:]), rng.choice(SIDES[6:])
        sw, sh = rng.choice([(cw, ch), (cw * 2, ch * 2), (ch, cw), (rng.choice(SIDES[6:]), rng.choice(SIDES[6:]))])
        mw, mh = rng.choice([(cw, ch), (sw, sh), (rng.choice(SIDES), rng.choice(SIDES))])
        mask_kind = rng.choice(["box", "full", "empty"])
        files = {"c.png": _png(nrng, cw, ch), "s.png": _png(nrng, sw, sh), "m.png": _mask_png(mw, mh, mask_kind)}
        command = rng.choice(["check", "fix", "repair"])
        if command == "check":
            args = ["check", "{in}/c.png", "--source", "{in}/s.png", "--mask", "{in}/m.png"]
        elif command == "fix":
            args = ["fix", "{in}/c.png", "--tool", rng.choice(["local.composite_back", "local.crop_first",
                                                               "local.defringe"]),
                    "--source", "{in}/s.png", "--mask", "{in}/m.png", "--out", "{out}/o.png"]
        else:
            args = ["repair", "{in}/c.png", "--source", "{in}/s.png", "--mask", "{in}/m.png", "--out", "{out}/run",
                    "--budget-passes", "1"]
        cases.append(Case("pairs", f"{command}:{cw}x{ch}/{sw}x{sh}/{mw}x{mh}-{mask_kind}", args, files))

    # policies
    for i in range(per["policies"]):
        lines = []
        shape = rng.random()
        if shape < 0.15:
            lines.append("checks = " + rng.choice(["5", "[1, 2]", '"x"', "true"]))
        elif shape < 0.3:
            section = rng.choice(POLICY_SECTIONS)
            lines += [f"[{section}]", f"{rng.choice(['fail_on', 'max_side', 'max_usd', 'x'])} = {rng.choice(TOML_VALUES)}"]
        elif shape < 0.45:
            key = rng.choice(["max_side", "max_pixels", "nonsense"])
            lines += ["[analysis]", f"{key} = {rng.choice(TOML_VALUES)}"]
        elif shape < 0.6:
            key = rng.choice(["max_passes", "max_usd", "max_seconds", "seed", "polish", "wider_mask", "worse_factor",
                              "min_improvement", "max_attempts_per_defect", "backends"])
            lines += ["[repair]", f"{key} = {rng.choice(TOML_VALUES)}"]
        elif shape < 0.65:
            lines.append(rng.choice(["[[gate]]", "= 3", "[checks.mask_spill", "a = ", "\x00", "[checks.mask_spill]\n[checks.mask_spill]"]))
        else:
            check = rng.choice(sorted(POLICY_CHECK_KEYS) + ["mask_spil", "nope"])
            lines.append(f"[checks.{check}]")
            for _ in range(rng.randint(1, 3)):
                lines.append(f"{rng.choice(POLICY_CHECK_KEYS.get(check, ['priority']))} = {rng.choice(TOML_VALUES)}")
        policy = "\n".join(lines) + "\n"
        command = rng.choices(["check", "fix", "repair"], [6, 2, 1])[0]
        files = {"p.toml": policy.encode("utf-8", "surrogateescape"), "good.png": good}
        if command == "check":
            args = ["check", "{in}/good.png", "--source", "{in}/good.png", "--policy", "{in}/p.toml"]
        elif command == "fix":
            args = ["fix", "{in}/good.png", "--tool", "local.exposure_color", "--source", "{in}/good.png",
                    "--policy", "{in}/p.toml", "--out", "{out}/o.png"]
        else:
            args = ["repair", "{in}/good.png", "--policy", "{in}/p.toml", "--out", "{out}/run", "--budget-passes", "1"]
        cases.append(Case("policies", f"{command}:{' | '.join(lines)[:60]}", args, files))

    # params
    for i in range(per["params"]):
        tool = rng.choice(TOOLS)
        params = []
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(PARAM_KEYS)
            value = rng.choice(HOSTILE_NUMBERS)
            if key == "extend" and rng.random() < 0.6:
                value = f"{rng.choice(['left', 'top', 'right', 'bottom', 'middle'])}={rng.choice(HOSTILE_NUMBERS[:10])}"
            if key == "finding" and rng.random() < 0.6:
                value = rng.choice(['{"evidence": 1}', '{"evidence": {"extend": {"left": 1e400}}}', '{"evidence": []}',
                                    '{"evidence": {"extend": "left=5"}}', "[]", '{"mask": 1}'])
            if key == "repair" and rng.random() < 0.6:
                value = rng.choice(["local.defringe", "local.crop_first", "openai", "nope", "1"])
            params += ["--param", f"{key}={value}"]
        with_mask = rng.random() < 0.5
        args = ["fix", "{in}/good.png", "--tool", tool, *params, "--out", "{out}/o.png"]
        if with_mask:
            args[2:2] = ["--mask", "{in}/m.png", "--source", "{in}/good.png"]
        cases.append(Case("params", f"{tool}:{' '.join(params[1::2])}"[:80], args,
                          {"good.png": good, "m.png": _mask_png(96, 72, "box")}))

    # commands: outputs that cannot be written, usage errors, repair runs
    for i in range(per["commands"]):
        kind = rng.choice(["check-out-report-dir", "check-out-is-file", "fix-out-dir", "fix-out-noext",
                           "fix-out-is-input", "repair-final-dir", "repair-out-file", "repair-out-input",
                           "usage-unknown", "usage-budget", "repair-ok", "check-ok", "fix-mask-out-same"])
        files = {"good.png": good}
        folders: list[str] = []
        if kind == "check-out-report-dir":
            args, folders = ["check", "{in}/good.png", "--out", "{out}/c"], ["out/c/report.json"]
        elif kind == "check-out-is-file":
            args, files = ["check", "{in}/good.png", "--out", "{in}/plain"], {**files, "plain": b"x"}
        elif kind == "fix-out-dir":
            args, folders = ["fix", "{in}/good.png", "--tool", "local.exposure_color", "--param", "ev=1", "--out",
                             "{out}/taken.png"], ["out/taken.png"]
        elif kind == "fix-out-noext":
            args = ["fix", "{in}/good.png", "--tool", "local.exposure_color", "--param", "ev=1", "--out", "{out}/o"]
        elif kind == "fix-out-is-input":
            args = ["fix", "{in}/good.png", "--tool", "local.exposure_color", "--param", "ev=1", "--out",
                    "{in}/good.png"]
        elif kind == "fix-mask-out-same":
            args = ["fix", "{in}/good.png", "--tool", "local.exposure_color", "--param", "ev=1", "--out",
                    "{out}/o.png", "--mask-out", "{out}/o.png"]
        elif kind == "repair-final-dir":
            args, folders = ["repair", "{in}/good.png", "--out", "{out}/run"], ["out/run/final.png"]
        elif kind == "repair-out-file":
            args, files = ["repair", "{in}/good.png", "--out", "{in}/plain/run"], {**files, "plain": b"x"}
        elif kind == "repair-out-input":
            args = ["repair", "{in}/good.png", "--out", "{in}/good.png"]
        elif kind == "usage-unknown":
            args = [rng.choice(["check", "fix", "repair"]), "--no-such-option", "{in}/good.png"]
        elif kind == "usage-budget":
            args = ["repair", "{in}/good.png", rng.choice(["--budget-passes", "--budget-usd", "--budget-seconds"]),
                    rng.choice(["-1", "nan", "0", "inf", "x", "1e400"]), "--out", "{out}/run"]
        elif kind == "repair-ok":
            args = ["repair", "{in}/good.png", "--out", "{out}/run", "--budget-passes", "1"]
        else:
            args = ["check", "{in}/good.png", "--source", "{in}/good.png", "--out", "{out}/c"]
        cases.append(Case("commands", kind, args, files, folders))
    return cases


# ---- running one case ------------------------------------------------------------------------------


class _Hang(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise _Hang()


def _tree(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        found[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_case(case: Case, root: Path, limit: float) -> Outcome:
    from fixloop.apps.cli import main

    if root.exists():
        shutil.rmtree(root)
    inputs, out = root / "in", root / "out"
    inputs.mkdir(parents=True)
    out.mkdir()
    for name, data in case.files.items():
        (inputs / name).write_bytes(data)
    for folder in case.folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    before = _tree(root)
    args = [a.replace("{in}", str(inputs)).replace("{out}", str(out)) for a in case.args]
    stdout, stderr = io.StringIO(), io.StringIO()
    problems: list[str] = []
    code: int | None = None
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    started = time.perf_counter()
    cwd = os.getcwd()
    native = tempfile.TemporaryFile()  # what native libraries write to fd 2 (libtiff, OpenCV) counts too
    saved_fd = os.dup(2)
    try:
        os.chdir(root)
        sys.stderr.flush()
        os.dup2(native.fileno(), 2)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except _Hang:
        problems.append(f"hang: still running after {limit:g} s")
    except BaseException as exc:  # noqa: BLE001 - what the fuzzer is looking for
        problems.append(f"traceback: {type(exc).__name__}: {' '.join(str(exc).split())[:120]} "
                        f"at {traceback.extract_tb(exc.__traceback__)[-1].filename.rsplit('/', 2)[-1]}:"
                        f"{traceback.extract_tb(exc.__traceback__)[-1].lineno}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        os.chdir(cwd)
    seconds = time.perf_counter() - started
    native.seek(0)
    native_text = native.read().decode("utf-8", "replace")
    native.close()
    err, outp = stderr.getvalue() + native_text, stdout.getvalue()
    if "Traceback (most recent call last)" in err:
        problems.append("traceback on stderr")
    if code is not None and code not in ALLOWED_EXIT:
        problems.append(f"exit {code}: {' '.join(err.split())[:120]}")
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        if len(lines) != 1 or not lines[0].startswith("fixloop: "):
            problems.append(f"refusal with {len(lines)} stderr lines: {' | '.join(lines)[:160]}")
        if outp.strip():
            problems.append("refusal wrote to stdout")
    after = _tree(root)
    changed = [k for k, v in before.items() if k.startswith("in") and after.get(k) != v]
    if changed:
        problems.append(f"input changed: {changed[:3]}")
    if code == 2 or problems:
        left = sorted(k for k in after if k not in before and not k.startswith("home"))
        if left and code == 2:
            problems.append(f"left behind on a refusal: {left[:4]}")
    tmp = [k for k in after if Path(k).name.startswith(".") and k.endswith(".tmp")]
    if tmp:
        problems.append(f"temporary file left: {tmp[:3]}")
    return Outcome(case, code, seconds, problems, err)


def run(count: int, seed: int, limit: float = 60.0, categories: tuple[str, ...] = CATEGORIES,
        progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Generate and run ``count`` cases (those of ``categories``) in a private temporary folder."""
    from fixloop.checks.models import quiet_native_logs

    quiet_native_logs()
    cases = [c for c in generate(count, seed) if c.category in categories]
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="fixloop-fuzz-") as tmp:
        home = Path(tmp) / "home"
        saved = os.environ.get("FIXLOOP_HOME")
        os.environ["FIXLOOP_HOME"] = str(home)
        try:
            for index, case in enumerate(cases):
                outcome = run_case(case, Path(tmp) / "case", limit)
                outcomes.append(outcome)
                if progress:
                    progress(outcome)
        finally:
            if saved is None:
                os.environ.pop("FIXLOOP_HOME", None)
            else:
                os.environ["FIXLOOP_HOME"] = saved
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    """One row per category: inputs, exit codes, misbehaviours, slowest case."""
    rows = defaultdict(list)
    for o in outcomes:
        rows[o.case.category].append(o)
    lines = [f"{'category':<10} {'inputs':>6} {'exit 0':>6} {'exit 1':>6} {'exit 2':>6} {'other':>6} "
             f"{'bad':>5} {'max s':>7}"]
    for category in CATEGORIES:
        group = rows.get(category, [])
        if not group:
            continue
        codes = Counter(o.code for o in group)
        bad = sum(1 for o in group if o.problems)
        other = sum(n for c, n in codes.items() if c not in (0, 1, 2))
        lines.append(f"{category:<10} {len(group):>6} {codes[0]:>6} {codes[1]:>6} {codes[2]:>6} {other:>6} "
                     f"{bad:>5} {max(o.seconds for o in group):>7.2f}")
    total_bad = sum(1 for o in outcomes if o.problems)
    lines.append(f"{'all':<10} {len(outcomes):>6} {'':>6} {'':>6} {'':>6} {'':>6} {total_bad:>5}")
    return "\n".join(lines)


MEMORY_LIMIT_MB = 1536


def memory(folder: Path | None = None) -> list[tuple[str, float, int, float]]:
    """Peak RSS (MB) of a whole `fixloop check` of the largest images accepted: a PNG just under the
    40 MP cap (candidate and source) and a 63 MP JPEG (decoded reduced), each in its own process."""
    import subprocess

    rows = []
    with tempfile.TemporaryDirectory(prefix="fixloop-mem-") as tmp:
        root = Path(folder or tmp)
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (6000, 6600, 3), dtype=np.uint8)).save(root / "39mp.png", compress_level=1)
        Image.fromarray(rng.integers(0, 256, (9000, 7000, 3), dtype=np.uint8)).save(root / "63mp.jpg", quality=80)
        script = ("import resource, sys\nfrom fixloop.apps.cli import main\n"
                  "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
                  "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code)\n")
        for name, args in (("check 39 MP PNG + source", ["check", root / "39mp.png", "--source", root / "39mp.png"]),
                           ("check 63 MP JPEG", ["check", root / "63mp.jpg"])):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                                  timeout=600)
            line = [x for x in done.stdout.splitlines() if x.startswith("RSS")][-1].split()
            rows.append((name, int(line[1]) / 1024, int(line[2]) if line[2].isdigit() else -1,
                         time.perf_counter() - started))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--limit", type=float, default=60.0, help="seconds before a case counts as a hang")
    parser.add_argument("--category", action="append", choices=CATEGORIES)
    parser.add_argument("--json", type=Path, help="write every case and its outcome here")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--memory", action="store_true", help="only measure peak RSS of checks of the largest "
                        f"accepted images (limit {MEMORY_LIMIT_MB} MB)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.memory:
        rows = memory()
        for name, mb, code, seconds in rows:
            print(f"{name:<28} peak RSS {mb:7.0f} MB  exit {code}  {seconds:5.1f} s")
        return 1 if any(mb > MEMORY_LIMIT_MB for _, mb, _, _ in rows) else 0

    def show(outcome: Outcome) -> None:
        if outcome.problems and not args.quiet:
            print(f"  [{outcome.case.category}] {outcome.case.name}: {'; '.join(outcome.problems)}", flush=True)

    outcomes = run(args.cases, args.seed, args.limit, tuple(args.category or CATEGORIES), show)
    print(table(outcomes))
    print(f"{len(outcomes)} inputs in {time.perf_counter() - started:.0f} s, seed {args.seed}")
    if args.json:
        args.json.write_text(json.dumps([{"category": o.case.category, "name": o.case.name, "args": o.case.args,
                                          "exit": o.code, "seconds": round(o.seconds, 3), "problems": o.problems}
                                         for o in outcomes], indent=1) + "\n")
    return 1 if any(o.problems for o in outcomes) else 0


if __name__ == "__main__":
    if not __package__:  # run as a script (python bench/fuzz.py): tests/ beside it must import
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
