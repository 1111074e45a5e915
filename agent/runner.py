"""Starting, resuming and driving repair runs: the entry the CLI (and later HTTP/Slack) calls.

Checkpoints go to one SQLite file, ``$FIXLOOP_HOME/runs.sqlite`` (default ``~/.cache/fixloop``),
keyed by run id, so ``fixloop repair --resume RUN_ID`` needs nothing but the id. The checkpoint
serializer only loads the state's own classes (:data:`agent.state.CHECKPOINT_TYPES`).

    state = start_run(inputs, budget, progress=print_event, approver=ask_user)
    state = resume_run("20261129-101500-3fa2c1", progress=print_event)
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from fixloop.agent.context import Progress, RunContext
from fixloop.agent.graph import build_graph, recursion_limit
from fixloop.agent.state import BUDGET_STOPS, CHECKPOINT_TYPES, MONEY_CAUSES, Budget, RunInputs, RunState, StopReason
from fixloop.checks.images import InputError

HOME_ENV = "FIXLOOP_HOME"
Approver = Callable[[dict[str, Any]], bool]


class RunNotFound(InputError):
    """No checkpoint under this run id."""


def home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "fixloop")


def checkpoint_path() -> Path:
    return home() / "runs.sqlite"


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@contextmanager
def open_checkpointer(db: str | Path | None = None, types: list[tuple[str, str]] = CHECKPOINT_TYPES) -> Iterator[Any]:
    """A LangGraph SQLite checkpointer on the run database (WAL, busy timeout; closed on exit) whose
    serializer loads only ``types``. The repair loop and the conversation graph both use it."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = Path(db) if db is not None else checkpoint_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path, check_same_thread=False)
    try:
        saver = SqliteSaver(conn, serde=JsonPlusSerializer(allowed_msgpack_modules=types))
        try:
            saver.setup()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{path} is not a fixloop checkpoint file ({exc}): move it away, or set "
                             f"{HOME_ENV} to another folder") from None
        yield saver
    finally:
        conn.close()


@contextmanager
def open_graph(db: str | Path | None = None) -> Iterator[Any]:
    """The compiled repair graph with its SQLite checkpointer (closed on exit)."""
    with open_checkpointer(db) as saver:
        yield build_graph().compile(checkpointer=saver)


BUSY_TIMEOUT_S = 60.0  # another process (a second repair, `fixloop runs`) holding the write lock: wait, don't fail


