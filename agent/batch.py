"""Many images through the checks: the decisions a gate makes, whatever front end or engine runs it.

A gate takes sets of (candidate, source, mask, references), checks each with
:func:`fixloop.agent.service.check` and keeps one result row per image. What is decided here, so
that the command line, a future HTTP batch endpoint and both engines (worker processes, Ray actors)
decide it the same way:

- **inputs**: a manifest (CSV or JSONL; columns ``id``, ``candidate``, ``source``, ``mask``,
  ``reference``, several references separated by ``;``; paths relative to the manifest's folder), or
  candidate files paired with ``--sources`` / ``--masks`` folders by file stem (:func:`pair_by_stem`);
- **one row per image** (:func:`GateChecker.check`): a file that is missing, corrupt or unsupported, a
  mask of the wrong size, even a crashed check, is an ``error`` row with a one-line reason, never the
  end of the run;
- **resume**: a row carries the content hash of its inputs and of the policy (:func:`input_key`), so a
  later run skips exactly the images whose files and policy did not change;
- **models load once per worker**: a :class:`GateChecker` warms every model when it is built and
  counts the loads (:func:`model_loads`), so a test can prove no worker reloads one;
- **verdicts**: worst first (:func:`severity`), counted (:func:`summarise`) and turned into the exit
  code (:func:`exit_code`: 3 when any image could not be checked, else 1 when any failed, else 0).

Nothing here prints or exits; bad usage raises :class:`~fixloop.checks.images.InputError`. The checks
themselves (OpenCV, MediaPipe, dlib) load only when a :class:`GateChecker` is built.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from fixloop.checks.images import InputError

if TYPE_CHECKING:
    from fixloop.checks.policy import Policy

# What a folder or glob contributes as candidates (and what --sources / --masks may pair).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
MANIFEST_COLUMNS = ("id", "candidate", "source", "mask", "reference")
REFERENCE_SEPARATOR = ";"
VERDICTS = ("pass", "fail", "error")
EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 3
# Bump when a row's meaning changes: rows of another version are checked again on --resume.
ROW_VERSION = "1"


# ---- items: what one row checks -----------------------------------------------------------------


@dataclass(frozen=True)
class GateItem:
    """One image to gate. Paths are absolute. ``problem`` is set when the item cannot be checked at all
    (two sources share its stem): it becomes an error row without a check."""

    id: str
    candidate: str
    source: str | None = None
    mask: str | None = None
    references: tuple[str, ...] = ()
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "candidate": self.candidate, "source": self.source, "mask": self.mask,
                "references": list(self.references), "problem": self.problem}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GateItem":
        return cls(id=data["id"], candidate=data["candidate"], source=data.get("source"), mask=data.get("mask"),
                   references=tuple(data.get("references") or ()), problem=data.get("problem"))

    def paths(self) -> list[str]:
        return [p for p in (self.candidate, self.source, self.mask, *self.references) if p]


@dataclass
class Pairing:
    """What pairing by stem found: the items, and the partners that were looked for and not found."""

    items: list[GateItem]
    without_source: list[str] = field(default_factory=list)  # ids of candidates with no source of their stem
    without_mask: list[str] = field(default_factory=list)
    unused_sources: list[str] = field(default_factory=list)  # files in --sources that no candidate took
    unused_masks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"without_source": self.without_source, "without_mask": self.without_mask,
                "unused_sources": self.unused_sources, "unused_masks": self.unused_masks}


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _stem_index(files: Iterable[Path]) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for path in files:
        index.setdefault(path.stem, []).append(path)
    return index


def _unique_ids(candidates: Sequence[Path]) -> list[str]:
    """The stem, or the whole path where two candidates share a stem (a.png and a.jpg)."""
    counts: dict[str, int] = {}
    for path in candidates:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    return [path.stem if counts[path.stem] == 1 else str(path) for path in candidates]


def pair_by_stem(candidates: Sequence[str | Path], sources: Sequence[str | Path] | None = None,
                 masks: Sequence[str | Path] | None = None) -> Pairing:
    """Pair each candidate with the source and the mask of the same file stem.

    ``candidates/beach-01.jpg`` takes ``sources/beach-01.*`` and ``masks/beach-01.*`` (any image
    suffix). A candidate with no partner is still checked, by the checks that need no source or mask,
    and is listed in ``without_source`` / ``without_mask``; two partners of one stem (``beach-01.png``
    and ``beach-01.jpg``) make that candidate an error row, because either choice could be wrong.
    ``sources`` / ``masks`` None means the flag was not given (nothing is reported missing).
    """
    paths = [Path(c).resolve() for c in candidates]
    source_index = _stem_index(Path(s).resolve() for s in sources or ())
    mask_index = _stem_index(Path(m).resolve() for m in masks or ())
    result = Pairing(items=[])
    used_sources: set[Path] = set()
    used_masks: set[Path] = set()
    for item_id, path in zip(_unique_ids(paths), paths):
        found: dict[str, str | None] = {"source": None, "mask": None}
        problems = []
        for role, index, flag_given, missing, used in (
                ("source", source_index, sources is not None, result.without_source, used_sources),
                ("mask", mask_index, masks is not None, result.without_mask, used_masks)):
            partners = [p for p in index.get(path.stem, []) if p != path]
            if len(partners) == 1:
                found[role] = str(partners[0])
                used.add(partners[0])
            elif len(partners) > 1:
                names = ", ".join(sorted(p.name for p in partners))
                problems.append(f"{len(partners)} {role}s share the stem {path.stem!r} ({names}): keep one")
                used.update(partners)
            elif flag_given:
                missing.append(item_id)
        result.items.append(GateItem(id=item_id, candidate=str(path), source=found["source"], mask=found["mask"],
                                     problem="; ".join(problems) or None))
    result.unused_sources = sorted(str(p) for ps in source_index.values() for p in ps if p not in used_sources)
    result.unused_masks = sorted(str(p) for ps in mask_index.values() for p in ps if p not in used_masks)
    return result


# ---- manifests --------------------------------------------------------------------------------------


def read_manifest(path: str | Path) -> list[GateItem]:
    """The items of a CSV or JSONL manifest. Relative paths are taken from the manifest's folder; a
    row without an ``id`` gets its candidate's stem. A manifest that cannot be read, a row without a
    candidate or two rows with one id are bad usage (InputError); a file a row names that is missing
    or unreadable is not: that row becomes an error row when it is checked."""
    manifest = Path(path)
    label = f"manifest {str(path)!r}"
    if not manifest.is_file():
        raise InputError(f"{label} does not exist: check the path")
    suffix = manifest.suffix.lower()
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{label} cannot be read ({exc}): save it as UTF-8 text") from None
    if suffix == ".csv":
        records = _csv_records(text, label)
    elif suffix in (".jsonl", ".ndjson"):
        records = _jsonl_records(text, label)
    else:
        raise InputError(f"{label}: use a .csv or .jsonl manifest (columns {', '.join(MANIFEST_COLUMNS)})")
    if not records:
        raise InputError(f"{label} lists no images: add rows with a candidate column")
    base = manifest.resolve().parent
    items: list[GateItem] = []
    seen: dict[str, str] = {}
    for where, record in records:
        candidate = _text(record.get("candidate"))
        if not candidate:
            raise InputError(f"{label} {where} has no candidate: every row names the image to check")
        refs = record.get("reference", record.get("references"))
        if isinstance(refs, list):
            references = [_text(r) for r in refs]
        else:
            references = (_text(refs) or "").split(REFERENCE_SEPARATOR)
        item_id = _text(record.get("id")) or Path(candidate).stem
        if item_id in seen:
            raise InputError(f"{label}: id {item_id!r} is on {seen[item_id]} and {where}: give every row its own id")
        seen[item_id] = where
        items.append(GateItem(
            id=item_id, candidate=_resolve(candidate, base),
            source=_resolve(_text(record.get("source")), base), mask=_resolve(_text(record.get("mask")), base),
            references=tuple(_resolve(r.strip(), base) for r in references if r and r.strip())))
    return items


def _csv_records(text: str, label: str) -> list[tuple[str, dict[str, Any]]]:
    import io

    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if "candidate" not in header:
        raise InputError(f"{label} has no 'candidate' column (header: {', '.join(header) or 'empty'}): "
                         f"name the columns {', '.join(MANIFEST_COLUMNS)}")
    reader.fieldnames = header
    return [(f"row {number}", row) for number, row in enumerate(reader, start=2)
            if any(_text(v) for v in row.values() if not isinstance(v, list))]


def _jsonl_records(text: str, label: str) -> list[tuple[str, dict[str, Any]]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{label} line {number} is not JSON ({exc.msg}): one object per line") from None
        if not isinstance(record, dict):
            raise InputError(f"{label} line {number} is not a JSON object: one object per line")
        records.append((f"line {number}", record))
    return records


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _resolve(value: str | None, base: Path) -> str | None:
    if not value:
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


# ---- policy, hashing, resume ------------------------------------------------------------------------


def parse_fail_on(text: str | None) -> list[str] | None:
    """``--fail-on P0,P1`` -> ["P0", "P1"]; None keeps the policy's rule."""
    if text is None:
        return None
    wanted = [part.strip().upper() for part in text.split(",") if part.strip()]
    bad = [p for p in wanted if p not in ("P0", "P1", "P2")]
    if not wanted or bad:
        raise InputError(f"--fail-on {text!r}: give priorities from P0, P1, P2 separated by commas, e.g. P0,P1")
    return sorted(set(wanted))


