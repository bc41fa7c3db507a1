"""How the ``processes`` executor cuts a burst of ready tasks into batches."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mlflowkit.executors._batching import (
    MAX_TASKS,
    TARGET_S,
    UNKNOWN_MAX,
    Durations,
    batch_size,
    cut,
)

# an item is (step name, has a timeout)
items = st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=300)


@given(
    items=items,
    workers=st.integers(1, 8),
    seen=st.dictionaries(st.sampled_from("abc"), st.floats(1e-7, 1.0)),
)
def test_batches_hold_every_item_once_one_step_each_timed_alone(
    items: list[tuple[str, bool]], workers: int, seen: dict[str, float]
) -> None:
    durations = Durations()
    for step, seconds in seen.items():
        durations.add(step, seconds)
    tagged = list(enumerate(items))
    batches = cut(tagged, lambda t: t[1][0], lambda t: t[1][1], durations, workers)
    assert sorted(i for batch in batches for i, _ in batch) == list(range(len(items)))
    for batch in batches:
        assert batch
        assert len({step for _, (step, _) in batch}) == 1
        assert len(batch) <= MAX_TASKS
        if any(timed for _, (_, timed) in batch):
            assert len(batch) == 1
        (step,) = {step for _, (step, _) in batch}
        if durations.get(step) is None:
            assert len(batch) <= UNKNOWN_MAX


def test_batch_size_follows_the_duration_and_spreads_over_the_workers() -> None:
    assert batch_size(1000, None, 2) == UNKNOWN_MAX  # not seen yet: small batches
    assert batch_size(1000, 1e-6, 2) == 250  # trivial calls: two batches per worker
    assert batch_size(100_000, 1e-6, 2) == MAX_TASKS
    assert batch_size(1000, TARGET_S / 10, 2) == 10  # a batch runs about TARGET_S
    assert batch_size(1000, 1.0, 2) == 1  # slow calls: one per message
    assert batch_size(3, 1e-6, 4) == 1  # few calls: one each, every worker gets some


def test_durations_are_a_moving_mean() -> None:
    durations = Durations()
    assert durations.get("a") is None
    durations.add("a", 1.0)
    assert durations.get("a") == 1.0
    for _ in range(50):
        durations.add("a", 0.0)
    assert (durations.get("a") or 0.0) < 1e-3
