"""``mk.gates``: the gates a promotion can name, and ``@mk.gate`` to declare one.

Everything here but ``reproduces`` is the gating machinery of
:mod:`mlflowkit.registry.gating`, which promotions run in the store; ``reproduces``
re-executes a run (:mod:`mlflowkit.registry.reproduce`), which needs the run machinery above
the store, so this namespace sits at the top layer and the store never imports it.

Invariants: see :mod:`mlflowkit.registry.gating`.
"""

from __future__ import annotations

from mlflowkit.registry.gating import Gate, gate, gates_for, reproducible, run_gates
from mlflowkit.registry.reproduce import reproduces

__all__ = ["Gate", "gate", "gates_for", "reproduces", "reproducible", "run_gates"]
