"""Terminal text that fits: lines never pass the console's width, words and names are never broken.

Long messages go on their own indented lines under the row they belong to, wrapped between words;
a path that cannot fit is shortened from the left (``…/runs/20261203-…``), never cut in the middle.
Front ends print what these return with ``soft_wrap=True``, so Rich does not wrap them again.
"""

from __future__ import annotations

import textwrap

ELLIPSIS = "…"


def shorten_left(text: str, limit: int) -> str:
    """``text`` cut from the left to at most ``limit`` characters, at a path separator if there is one."""
    if len(text) <= limit:
        return text
    if limit <= 1:
        return ELLIPSIS[:limit]
    tail = text[-(limit - 1):]
    cut = tail.find("/")
    if 0 <= cut < len(tail) - 1:
        tail = tail[cut:]
    return ELLIPSIS + tail


def wrap(text: str, width: int, indent: int = 0, hang: int | None = None) -> list[str]:
    """``text`` wrapped between words into lines of at most ``width`` characters: the first indented
    by ``indent``, the others by ``hang`` (default the same). A word longer than the room (a path, a
    URL) is shortened from the left."""
    hang = indent if hang is None else hang
    room = max(8, width - max(indent, hang))
    words = [shorten_left(word, room) for word in text.split()]
    return textwrap.wrap(" ".join(words), width=width, initial_indent=" " * indent, subsequent_indent=" " * hang,
                         break_long_words=False, break_on_hyphens=False)


def columns(cells: list[str], widths: list[int]) -> str:
    """One row of left-aligned cells; a cell wider than its column pushes the next ones right."""
    parts = []
    for cell, size in zip(cells, widths):
        parts.append(cell.ljust(size))
    return "  ".join(parts).rstrip()


def say(console, markup: str, hang: int = 4) -> None:
    """Print one line of Rich markup wrapped between words to ``console``'s width; the lines after the
    first are indented by ``hang`` more than the line's own indent, so each item stays one block."""
    from rich.text import Text

    text = Text.from_markup(markup)
    indent = len(text.plain) - len(text.plain.lstrip(" "))
    width = max(20, console.width)
    for number, line in enumerate(text.wrap(console, width - indent - hang, overflow="fold")):
        line.rstrip()
        console.print(Text(" " * (indent + hang)) + line if number else line, soft_wrap=True)
