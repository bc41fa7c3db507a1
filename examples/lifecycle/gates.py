"""The gates of the lifecycle example.

Importing this module declares them (``mlflowkit promote ... --gates examples/lifecycle/gates.py``
does the same from the command line).
"""

from __future__ import annotations

import mlflowkit as mk

#: the accuracy a model must reach to become the team's prototype
PROTOTYPE_ACCURACY = 0.9


@mk.gate("digits-model", to="prototype")
def accurate_enough(v: mk.ArtifactVersion) -> bool:
    """The model's test accuracy, logged by the run that made it, reaches ``PROTOTYPE_ACCURACY``."""
    return v.metrics["evaluate.accuracy"] >= PROTOTYPE_ACCURACY
