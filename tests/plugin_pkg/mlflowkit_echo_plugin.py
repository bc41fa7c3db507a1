"""A test-only executor plugin: the in-memory double, registered as ``echo-plugin``.

It also declares a broken entry point, ``not-an-executor``, which names a class that is not
an ``mk.Executor``; mlflowkit must refuse to load it with a clear error.
"""

from __future__ import annotations

from mlflowkit.testing import InMemoryExecutor


class EchoExecutor(InMemoryExecutor):
    """Runs each step inline, like ``local``, and records what it ran."""

    name = "echo-plugin"


class NotAnExecutor:
    """Looks like a plugin, but is not an ``mk.Executor`` subclass."""

    def __init__(self, **options: object) -> None:
        self.options = options
