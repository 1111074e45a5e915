"""The bounded, seeded subset of bench/fuzz.py (issue 14): generated hostile inputs across files,
roles, shapes, pairs, policies, params and commands; none may end in a traceback, a hang, an exit code
outside 0/1/2, a refusal of more than one line, a leftover file or a changed input."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_a_seeded_fuzz_subset_has_no_misbehaviour():
    from bench.fuzz import CATEGORIES, run, table

    outcomes = run(210, seed=1, limit=30.0)
    assert {o.case.category for o in outcomes} == set(CATEGORIES)
    bad = [f"[{o.case.category}] {o.case.name}: {'; '.join(o.problems)}" for o in outcomes if o.problems]
    assert not bad, table(outcomes) + "\n" + "\n".join(bad)
    assert sum(o.code == 2 for o in outcomes) > len(outcomes) // 2  # most generated inputs are refused


def test_the_generator_is_seeded_and_covers_every_category():
    from bench.fuzz import CATEGORIES, generate

    first, again = generate(70, seed=5), generate(70, seed=5)
    assert [(c.category, c.name, c.args) for c in first] == [(c.category, c.name, c.args) for c in again]
    assert {c.category for c in first} == set(CATEGORIES)
    assert {c.args[0] for c in first} >= {"check", "fix", "repair"}
