"""report.html of a gate run: one self-contained page a person opens after the run.

What it shows first is what CleanVision's report shows first (a table of issue counts), then the
worst examples: every failing image, worst first, as a thumbnail with its finding regions drawn,
its messages and links to the full images; then the images that could not be checked, with the
reason. The page needs nothing but itself: CSS inline, thumbnails embedded as JPEG data, regions
drawn as SVG over them (so boxes stay sharp at any zoom). Links to the full images are relative
to the page, so a copied run folder keeps working beside its images.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any, Sequence

from fixloop.agent import batch

THUMB_SIDE = 360  # long side of a thumbnail, px
MAX_CARDS = 200  # failing images drawn; the rest are listed by id (results.jsonl has them all)
PRIORITY_COLOURS = {"P0": "#d7263d", "P1": "#f18f01", "P2": "#c9b800"}

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#e3e6ec; --bg:#f6f7f9; --pass:#2e8540; --fail:#d7263d; --error:#b7791f; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header { background:#fff; border-bottom:1px solid var(--line); padding:18px 28px; }
h1 { font-size:20px; margin:0 0 6px; }
h2 { font-size:16px; margin:28px 0 10px; }
main { padding:0 28px 40px; max-width:1500px; }
.meta { color:var(--muted); }
.pills { display:flex; gap:10px; margin-top:10px; flex-wrap:wrap; }
.pill { border-radius:999px; padding:4px 12px; font-weight:600; background:#eef0f4; }
.pill.pass { background:#e3f3e6; color:var(--pass); } .pill.fail { background:#fbe4e7; color:var(--fail); }
.pill.error { background:#fbf0dc; color:var(--error); }
table { border-collapse:collapse; background:#fff; border:1px solid var(--line); }
th, td { text-align:left; padding:6px 12px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#fafbfc; font-weight:600; } td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
.grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(380px, 1fr)); gap:16px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; overflow:hidden; }
.thumb { display:flex; justify-content:center; background:#20242c; }
.frame { position:relative; line-height:0; }
.frame img { display:block; max-width:100%; max-height:300px; width:auto; height:auto; }
.frame svg { position:absolute; inset:0; width:100%; height:100%; }
.nothumb { padding:40px 12px; color:#ccc; line-height:1.4; text-align:center; }
.body { padding:10px 12px 12px; }
.id { font-weight:700; word-break:break-all; }
.rank { color:var(--muted); font-weight:400; }
ul.findings { list-style:none; padding:0; margin:8px 0; }
ul.findings li { margin:6px 0; }
.badge { display:inline-block; min-width:26px; text-align:center; border-radius:4px; color:#fff; font-size:12px; font-weight:700; padding:1px 5px; margin-right:6px; }
.kind { font-weight:600; } .measure { color:var(--muted); font-size:12px; }
.links a { margin-right:12px; } a { color:#2458c6; }
.files { margin-top:8px; color:var(--muted); } .files a { margin-right:10px; }
.error-reason { color:var(--error); }
details { margin-top:10px; } code { font-size:12px; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _href(path: str | None, page_dir: Path) -> str | None:
    if not path:
        return None
    try:
        relative = os.path.relpath(path, page_dir)
    except ValueError:  # another drive on Windows
        relative = path
    return Path(relative).as_posix()


def thumbnail(path: str, side: int = THUMB_SIDE) -> tuple[str, tuple[int, int]] | None:
    """A JPEG data URI of the image, oriented as the checks saw it, and its full (width, height)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if opened.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF says: turned a quarter
                width, height = height, width
            opened.draft("RGB", (side, side))  # a JPEG decodes at a fraction of its size: fast
            image = ImageOps.exif_transpose(opened).convert("RGB")
        image.thumbnail((side, side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=82)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), (width, height)
    except Exception:  # noqa: BLE001 - a thumbnail that cannot be made is shown as a note, not a crash
        return None