def _connect(path: Path, **kwargs: Any) -> sqlite3.Connection:
    """A connection that waits for other processes' locks (busy timeout) on a file in WAL mode, so
    two runs and a listing at once on one FIXLOOP_HOME all finish (readers never block the writer)."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, **kwargs)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise InputError(f"{path} is not a fixloop checkpoint file ({exc}): move it away, or set "
                         f"{HOME_ENV} to another folder") from None
    return conn


def _config(run_id: str, budget: Budget) -> dict[str, Any]:
    return {"configurable": {"thread_id": run_id}, "recursion_limit": recursion_limit(budget.max_passes)}


def _drive(graph, config: dict, payload: Any, ctx: RunContext, approver: Approver | None) -> RunState:
    """Stream the graph until it ends or waits for an answer nobody can give."""
    from langgraph.errors import GraphRecursionError
    from langgraph.types import Command

    while True:
        question = None
        try:
            for chunk in graph.stream(payload, config, context=ctx, stream_mode="updates", durability="sync"):
                if "__interrupt__" in chunk:
                    question = chunk["__interrupt__"][0].value
        except GraphRecursionError:
            return _finish_after_recursion(graph, config, ctx)
        if question is None or approver is None:
            break
        payload = Command(resume=bool(approver(question)))
    snapshot = graph.get_state(config)
    return RunState.model_validate(snapshot.values)


def _finish_after_recursion(graph, config: dict, ctx: RunContext) -> RunState:
    """The recursion backstop fired: deliver the best image so far, as the finish node would."""
    from fixloop.agent.outputs import write_outputs
    from fixloop.agent.state import AttemptCause, Outcome

    state = RunState.model_validate(graph.get_state(config).values)
    not_verified = []
    if state.pending is not None:  # a tool ran but its output was never judged: report it, deliver none of it
        not_verified = [state.pending.model_copy(update={
            "outcome": Outcome.failed, "cause": AttemptCause.not_verified,
            "reason": "not verified: the run reached its step limit first"})]
    stop = {"stop": StopReason.recursion_limit, "stop_reason": "stopped by the graph's recursion limit (a backstop)",
            "finished": True, "pending": None}
    state = state.model_copy(update={**stop, "attempts": [*state.attempts, *not_verified]})
    write_outputs(state, ctx)
    # ``attempts`` accumulates: hand the checkpoint only the attempt it does not have yet
    graph.update_state(config, {**stop, "attempts": not_verified}, as_node="finish")
    ctx.tell("finish", state=state)
    return state


def start_run(inputs: RunInputs, budget: Budget, progress: Progress | None = None,
              approver: Approver | None = None, run_id: str | None = None,
              db: str | Path | None = None) -> RunState:
    """Run the loop on ``inputs`` from the start; returns the final (or paused) state."""
    run_id = run_id or new_run_id()
    ctx = RunContext.open(inputs, progress)
    state = RunState(run_id=run_id, inputs=inputs, budget=budget)
    ctx.tell("start", state=state)
    with open_graph(db) as graph:
        config = _config(run_id, budget)
        if graph.get_state(config).values:
            raise InputError(f"run id {run_id!r} is taken: choose another, or --resume it")
        return _drive(graph, config, state, ctx, approver)


def load_run(run_id: str, db: str | Path | None = None) -> RunState:
    """The checkpointed state of ``run_id`` (raises RunNotFound)."""
    with open_graph(db) as graph:
        values = graph.get_state({"configurable": {"thread_id": run_id}}).values
    if not values or "run_id" not in values:  # none yet, or only a reducer's default ({"attempts": []})
        raise RunNotFound(f"no run {run_id!r} in {checkpoint_path() if db is None else db}: "
                          "check the id (fixloop runs lists them)")
    return RunState.model_validate(values)


def resume_run(run_id: str, progress: Progress | None = None, approver: Approver | None = None,
               db: str | Path | None = None, budget: Budget | None = None) -> RunState:
    """Continue an interrupted or paused run from its last checkpoint. Finished nodes are not
    repeated: a paid call whose result was checkpointed is never made again.

    ``budget`` replaces the run's limits: a run that is still going gets them from here on, and a run
    that stopped because its budget ran out goes on from triage with the larger one."""
    state = load_run(run_id, db)
    ctx = RunContext.open(state.inputs, progress)
    budget = budget if budget is not None and budget != state.budget else None
    out_of_budget = state.finished and state.stop in BUDGET_STOPS
    if state.finished and not (budget and out_of_budget):
        ctx.tell("resume", state=state)
        return state
    with open_graph(db) as graph:
        config = _config(run_id, budget or state.budget)
        if budget and out_of_budget:
            # back to the edge after verify: triage picks the next target under the new limits, and the
            # defects only the dollar budget left open are tried again
            still_open = {k: d for k, d in state.open_defects.items() if d.cause not in MONEY_CAUSES}
            graph.update_state(config, {"budget": budget, "stop": None, "stop_reason": None, "finished": False,
                                        "open_defects": still_open}, as_node="verify")
        elif budget:
            graph.update_state(config, {"budget": budget})
        snapshot = graph.get_state(config)
        state = RunState.model_validate(snapshot.values)
        ctx.tell("resume", state=state)
        payload = None
        if snapshot.interrupts:  # paused for approval: ask again
            if approver is None:
                return state
            from langgraph.types import Command

            payload = Command(resume=bool(approver(snapshot.interrupts[0].value)))
        return _drive(graph, config, payload, ctx, approver)


def list_runs(db: str | Path | None = None) -> list[RunState]:
    """Every run in the checkpoint file, newest first."""
    path = Path(db) if db is not None else checkpoint_path()
    if not path.exists():
        return []
    conn = _connect(path)
    try:
        # conversations (agent/conversation.py) keep their threads in the same file, under "conversation:"
        ids = [row[0] for row in conn.execute(
            "SELECT DISTINCT thread_id FROM checkpoints WHERE thread_id NOT LIKE 'conversation:%'")]
    except sqlite3.OperationalError:
        ids = []
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path} is not a fixloop checkpoint file ({exc}): move it away, or set "
                         f"{HOME_ENV} to another folder") from None
    finally:
        conn.close()
    return sorted((load_run(i, db) for i in ids), key=lambda s: s.run_id, reverse=True)
