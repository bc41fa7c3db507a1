"""The ``mlflowkit`` command line, built on the public API only.

The commands live in one module per subject (:mod:`~mlflowkit.cli.pipelines`,
:mod:`~mlflowkit.cli.runs`, :mod:`~mlflowkit.cli.store`, :mod:`~mlflowkit.cli.registry`,
:mod:`~mlflowkit.cli.trust`), which share :mod:`mlflowkit.cli.common` and know nothing of
``main``: this module assembles them, so imports flow one way.

Invariant: an error prints one clear message (what, where, how to fix) and exits with status
1 (2 for a malformed command line); ``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import click

import mlflowkit as mk
from mlflowkit.cli.pipelines import executors, plan, run
from mlflowkit.cli.registry import artifacts, promote, reproduce
from mlflowkit.cli.runs import export, lineage, runs
from mlflowkit.cli.store import store_group
from mlflowkit.cli.trust import audit, keys, policy

__all__ = ["cli_main", "main"]

_EPILOG = """\b
Examples:
  mlflowkit plan examples/digits.py:digits            the DAG, nothing runs
  mlflowkit plan examples/digits.py:digits --explain  what is cached, what would execute, why
  mlflowkit run examples/digits.py:digits -p seed=1   run it (results in ./.mlflowkit)
  mlflowkit runs list                                 recent runs
  mlflowkit runs show RUN_ID                          steps, statuses and digests of a run
  mlflowkit runs compare --pipeline digits            parameters and metrics of its runs
  mlflowkit lineage DIGEST                            what an artifact was made from
  mlflowkit artifacts                                 named artifacts, versions, stages
  mlflowkit promote digits-model@4 --to prototype     move a stage, through its gates

The store is ./.mlflowkit unless --store URL or $MLFLOWKIT_STORE says otherwise.
Errors print one message; add --debug for the full traceback."""


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=_EPILOG,
)
@click.version_option(mk.__version__, prog_name="mlflowkit")
def main() -> None:
    """mlflowkit: typed, cached, reproducible ML pipelines from plain Python functions.

    A pipeline is named as FILE.py:PIPELINE or package.module:PIPELINE.
    """


for _command in (
    run,
    plan,
    executors,
    runs,
    lineage,
    export,
    store_group,
    artifacts,
    promote,
    reproduce,
    keys,
    policy,
    audit,
):
    main.add_command(_command)


def cli_main() -> None:  # pragma: no cover - console entry point alias
    main()
