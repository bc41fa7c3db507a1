"""``Plan.explain`` is a dry run of the scheduler's walk: run-time fan-outs, items and
upstream causes are decided as a run decides them, and nothing executes."""

from __future__ import annotations

from typing import Any

import mlflowkit as mk
from mlflowkit.keys import KeyMaker
from mlflowkit.outcomes import Rehearsal
from mlflowkit.scheduler import rehearse


@mk.step
def split(n: int) -> list[int]:
    return list(range(n))


@mk.step
def square(x: int, k: int = 1) -> int:
    return x * x * k


@mk.step
def total(xs: list[int]) -> int:
    return sum(xs)


@mk.pipeline
def fan(n: int = 4, k: int = 1) -> Any:
    parts = split(n)
    squares = square.map(x=parts, k=k)
    return total(squares), square(parts[1], k=3)


def why(plan: mk.Plan, store: mk.Store) -> dict[str, tuple[str, str]]:
    return {e["step"]: (e["action"], e["why"]) for e in plan.explain(store)}


def test_explaining_executes_nothing(store: mk.Store) -> None:
    assert why(fan.plan(), store)["split"] == (
        "execute",
        "no earlier run of this step call in the store",
    )
    assert why(fan.plan(), store)["square"] == (
        "execute",
        "fan-out over a list not in the store yet",
    )
    run = fan.plan().run(store=store, progress=False)  # explaining cached nothing
    assert {s.status for s in run.steps} == {"executed"}


def test_a_stored_fan_out_and_its_items_are_hits(store: mk.Store) -> None:
    fan.plan().run(store=store, progress=False)
    plan = fan.plan()
    explained = why(plan, store)
    assert explained["square"] == ("hit", "all 4 fan-out elements are stored")
    assert explained["total"][0] == "hit"
    (item,) = [name for name, node in plan.nodes.items() if node.kind == "derived"]
    assert explained[item] == ("hit", "an item of a stored result (no work of its own)")


def test_elements_that_would_execute_are_counted(store: mk.Store) -> None:
    run = fan.plan().run(store=store, progress=False)
    store.drop_cache(run.step("square[3]").key)  # type: ignore[arg-type]
    explained = why(fan.plan(), store)
    assert explained["square"] == ("execute", "1 of 4 fan-out elements will execute")
    assert explained["total"] == (
        "execute",
        "upstream step 'square' will execute; this one executes unless that gives the same "
        "output again (early cutoff)",
    )


def test_stored_elements_whose_gather_is_gone_are_collected_again(store: mk.Store) -> None:
    run = fan.plan().run(store=store, progress=False)
    store.drop_cache(run.step("square").key)  # type: ignore[arg-type]
    explained = why(fan.plan(), store)
    assert explained["square"] == (
        "execute",
        "all 4 fan-out elements are stored; collecting them again",
    )
    assert explained["split"][0] == "hit"


def test_the_dry_run_gives_a_verdict_for_every_node(store: mk.Store) -> None:
    plan = fan.plan(k=2)
    fan.plan().run(store=store, progress=False)
    walked = rehearse(plan.nodes, mk_cache(store), KeyMaker(), Rehearsal())
    assert set(plan.nodes) <= set(walked.verdicts)
    verdicts = {name: (v.action, v.reason) for name, v in walked.verdicts.items()}
    assert verdicts["split"] == ("hit", "stored")
    # k changed: every element misses, and the fan-out counts them
    assert verdicts["square[0]"] == ("execute", "miss")
    assert verdicts["square"] == ("execute", "fan-partial")
    assert walked.verdicts["square"].count == walked.verdicts["square"].total == 4
    assert (verdicts["total"], walked.verdicts["total"].cause) == (
        ("execute", "upstream"),
        "square",
    )
    assert walked.digests.keys().isdisjoint({"square", "total"})  # nothing known of them


def mk_cache(store: mk.Store) -> Any:
    from mlflowkit.cache import Cache

    return Cache(store)
