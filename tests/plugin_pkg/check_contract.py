"""The executor contract suite, run against the installed plugins (in a subprocess).

Not collected by the main test run (its name does not start with ``test_``): only
``tests/executors/test_plugins.py`` runs it, where the plugin package is installed.
"""

from __future__ import annotations

import mlflowkit as mk
from mlflowkit.executors.base import Executor
from mlflowkit.testing import ExecutorContract


class TestEchoPluginContract(ExecutorContract):
    def make_executor(self) -> Executor:
        return mk.executors.get("echo-plugin")


class TestMinimalPluginContract(ExecutorContract):
    def make_executor(self) -> Executor:
        return mk.executors.get("minimal-plugin")
