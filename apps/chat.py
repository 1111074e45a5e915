"""`fixloop chat`: the conversation in a terminal, with Rich.

Each line typed is one message; images attach by path in the message ("check ~/edit.png") or with
``/attach PATH`` (``/source PATH``, ``/reference PATH``, ``/mask PATH`` give the role at once).
``/undo``, ``/status``, ``/help`` and ``/quit`` are shortcuts. While a repair runs its progress
prints on stderr; replies name the files they made. When stdin is not a terminal, one line is one
message and the chat ends at the end of the input, with exit status 0, so a session can be scripted.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import IO, Sequence

from rich.console import Console
from rich.markup import escape

from fixloop.agent.conversation import Attachment, Conversation, Reply, new_conversation_id

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
ROLE_COMMANDS = {"/attach": None, "/image": None, "/source": "source", "/original": "source",
                 "/reference": "reference", "/mask": "mask"}
SHORTCUTS = {"/undo": "undo", "/status": "status", "/help": "help", "/why": "why?"}


class ChatUsageError(Exception):
    """A bad argument of `fixloop chat` (exit 2)."""


def split_message(line: str) -> tuple[str, list[Attachment], list[str]]:
    """The text of a typed line, the images it attaches, and problems to tell (a path that is not there)."""
    line = line.strip()
    attachments: list[Attachment] = []
    problems: list[str] = []
    command = line.split(maxsplit=1)[0].lower() if line else ""
    if command in SHORTCUTS:
        return SHORTCUTS[command], [], []
    if command in ROLE_COMMANDS:
        rest = line[len(command):].strip()
        try:
            words = shlex.split(rest)
        except ValueError:
            words = rest.split()
        if not words:
            return "", [], [f"{command} needs a path: {command} PATH"]
        path = Path(words[0]).expanduser()
        if not path.is_file():
            return "", [], [f"{words[0]}: no such file"]
        attachments.append(Attachment(path=str(path.resolve()), role=ROLE_COMMANDS[command], name=path.name))
        return " ".join(words[1:]), attachments, problems
    kept = []
    for word in line.split():
        bare = word.strip("\"'(),")
        if bare.lower().endswith(IMAGE_SUFFIXES):
            path = Path(bare).expanduser()
            if path.is_file():
                attachments.append(Attachment(path=str(path.resolve()), name=path.name))
                continue
            problems.append(f"{bare}: no such file")
        kept.append(word)
    return " ".join(kept), attachments, problems


def print_reply(console: Console, reply: Reply) -> None:
    for index, line in enumerate(reply.text.splitlines()):
        prefix = "[bold cyan]fixloop>[/bold cyan] " if index == 0 else "         "
        console.print(prefix + escape(line), soft_wrap=True, highlight=False)


def run_chat(image: Path | None = None, source: Path | None = None, references: Sequence[Path] = (),
             backend: str | None = None, budget_usd: float | None = None, out: Path | None = None,
             conversation: str | None = None, model: str | None = None, stdin: IO[str] | None = None,
             console: Console | None = None) -> int:
    """Run the chat until /quit or the end of the input; returns the exit status."""
    from fixloop.agent import service
    from fixloop.agent.intent_llm import choose_parser
    from fixloop.apps.progress import ConsoleProgress
    from fixloop.checks.images import InputError
    from fixloop.checks.policy import load_policy

    stdin = stdin or sys.stdin
    console = console or Console(highlight=False, soft_wrap=True)
    for path, flag in ((image, "IMAGE"), (source, "--source"), *((r, "--reference") for r in references)):
        if path is not None and not Path(path).is_file():
            raise ChatUsageError(f"{flag} {str(path)!r}: no such file")
    if backend is not None:
        service.backend_ready(backend, model, load_policy())
    conversation_id = conversation or new_conversation_id()
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,80}", conversation_id):
        raise ChatUsageError(f"--conversation {conversation_id!r}: use letters, digits, '.', '_' and '-'")
    parser, engine = choose_parser()
    progress = ConsoleProgress(Console(stderr=True, highlight=False, soft_wrap=True))
    with Conversation.open(conversation_id, out_dir=out, backend=backend, model=model, max_usd=budget_usd,
                           parser=parser, progress=progress) as chat:
        resumed = chat.exists
        chosen = chat.backend
        why = ("given" if backend else "kept from the conversation" if resumed
               else "OPENAI_API_KEY is set" if chosen == "openai" else "offline: no OPENAI_API_KEY set")
        console.print(f"[bold]fixloop chat[/bold] {'continuing conversation' if resumed else 'conversation'} "
                      f"[cyan]{conversation_id}[/cyan] · backend {chosen} ({why}) · understanding: {engine}")
        console.print(f"  images go to {escape(chat.out_dir)}; /help for what to say, /quit to end")

        def send(text: str, attachments: list[Attachment]) -> None:
            try:
                reply = chat.send(text, attachments)
            except InputError as exc:
                progress.stop()
                console.print(f"[bold cyan]fixloop>[/bold cyan] {escape(str(exc))}", soft_wrap=True)
                return
            except Exception as exc:  # noqa: BLE001 - one sentence, and the conversation goes on
                progress.stop()
                console.print(f"[bold cyan]fixloop>[/bold cyan] something went wrong: {type(exc).__name__}: "
                              f"{escape(str(exc))}", soft_wrap=True)
                return
            progress.stop()
            print_reply(console, reply)

        first = [Attachment(path=str(Path(p).resolve()), role=role, name=Path(p).name)
                 for p, role in ((image, "candidate"), (source, "source"), *((r, "reference") for r in references))
                 if p is not None]
        if first:
            send("", first)
        interactive = stdin.isatty()
        while True:
            try:
                line = console.input("[bold]you>[/bold] ") if interactive else stdin.readline()
            except (EOFError, KeyboardInterrupt):
                break
            if not interactive and line == "":
                break
            line = line.strip()
            if not line:
                continue
            if line.lower() in ("/quit", "/exit", "/q"):
                break
            if not interactive:
                console.print(f"[bold]you>[/bold] {escape(line)}", soft_wrap=True)
            text, attachments, problems = split_message(line)
            for problem in problems:
                console.print(f"[bold cyan]fixloop>[/bold cyan] {escape(problem)}", soft_wrap=True)
            if text or attachments:
                send(text, attachments)
    console.print(f"conversation {conversation_id} saved; continue it with fixloop chat --conversation {conversation_id}")
    return 0