def gate_policy(policy: str | Path | None, fail_on: Sequence[str] | None = None) -> "Policy":
    """The policy a gate judges with: the file (or the default) with ``fail_on`` replacing its gate rule."""
    from fixloop.agent.service import resolve_policy
    from fixloop.checks.policy import GateRules

    loaded = resolve_policy(policy)
    if fail_on is not None:
        rules = GateRules(fail_on=list(fail_on), count_inherited=loaded.gate.count_inherited)
        loaded = loaded.model_copy(update={"gate": rules})
    return loaded


def policy_digest(policy: "Policy") -> str:
    """Content hash of everything in a policy that can change a verdict (not its file name)."""
    merged = dict(policy.raw)
    merged["gate"] = {**merged.get("gate", {}), "fail_on": [p.value for p in policy.gate.fail_on]}
    text = json.dumps(merged, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_digest(path: str | None) -> str:
    """sha256 of a file's bytes; 'missing' or 'unreadable' when there are none to hash."""
    if path is None:
        return "-"
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"


def input_key(item: GateItem, digest: str) -> str:
    """The resume key of an item: its id, the content of every file it names, the policy, the row format."""
    parts = [ROW_VERSION, digest, item.id, item.problem or "",
             *(f"{role}={file_digest(path)}" for role, path in
               (("candidate", item.candidate), ("source", item.source), ("mask", item.mask),
                *(("reference", r) for r in item.references)))]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:24]