def _regions_svg(row: dict[str, Any], size: tuple[int, int]) -> str:
    """The finding boxes, in the candidate's pixel coordinates, drawn over the thumbnail; labels that
    would land on one another (boxes that share a corner, whole-image findings) are stacked."""
    width, height = size
    stroke = max(2.0, max(width, height) / 240)
    font = max(10.0, max(width, height) / 30)
    placed: list[tuple[float, float]] = []
    parts = []
    for finding in row.get("findings") or []:
        box = (finding.get("region") or {}).get("box")
        if not box:
            continue
        x0, y0, x1, y1 = box
        colour = PRIORITY_COLOURS.get(finding["priority"], "#888")
        label = f"{finding['priority']} {finding['kind']}"
        x, y = x0 + stroke * 2, y0 + font + stroke
        while any(abs(x - px) < font * 8 and abs(y - py) < font * 1.1 for px, py in placed):
            y += font * 1.2
        placed.append((x, y))
        parts.append(
            f'<g class="region" data-kind="{_esc(finding["kind"])}">'
            f'<rect x="{x0}" y="{y0}" width="{max(1, x1 - x0)}" height="{max(1, y1 - y0)}" fill="{colour}" '
            f'fill-opacity="0.10" stroke="{colour}" stroke-width="{stroke:.1f}"/>'
            f'<text x="{x:.0f}" y="{y:.0f}" font-size="{font:.0f}" font-family="sans-serif" font-weight="700" '
            f'fill="#fff" stroke="{colour}" stroke-width="{font / 5:.1f}" paint-order="stroke">{_esc(label)}</text></g>')
    return (f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none" aria-hidden="true">'
            + "".join(parts) + "</svg>")


def _finding_item(finding: dict[str, Any]) -> str:
    colour = PRIORITY_COLOURS.get(finding["priority"], "#888")
    where = ""
    region = finding.get("region") or {}
    if region.get("box"):
        where = f" · at {region['box']}"
    return (f'<li><span class="badge" style="background:{colour}">{_esc(finding["priority"])}</span>'
            f'<span class="kind">{_esc(finding["kind"])}</span> <span class="measure">{_esc(finding["stage"])} · '
            f'measured {finding["score"]:.3g} {_esc(finding["unit"])}, limit {finding["threshold"]:.3g}{_esc(where)}'
            f'</span><br>{"(inherited: the source has it too; not counted) " if finding.get("inherited") else ""}'
            f'{_esc(finding["message"])}</li>')


def _links(row: dict[str, Any], page_dir: Path) -> str:
    links = []
    for label, path in (("candidate", row.get("candidate")), ("source", row.get("source")), ("mask", row.get("mask")),
                        *((f"reference {i + 1}", r) for i, r in enumerate(row.get("references") or []))):
        href = _href(path, page_dir)
        if href:
            links.append(f'<a href="{_esc(href)}" title="{_esc(path)}">{_esc(label)}</a>')
    return '<div class="links">' + "".join(links) + "</div>"


def _card(rank: int, row: dict[str, Any], page_dir: Path) -> str:
    thumb = thumbnail(row["candidate"])
    if thumb is not None:
        uri, size = thumb
        picture = (f'<img src="{uri}" alt="{_esc(row["id"])}" width="{size[0]}" height="{size[1]}" loading="lazy">'
                   + _regions_svg(row, size))
    else:
        picture = '<div class="nothumb">the candidate cannot be shown any more</div>'
    findings = "".join(_finding_item(f) for f in row.get("findings") or [])
    return (f'<article class="card failing" id="{_esc("img-" + row["id"])}" data-id="{_esc(row["id"])}">'
            f'<div class="thumb"><div class="frame">{picture}</div></div><div class="body">'
            f'<div class="id"><span class="rank">#{rank}</span> {_esc(row["id"])}</div>'
            f'<ul class="findings">{findings}</ul>{_links(row, page_dir)}</div></article>')


