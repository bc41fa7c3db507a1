"""Content digests of scikit-learn estimators (loaded lazily, when such a value is seen).

Invariant: an estimator hashes by its class and its whole state (hyper-parameters and fitted
attributes, as ``__getstate__`` gives them), so two estimators fitted to the same data with the
same parameters are equal and any change to a fitted attribute changes the digest. The compiled
helper objects some estimators hold (decision trees, KD/Ball trees) hash by the arguments and
state of their ``__reduce__``, which is what they are rebuilt from — never by pickle bytes.
"""

from __future__ import annotations

from typing import Any

from mlflowkit.hashing.values import register_reducer

__all__ = ["register_sklearn"]


def _estimator_state(obj: Any) -> Any:
    state = obj.__getstate__()
    if isinstance(state, dict):
        return dict(state)
    return state


def _reduced(obj: Any) -> Any:
    reduced = obj.__reduce__()
    args = reduced[1] if len(reduced) > 1 else ()
    state = reduced[2] if len(reduced) > 2 else None
    return (args, state)


def register_sklearn() -> None:
    """Register hashers for scikit-learn estimators and their compiled helper objects."""
    from sklearn.base import BaseEstimator

    register_reducer(BaseEstimator, _estimator_state)
    helpers = [
        ("sklearn.tree._tree", "Tree"),
        ("sklearn.neighbors._kd_tree", "KDTree"),
        ("sklearn.neighbors._ball_tree", "BallTree"),
    ]
    import importlib

    for module_name, attr in helpers:
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):  # a scikit-learn version without this helper
            continue
        register_reducer(cls, _reduced)