def finished_keys(rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """id -> key of the rows a resumed run can keep."""
    return {row["id"]: row["key"] for row in rows if isinstance(row, Mapping) and row.get("id") and row.get("key")}


def read_rows(text: str) -> tuple[list[dict[str, Any]], int]:
    """The rows of a results.jsonl and the length of its intact prefix (a kill can leave half a line)."""
    rows: list[dict[str, Any]] = []
    intact = 0
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            row = json.loads(line)
        except ValueError:
            break
        if isinstance(row, dict):
            rows.append(row)
        intact += len(line)
    return rows, intact


# ---- one worker: models loaded once, one row per item ----------------------------------------------


def model_loads() -> dict[str, int]:
    """How often this process loaded each model of the checks: 1 = loaded once, 0 = not needed yet.

    Read from the loaders themselves, whatever their shape: a cached loader function (its cache
    misses: a reload would show as 2) or a lazily built graph holder (built or not)."""
    from fixloop.checks import analyses, identity

    loads: dict[str, int] = {}
    for module in (analyses, identity):
        for name, value in sorted(vars(module).items()):
            if callable(value) and hasattr(value, "cache_info") and name.endswith(("_model", "_models", "_session")):
                loads[name.strip("_").lower()] = value.cache_info().misses
            elif hasattr(value, "_build") and hasattr(value, "_graph"):
                loads[name.strip("_").lower()] = int(value._graph is not None)
    return loads


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_environment(threads: int) -> dict[str, str]:
    """Environment for a worker process: native thread pools capped (read when numpy loads)."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def memory_mb() -> tuple[float | None, float | None]:
    """This process's resident memory now and at its peak, in MiB (None where the system cannot say)."""
    rss = peak = None
    try:
        import resource

        peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    except (ImportError, OSError):
        pass
    try:
        with open("/proc/self/statm") as handle:
            rss = round(int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return rss, peak


def limit_threads(threads: int) -> None:
    """Cap OpenCV's thread pool in this worker, so N workers share the cores instead of fighting."""
    import cv2

    cv2.setNumThreads(threads)


def worker_threads(jobs: int) -> int:
    """Native threads per worker: the cores shared out between the workers, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, jobs))


_CHECKERS_BUILT = 0  # GateCheckers built in this process: one per worker


class GateChecker:
    """What one worker (a process or a Ray actor) holds: the policy, and every model, loaded once when
    it is built (a warm-up check of the bundled example, which has a face, a source and a mask)."""

    def __init__(self, policy: str | None, fail_on: Sequence[str] | None, threads: int | None = None,
                 warm: bool = True):
        global _CHECKERS_BUILT
        if threads is not None:
            limit_threads(threads)
        self.policy = gate_policy(policy, fail_on)
        self.digest = policy_digest(self.policy)
        self.images = 0
        if warm:
            from fixloop.agent import service
            from fixloop.agent.example import build_example

            example = build_example()
            service.check(example["candidate"], example["source"], example["mask"], policy=self.policy)
            # the example's face is the source's own, so the check above embedded none: load the embedder
            from fixloop.checks.identity import get_embedder

            try:
                get_embedder(self.policy.params("identity_drift")).load()
            except Exception:  # noqa: BLE001 - a missing pack is reported by the face checks on use, per image
                pass
        _CHECKERS_BUILT += 1

    def stats(self) -> dict[str, Any]:
        """Who this worker is, what it loaded (``model_loads``: each model loader and its loads) and
        its memory now and at its peak."""
        rss, peak = memory_mb()
        return {"pid": os.getpid(), "images": self.images, "checkers": _CHECKERS_BUILT, "model_loads": model_loads(),
                "rss_mb": rss, "peak_rss_mb": peak}

    def check(self, item: GateItem) -> dict[str, Any]:
        """The result row of one item; never raises for a bad image."""
        from fixloop.agent import service

        started, cpu_started = time.perf_counter(), time.process_time()
        row: dict[str, Any] = {"id": item.id, "candidate": item.candidate, "source": item.source, "mask": item.mask,
                               "references": list(item.references), "verdict": "error", "findings": [],
                               "candidate_size": None, "seconds": 0.0, "cpu_seconds": 0.0, "error": None,
                               "key": input_key(item, self.digest)}
        self.images += 1
        try:
            if item.problem:
                raise InputError(item.problem)
            report = service.check(item.candidate, item.source, item.mask, item.references, policy=self.policy)
            row["verdict"] = report.verdict
            row["findings"] = [f.model_dump(mode="json") for f in report.findings]
            row["candidate_size"] = list(report.inputs.candidate_size)
            crashed = [f"{run.name} crashed: {run.error}" for run in report.checks if run.status.value == "error"]
            row["error"] = _one_line("; ".join(crashed)) if crashed else None
        except InputError as exc:
            row["error"] = _one_line(str(exc))
        except Exception as exc:  # noqa: BLE001 - one image must never end the run; the row says what broke
            row["error"] = _one_line(f"could not check this image ({type(exc).__name__}: {exc})")
        row["seconds"] = round(time.perf_counter() - started, 4)
        row["cpu_seconds"] = round(time.process_time() - cpu_started, 4)  # every thread of the worker
        return row


def error_row(item: GateItem, message: str, key: str | None = None) -> dict[str, Any]:
    """The row of an item whose worker died (the driver writes it; no check ran)."""
    return {"id": item.id, "candidate": item.candidate, "source": item.source, "mask": item.mask,
            "references": list(item.references), "verdict": "error", "findings": [], "candidate_size": None,
            "seconds": 0.0, "cpu_seconds": 0.0, "error": _one_line(message), "key": key}


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# ---- verdicts: worst first, counts, exit code -------------------------------------------------------

_PRIORITY_RANK = {"P0": 0, "P1": 1, "P2": 2}


def severity(row: Mapping[str, Any]) -> tuple:
    """Sort key, worst first: errors, then the highest priority found, then how many findings of it,
    then how far the worst one is past its limit."""
    findings = row.get("findings") or []
    verdict_rank = {"error": 0, "fail": 1, "pass": 2}.get(row.get("verdict"), 0)
    top = min((_PRIORITY_RANK.get(f.get("priority"), 3) for f in findings), default=3)
    count = sum(1 for f in findings if _PRIORITY_RANK.get(f.get("priority"), 3) == top)
    excess = max((_excess(f) for f in findings), default=0.0)
    return (verdict_rank, top, -count, -excess, str(row.get("id")))


def _excess(finding: Mapping[str, Any]) -> float:
    threshold = abs(float(finding.get("threshold") or 0.0))
    score = abs(float(finding.get("score") or 0.0))
    return score / threshold if threshold > 0 else score


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts per verdict and, per defect kind, findings per priority and images with it (findings the
    source already had, ``inherited``, counted apart: they do not fail an image)."""
    verdicts = {v: 0 for v in VERDICTS}
    kinds: dict[str, dict[str, int]] = {}
    for row in rows:
        verdicts[row.get("verdict", "error") if row.get("verdict") in VERDICTS else "error"] += 1
        seen = set()
        for finding in row.get("findings") or []:
            entry = kinds.setdefault(finding["kind"], {"P0": 0, "P1": 0, "P2": 0, "images": 0, "inherited": 0})
            if finding.get("inherited"):
                entry["inherited"] += 1
                continue
            entry[finding["priority"]] += 1
            if finding["kind"] not in seen:
                entry["images"] += 1
                seen.add(finding["kind"])
    ordered = dict(sorted(kinds.items(), key=lambda kv: (-kv[1]["images"], -kv[1]["inherited"], kv[0])))
    return {"total": len(rows), "verdicts": verdicts, "kinds": ordered, "exit_code": exit_code(verdicts)}


def exit_code(verdicts: Mapping[str, int]) -> int:
    """3 when any image could not be checked (it wins), 1 when any failed, 0 when all passed."""
    if verdicts.get("error"):
        return EXIT_ERROR
    if verdicts.get("fail"):
        return EXIT_FAIL
    return EXIT_PASS