def render_report(rows: Sequence[dict[str, Any]], summary: dict[str, Any], page_dir: Path,
                  max_cards: int = MAX_CARDS) -> str:
    """The page as text."""
    verdicts = summary["verdicts"]
    failing = sorted((r for r in rows if r.get("verdict") == "fail"), key=batch.severity)
    errors = [r for r in rows if r.get("verdict") not in ("pass", "fail")]
    policy = summary.get("policy") or {}
    rate = summary.get("images_per_second")
    meta = (f"{summary['total']} images · engine {_esc(summary.get('engine'))}, {summary.get('jobs')} job(s) · "
            f"{summary.get('checked', 0)} checked in {summary.get('seconds', 0):.1f} s"
            + (f" ({rate:.2f} images/s)" if rate else "")
            + (f" · {summary['resumed']} kept from an earlier run" if summary.get("resumed") else "")
            + f" · policy {_esc(policy.get('name'))}, fail on {_esc(', '.join(policy.get('fail_on', [])))}")
    out = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
           f"content=\"width=device-width, initial-scale=1\"><title>fixloop gate: {verdicts['fail']} failing, "
           f"{verdicts['error']} errors of {summary['total']}</title><style>{CSS}</style></head><body>",
           f"<header><h1>fixloop gate</h1><div class=\"meta\">{meta}</div><div class=\"pills\">"
           f"<span class=\"pill pass\" id=\"count-pass\">{verdicts['pass']} pass</span>"
           f"<span class=\"pill fail\" id=\"count-fail\">{verdicts['fail']} fail</span>"
           f"<span class=\"pill error\" id=\"count-error\">{verdicts['error']} could not be checked</span>"
           f"</div><div class=\"files\">files: <a href=\"results.jsonl\">results.jsonl</a>"
           f"<a href=\"summary.json\">summary.json</a><a href=\"junit.xml\">junit.xml</a></div></header><main>"]

    out.append("<h2>Defects found</h2>")
    if summary["kinds"]:
        out.append('<table id="kinds"><thead><tr><th>defect</th><th class="num">images</th><th class="num">P0</th>'
                   '<th class="num">P1</th><th class="num">P2</th><th class="num" title="the source has it too: '
                   'not counted">inherited</th></tr></thead><tbody>')
        for kind, counts in summary["kinds"].items():
            out.append(f'<tr data-kind="{_esc(kind)}"><td>{_esc(kind)}</td><td class="num">{counts["images"]}</td>'
                       + "".join(f'<td class="num">{counts.get(p) or ""}</td>' for p in ("P0", "P1", "P2", "inherited"))
                       + "</tr>")
        out.append("</tbody></table>")
    else:
        out.append("<p>No defect was found.</p>")

    out.append(f'<h2>Failing images, worst first ({len(failing)})</h2>')
    if failing:
        out.append('<div class="grid" id="failing">')
        out.extend(_card(rank, row, page_dir) for rank, row in enumerate(failing[:max_cards], start=1))
        out.append("</div>")
        if len(failing) > max_cards:
            rest = ", ".join(_esc(r["id"]) for r in failing[max_cards:])
            out.append(f"<details><summary>{len(failing) - max_cards} more failing images (in results.jsonl)"
                       f"</summary><p>{rest}</p></details>")
    else:
        out.append("<p>None.</p>")

    out.append(f"<h2>Could not be checked ({len(errors)})</h2>")
    if errors:
        out.append('<table id="errors"><thead><tr><th>image</th><th>reason</th><th>files</th></tr></thead><tbody>')
        for row in errors:
            out.append(f'<tr data-id="{_esc(row["id"])}"><td>{_esc(row["id"])}</td>'
                       f'<td class="error-reason">{_esc(row.get("error") or "not checked")}</td>'
                       f'<td>{_links(row, page_dir)}</td></tr>')
        out.append("</tbody></table>")
    else:
        out.append("<p>None.</p>")

    passing = [r for r in rows if r.get("verdict") == "pass"]
    if passing:
        names = ", ".join(f'<a href="{_esc(_href(r["candidate"], page_dir))}">{_esc(r["id"])}</a>' for r in passing)
        out.append(f"<details><summary>{len(passing)} passing images</summary><p>{names}</p></details>")
    out.append("</main></body></html>\n")
    return "".join(out)


def write_report(rows: Sequence[dict[str, Any]], summary: dict[str, Any], target: str | Path,
                 max_cards: int = MAX_CARDS) -> Path:
    """Write report.html atomically."""
    from fixloop.checks.report import atomic_path

    target = Path(target)
    text = render_report(rows, summary, target.resolve().parent, max_cards)
    with atomic_path(target) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return target
