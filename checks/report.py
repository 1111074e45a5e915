"""The report of one run of the checks: the public JSON contract that pipelines parse.

``Report.model_json_schema()`` is published as ``checks/report.schema.json``; a test keeps the two
identical, so a change to the contract is always a visible diff. Bump ``SCHEMA_VERSION`` on any
change that is not a pure addition.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from enum import Enum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fixloop.checks.base import Finding

SCHEMA_VERSION = "1"
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")


class CheckStatus(str, Enum):
    ok = "ok"  # the check ran; its findings (possibly none) are in the report
    skipped = "skipped"  # the check could not measure this input; `reason` says why
    error = "error"  # the check crashed; `error` holds the message; the verdict is 'error'


class CheckRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="registry name of the check (= the defect kind it reports)")
    status: CheckStatus
    seconds: float
    findings: int = 0
    reason: str | None = Field(default=None, description="why the check was skipped")
    error: str | None = Field(default=None, description="what went wrong, when status is 'error'")


class InputSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidate: str | None
    candidate_size: list[int]
    source: str | None = None
    source_size: list[int] | None = None
    mask: str | None = None
    references: list[str] = Field(default_factory=list)
    history: list[str] = Field(default_factory=list)
    analysis_size: list[int]
    notes: list[str] = Field(default_factory=list)


class Report(BaseModel):
    """The verdict, the findings in repair order, and what every check did."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["1"] = SCHEMA_VERSION
    verdict: Literal["pass", "fail", "error"]
    findings: list[Finding]
    checks: list[CheckRun]
    inputs: InputSummary
    policy: str = Field(description="'default' or the path of the policy file laid over the defaults")
    seconds: float = Field(description="wall time of the whole run, decoding included")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=False)

    def write(self, out_dir: str | Path, protected: list[str | Path] = ()) -> Path:
        """Write ``report.json`` and one PNG per finding mask into ``out_dir``, atomically.

        Refuses to write over any path in ``protected`` (the inputs).
        """
        from PIL import Image

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        guarded = {Path(p).resolve() for p in protected if p}
        for index, finding in enumerate(self.findings):
            if finding.mask is None:
                continue
            name = f"finding-{index:02d}-{finding.kind}.png"
            target = out / name
            _refuse_input(target, guarded)
            with atomic_path(target) as tmp:
                Image.fromarray((finding.mask.astype("uint8") * 255)).save(tmp, format="PNG")
            if finding.region is not None:
                finding.region.mask_file = name
        target = out / "report.json"
        _refuse_input(target, guarded)
        with atomic_path(target) as tmp:
            Path(tmp).write_text(self.to_json() + "\n", encoding="utf-8")
        return target


def _refuse_input(target: Path, guarded: set[Path]) -> None:
    from fixloop.checks.images import InputError

    if target.resolve() in guarded:
        raise InputError(f"output {str(target)!r} is one of the inputs: choose another --out folder")


class atomic_path:
    """Context manager giving a temporary path beside ``target``; renamed over it on success.
    The file gets the usual mode for new files, as ``open(path, "w")`` would give it (0o666 less the
    umask; :func:`tempfile.mkstemp` alone would leave it owner-only). The umask is applied by the
    system when the file is created, never read by changing it (that would race other threads)."""

    def __init__(self, target: Path):
        self.target = Path(target)

    def __enter__(self) -> str:
        for _ in range(100):
            tmp = self.target.parent / f".{self.target.name}.{secrets.token_hex(6)}.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            self.mode = stat.S_IMODE(os.fstat(fd).st_mode)
            os.close(fd)
            self.tmp = str(tmp)
            return self.tmp
        raise FileExistsError(f"no free temporary name beside {str(self.target)!r}")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.chmod(self.tmp, self.mode)  # kept even when the writer replaced the file
            os.replace(self.tmp, self.target)
        elif os.path.exists(self.tmp):
            os.unlink(self.tmp)


def report_schema() -> dict:
    return Report.model_json_schema()


def schema_text() -> str:
    return json.dumps(report_schema(), indent=2, sort_keys=True) + "\n"
