"""The lifecycle of a model, from proof of concept to prototype to MVP.

1. ``ingest`` publishes ``digits-features`` (version 1, from 1000 images).
2. ``train`` reads it by name, and publishes ``digits-model`` (version 1).
3. The model is promoted to ``poc``, then to ``prototype`` through the accuracy gate, then to
   ``mvp`` through the built-in ``reproducible`` gate and ``mk.gates.reproduces``.
4. New data arrives: ``ingest`` publishes version 2 of the features (all 1797 images). The
   train plan explains which steps will run again and why, runs, and publishes model version 2.

    python examples/lifecycle/main.py [STORE]

STORE defaults to a new temporary folder. Run it from a clean git checkout (or outside any git
tree): the ``mvp`` gate refuses code with uncommitted changes, and says so.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import gates as _gates  # noqa: F401  (importing it declares the gates)
from pipelines import ingest, train

import mlflowkit as mk


def promote(
    store: mk.Store, spec: str, to: str, reason: str, gates: Sequence[Callable[..., Any]] = ()
) -> bool:
    """Promote and print the outcome of every gate; False when a gate refused."""
    try:
        p = store.promote(spec, to=to, reason=reason, gates=gates)
    except mk.GateFailed as exc:
        print(f"  {spec} -> {to}: REFUSED")
        for g in exc.results:
            print(f"      {'passed' if g.passed else 'FAILED'}  {g.name}: {g.message}")
        return False
    gates_text = ", ".join(f"{g.name} passed" for g in p.gates) or "no gates"
    print(f"  {spec}: {p.from_stage or '-'} -> {p.to_stage} ({gates_text})")
    return True


def steps_of(run: mk.Run) -> str:
    return ", ".join(f"{s.name} {s.status}" for s in run.steps if not s.internal)


def main(url: str) -> None:
    # mk.artifact looks names up in the default store while planning: make it this one
    os.environ["MLFLOWKIT_STORE"] = url
    store = mk.Store(url)
    print(f"store: {store.url}")

    print("\n1. ingest 1000 images")
    run = ingest.plan(n_samples=1000).run(store=store, progress=False)
    features = run.published["digits-features"]
    print(f"  published {features.spec} ({features.digest[:12]})")

    print("\n2. train on the latest features")
    run = train.plan().run(store=store, progress=False)
    model = run.published["digits-model"]
    print(f"  read {', '.join(v.spec for v in run.consumed)}; published {model.spec}")
    print(f"  accuracy {model.load()['accuracy']:.3f}")

    print("\n3. promote: poc -> prototype -> mvp")
    promote(store, model.spec, "poc", "first model that works end to end")
    promote(store, model.spec, "prototype", "accurate enough for the demo")
    promote(store, model.spec, "mvp", "reproducible", gates=[mk.gates.reproduces])

    print("\n4. new data arrives: ingest all 1797 images")
    run = ingest.plan(n_samples=1797).run(store=store, progress=False)
    print(f"  published {run.published['digits-features'].spec}; {steps_of(run)}")
    plan = train.plan()
    print("  what a train run will do, and why:")
    for line in str(plan.explain(store)).splitlines():
        print(f"    {line}")
    run = plan.run(store=store, progress=False)
    model2 = run.published["digits-model"]
    print(f"  ran: {steps_of(run)}")
    print(f"  published {model2.spec}, accuracy {model2.load()['accuracy']:.3f}")
    promote(store, model2.spec, "poc", "trained on more data")
    promote(store, model2.spec, "prototype", "better accuracy")

    print("\n5. where things stand")
    for stage in mk.STAGES:
        holder = store.stage("digits-model", stage)
        print(f"  digits-model@{stage}: {holder.spec if holder else '-'}")
    print("  history:")
    for p in store.history("digits-model"):
        print(f"    v{p.version}: {p.from_stage or '-'} -> {p.to_stage}  {p.reason}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="mlflowkit-lifecycle-"))
