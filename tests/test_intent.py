"""The offline rule parser against the phrasing tables (tests/phrasings*.jsonl).

The main table was written before the rules and the rules were built on it: every row must pass.
The held-out table was written at the same time and the rules were never tuned on it: its pass rate
is reported (``-s`` prints it) and must stay at or above the floor measured when it was first run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixloop.agent.intent import LightChange, Request, parse_rules

HERE = Path(__file__).parent
HELDOUT_FLOOR = 0.85  # first run, before any look at its misses: 32/32; a floor below that, so it stays held out


def table(name: str) -> list[dict]:
    return [json.loads(line) for line in (HERE / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def expected(row: dict) -> Request:
    return Request.model_validate(row["expect"]).canonical()


MAIN = table("phrasings.jsonl")
HELDOUT = table("phrasings_heldout.jsonl")


def test_the_tables_are_big_enough_and_distinct():
    assert len(MAIN) >= 60 and len(HELDOUT) >= 30
    texts = [row["text"].lower() for row in MAIN + HELDOUT]
    assert len(set(texts)) == len(texts)


@pytest.mark.parametrize("row", MAIN, ids=[row["text"][:40] for row in MAIN])
def test_rules_read_every_phrasing_of_the_main_table(row):
    assert parse_rules(row["text"]) == expected(row)


def test_rules_on_the_held_out_table(capsys):
    passed = [row for row in HELDOUT if parse_rules(row["text"]) == expected(row)]
    rate = len(passed) / len(HELDOUT)
    with capsys.disabled():
        print(f"\nheld-out phrasings, offline rules: {len(passed)}/{len(HELDOUT)} = {rate:.0%}")
        for row in HELDOUT:
            got = parse_rules(row["text"])
            if got != expected(row):
                print(f"  miss: {row['text']!r}: got {got.summary()} / want {expected(row).summary()}")
    assert rate >= HELDOUT_FLOOR


def test_canonical_form_orders_and_deduplicates():
    request = Request(actions=["adjust", "check", "check"], targets=["mirrored", "edge_halo"],
                      regions=["face", "hands"], protect=["face"], light=LightChange())
    canon = request.canonical()
    assert canon.actions == ["check", "adjust"] and canon.targets == ["edge_halo", "mirrored"]
    assert canon.regions == ["hands"] and canon.protect == ["face"] and canon.light is None


def test_wanted_and_protected_kinds():
    request = parse_rules("the left hand looks wrong and it got darker, fix it but keep her face")
    assert request.wanted_kinds() == ["exposure_drift", "hand_malformed"]
    assert "identity_drift" in request.protected_kinds()
    assert parse_rules("fix it").wanted_kinds() is None
