"""Hand-written digit recognition as an mlflowkit pipeline.

load -> split -> scale -> fit several models (fan-out with ``map``) -> evaluate each
(fan-out at run time over the fitted models) -> pick the best.

Each evaluation logs its model's accuracy (``mk.log_metric``); the script ends with the
comparison of every run of the pipeline in the store (``mlflowkit runs compare``).

Run it twice: the second run executes nothing, every step call is cached, and it reports the
same accuracies (those logged by the executions it reuses).

    python examples/digits.py
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

import mlflowkit as mk

#: the candidate models: (kind, hyper-parameters)
CANDIDATES: list[dict[str, Any]] = [
    {"kind": "logistic_regression", "C": 0.05},
    {"kind": "logistic_regression", "C": 1.0},
    {"kind": "svm", "C": 5.0, "gamma": 0.001},
    {"kind": "random_forest", "n_estimators": 100},
    {"kind": "k_nearest_neighbors", "n_neighbors": 3},
]


@mk.step
def load_digits() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """The 8x8 digit images bundled with scikit-learn (1797 samples, 64 features)."""
    from sklearn.datasets import load_digits as sk_load

    data = sk_load()
    return data.data.astype(np.float64), data.target.astype(np.int64)


@mk.step
def split(
    X: NDArray[np.float64], y: NDArray[np.int64], test_size: float = 0.25, seed: int = 0
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
    """A stratified train/test split."""
    from sklearn.model_selection import train_test_split

    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=y
    )
    return X_train, X_test, y_train, y_test


@mk.step
def scale(
    X_train: NDArray[np.float64], X_test: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Standardize features with statistics of the training set only."""
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    return (X_train - mean) / std, (X_test - mean) / std


def make_model(kind: str, seed: int, **params: Any) -> Any:
    """Build an unfitted scikit-learn estimator of the given kind."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    if kind == "logistic_regression":
        return LogisticRegression(max_iter=2000, **params)
    if kind == "svm":
        return SVC(**params)
    if kind == "random_forest":
        return RandomForestClassifier(random_state=seed, **params)
    if kind == "k_nearest_neighbors":
        return KNeighborsClassifier(**params)
    raise ValueError(f"unknown model kind {kind!r}")


@mk.step
def fit(X: NDArray[np.float64], y: NDArray[np.int64], config: dict[str, Any], seed: int = 0) -> Any:
    """Fit one candidate model."""
    params = {k: v for k, v in config.items() if k != "kind"}
    return make_model(config["kind"], seed, **params).fit(X, y)


@mk.step
def evaluate(model: Any, X: NDArray[np.float64], y: NDArray[np.int64]) -> float:
    """Accuracy on the held-out set (also logged as the metric ``accuracy``)."""
    accuracy = float((model.predict(X) == y).mean())
    mk.log_metric("accuracy", accuracy)
    return accuracy


@mk.step
def pick_best(configs: list[dict[str, Any]], scores: list[float]) -> dict[str, Any]:
    """The best candidate and the whole leaderboard."""
    board = sorted(
        ({"model": describe(c), "accuracy": s} for c, s in zip(configs, scores, strict=True)),
        key=lambda row: -row["accuracy"],
    )
    mk.log_metric("best_accuracy", board[0]["accuracy"])
    return {"best": board[0]["model"], "accuracy": board[0]["accuracy"], "leaderboard": board}


def describe(config: dict[str, Any]) -> str:
    """A short label of a model configuration."""
    params = ", ".join(f"{k}={v}" for k, v in config.items() if k != "kind")
    return f"{config['kind']}({params})"


@mk.pipeline
def digits(test_size: float = 0.25, seed: int = 0) -> Any:
    """Train and compare several classifiers on the digits data set."""
    X, y = load_digits()
    X_train, X_test, y_train, y_test = split(X, y, test_size=test_size, seed=seed)
    X_train_s, X_test_s = scale(X_train, X_test)
    models = fit.map(config=CANDIDATES, X=X_train_s, y=y_train, seed=seed)
    scores = evaluate.map(model=models, X=X_test_s, y=y_test)
    return pick_best(CANDIDATES, scores)


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline on the local executor and default store, and print a summary."""
    argv = sys.argv[1:] if argv is None else argv
    executor = argv[0] if argv else "local"
    plan = digits.plan()
    started = time.perf_counter()
    run = plan.run(executor=executor)
    elapsed = time.perf_counter() - started
    result = run.output
    # the step calls, as every count of them: not internal nodes such as the item split.0
    steps = [s for s in run.steps if not s.internal]
    executed = sum(s.status == "executed" for s in steps)
    cached = sum(s.status == "cached" for s in steps)
    print(f"mlflowkit digits example — run {run.id} ({run.status}) in {elapsed:.2f} s")
    print(f"  {len(steps)} step calls: {executed} executed, {cached} cached")
    print()
    print(f"  {'model':<48} accuracy")
    for row in result["leaderboard"]:
        print(f"  {row['model']:<48} {row['accuracy']:.4f}")
    print()
    print(f"  best: {result['best']} with accuracy {result['accuracy']:.4f}")
    print(f"  store: {run.store.url if run.store else '-'}")
    print("  run it again: every step call is cached.")
    if run.store is not None:
        print_comparison(run.store)
    return 0


def print_comparison(store: Any) -> None:
    """The parameters and metrics of every run of ``digits`` in ``store``, oldest first."""
    from mlflowkit.tracking import print_comparison as show

    print()
    show(store.runs(), "digits", title="runs of digits (mlflowkit runs compare --pipeline digits)")


if __name__ == "__main__":
    raise SystemExit(main())
