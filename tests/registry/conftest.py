"""Fixtures for the registry tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mlflowkit as mk


@pytest.fixture
def store() -> Iterator[mk.Store]:
    """The default store of this test (``$MLFLOWKIT_STORE``, a fresh temporary folder), so that
    ``mk.artifact(spec)`` without ``store=`` looks names up where the test publishes them."""
    with mk.Store() as s:
        yield s
