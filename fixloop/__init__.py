"""fixloop: catch and repair broken image edits.

The public Python API. Images are file paths, the bytes of an image file, or arrays
(H x W x 3 or 4, uint8 or float in [0, 1]); masks are white (or True) where the edit was allowed.

    import fixloop

    report = fixloop.check("edit.png", source="before.png", mask="mask.png")
    report.verdict                      # "pass" | "fail" | "error"
    [f.kind for f in report.findings]   # e.g. ["mask_spill", "exposure_drift"]

    run = fixloop.repair("edit.png", source="before.png", mask="mask.png", backend="local", out="run/")
    run.report.verdict, run.final_image  # report.json as a model, the delivered image's path

Bad input raises :class:`InputError` with a one-line message that says what to do. The layers
(``fixloop.checks``, ``fixloop.tools``, ``fixloop.prompts``, ``fixloop.agent``, ``fixloop.apps``) are
importable too; :mod:`fixloop.agent.service` is what every front end calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # the heavy modules load on first use, so `fixloop --help` stays fast
    from fixloop.agent.service import ImageInput, PolicyInput
    from fixloop.agent.state import RepairReport, RunState
    from fixloop.checks.report import Report

__all__ = ["check", "repair", "RepairRun", "Report", "Finding", "RepairReport", "InputError"]


def check(candidate: "ImageInput", source: "ImageInput | None" = None, mask: "ImageInput | None" = None,
          references: Sequence["ImageInput"] = (), policy: "PolicyInput" = None,
          history: Sequence["ImageInput"] = (), only: Sequence[str] | None = None) -> "Report":
    """Inspect ``candidate`` for defects, against ``source`` (the image before the edit), ``mask``
    (where the edit was allowed), identity ``references`` and earlier passes (``history``).
    ``policy``: a TOML file laid over the defaults, or a loaded policy."""
    from fixloop.agent import service

    return service.check(candidate, source, mask, references, history, policy=policy, only=only)


@dataclass(frozen=True)
class RepairRun:
    """One finished (or paused) repair run: its id, folder, report and final image."""

    run_id: str
    folder: Path
    state: "RunState"
    report: "RepairReport | None"  # None while the run waits for an approval
    final_image: Path | None

    @property
    def verdict(self) -> str | None:
        return self.state.verdict


def repair(image: "ImageInput", source: "ImageInput | None" = None, mask: "ImageInput | None" = None,
           references: Sequence["ImageInput"] = (), backend: str = "local", *, model: str | None = None,
           out: str | Path | None = None, max_passes: int | None = None, max_usd: float | None = None,
           max_seconds: float | None = None, polish: bool | None = None, policy: str | Path | None = None,
           progress: Any = None) -> RepairRun:
    """Repair ``image`` in the checked loop (inspect, repair the worst defect, verify, repeat) and
    return the run. ``backend``: ``local`` (offline, free), ``openai`` (GPT Image; OPENAI_API_KEY) or
    ``diffusers`` (a local inpainting checkpoint). Budget fields left None take the policy's."""
    from fixloop.agent import service

    order = service.RepairOrder(image=image, source=source, mask=mask, references=references, backend=backend,
                                model=model, out=out, max_passes=max_passes, max_usd=max_usd,
                                max_seconds=max_seconds, polish=polish, policy=policy)
    state = service.start_repair(order, progress=progress)
    report = service.run_report(state)
    final = None if report is None or report.final_image is None else Path(state.inputs.out_dir) / report.final_image
    return RepairRun(run_id=state.run_id, folder=Path(state.inputs.out_dir), state=state, report=report,
                     final_image=final)


def __getattr__(name: str) -> Any:
    """The report models and the input error, imported on first use."""
    if name == "Report":
        from fixloop.checks.report import Report

        return Report
    if name == "Finding":
        from fixloop.checks.base import Finding

        return Finding
    if name == "RepairReport":
        from fixloop.agent.state import RepairReport

        return RepairReport
    if name == "InputError":
        from fixloop.checks.images import InputError

        return InputError
    raise AttributeError(f"module 'fixloop' has no attribute {name!r}")
