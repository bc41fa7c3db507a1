"""The pipelines of the lifecycle example: ingestion and training, decoupled by name.

``ingest`` prepares the digit images and publishes them as ``digits-features``; ``train``
reads whichever version of ``digits-features`` is the latest when it is planned, fits a model,
evaluates it and publishes ``digits-model`` (the weights with their test accuracy).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

import mlflowkit as mk

Features = dict[str, NDArray[Any]]


@mk.step
def load_digits(n_samples: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """The first ``n_samples`` 8x8 digit images bundled with scikit-learn (up to 1797)."""
    from sklearn.datasets import load_digits as sk_load

    data = sk_load()
    return (
        data.data[:n_samples].astype(np.float64),
        data.target[:n_samples].astype(np.int64),
    )


@mk.step
def prepare(X: NDArray[np.float64], y: NDArray[np.int64], seed: int = 0) -> Features:
    """A stratified train/test split, standardized with the training set's statistics."""
    from sklearn.model_selection import train_test_split

    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=seed, stratify=y
    )
    mean, std = X_train.mean(axis=0), X_train.std(axis=0) + 1e-9
    return {
        "X_train": (X_train - mean) / std,
        "X_test": (X_test - mean) / std,
        "y_train": y_train,
        "y_test": y_test,
    }


@mk.step
def fit(features: Features, C: float = 0.5) -> dict[str, NDArray[np.float64]]:
    """A logistic regression, kept as plain arrays (weights and intercepts)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, max_iter=2000)
    model.fit(features["X_train"], features["y_train"])
    return {"coef": model.coef_, "intercept": model.intercept_}


@mk.step
def evaluate(weights: dict[str, NDArray[np.float64]], features: Features) -> float:
    """Accuracy on the held-out test images."""
    scores = features["X_test"] @ weights["coef"].T + weights["intercept"]
    accuracy = float(np.mean(scores.argmax(axis=1) == features["y_test"]))
    mk.log_metric("accuracy", accuracy)  # kept with the run, and with every version it publishes
    return accuracy


@mk.step
def package(weights: dict[str, NDArray[np.float64]], accuracy: float) -> dict[str, Any]:
    """The model as published: its weights and its test accuracy."""
    return {"weights": weights, "accuracy": accuracy}


@mk.pipeline
def ingest(n_samples: int = 1000) -> Features:
    """Load and prepare the images; publish them as ``digits-features``."""
    X, y = load_digits(n_samples)
    features = prepare(X, y)
    return mk.publish("digits-features", features, metadata={"n_samples": n_samples})


@mk.pipeline
def train(C: float = 0.5) -> float:
    """Fit and evaluate a model on the latest ``digits-features``; publish ``digits-model``."""
    features = mk.artifact("digits-features")
    weights = fit(features, C=C)
    accuracy = evaluate(weights, features)
    mk.publish("digits-model", package(weights, accuracy), metadata={"C": C})
    return accuracy
