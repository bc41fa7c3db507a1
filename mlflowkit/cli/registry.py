"""The ``mlflowkit artifacts``, ``promote`` and ``reproduce`` commands (named artifacts).

Built on the public API only, like the rest of :mod:`mlflowkit.cli`, whose error handling
and tables they share: an error prints one clear message and exits with status 1.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import click

import mlflowkit as mk
from mlflowkit.cli.common import (
    DEBUG_OPTION,
    STORE_OPTION,
    ListByDefault,
    UserCodeError,
    fail,
    guard,
    open_store,
    table,
)

__all__ = ["artifacts", "promote", "reproduce"]


def _when(iso: str) -> str:
    """``2026-12-04 15:20:01`` from an ISO-8601 UTC text (UTC, as stored)."""
    return iso.replace("T", " ")[:19]


def _stages_of(store: Any, name: str) -> dict[str, int]:
    held = {}
    for stage in mk.STAGES:
        v = store.stage(name, stage)
        if v is not None:
            held[stage] = v.version
    return held


@click.group(cls=ListByDefault, short_help="List named artifacts, their versions and stages.")
def artifacts() -> None:
    """Named artifacts: versions published by pipelines (mk.publish) or store.publish, and
    the stages they hold. `mlflowkit artifacts` alone is `artifacts list`."""


@artifacts.command("list")
@STORE_OPTION
@DEBUG_OPTION
def artifacts_list(store: str | None, debug: bool) -> None:
    """Every artifact name: its latest version and which version holds each stage."""

    def go() -> None:
        s = open_store(store)
        rows = []
        for name in s.artifacts():
            versions = s.versions(name)
            latest = versions[-1]
            held = _stages_of(s, name)
            rows.append(
                [
                    name,
                    str(len(versions)),
                    f"v{latest.version}",
                    *(f"v{held[st]}" if st in held else "-" for st in mk.STAGES),
                    _when(latest.created_at),
                ]
            )
        if not rows:
            click.echo(f"no named artifacts in store {s.url}")
            return
        table(
            f"artifacts in {s.url}",
            ["name", "versions", "latest", *mk.STAGES, "latest published (UTC)"],
            rows,
        )

    guard(debug, go)


@artifacts.command("show")
@click.argument("spec", metavar="NAME[@VERSION|@STAGE]")
@STORE_OPTION
@DEBUG_OPTION
def artifacts_show(spec: str, store: str | None, debug: bool) -> None:
    """One version (the latest unless @VERSION or @STAGE says which), then every version."""

    def go() -> None:
        s = open_store(store)
        v = s.artifact(spec)
        held = [st for st, n in _stages_of(s, v.name).items() if n == v.version]
        click.echo(f"{v.spec}  digest {v.digest}")
        click.echo(
            f"run {v.run_id or '- (published outside a run)'}  created {_when(v.created_at)} UTC"
            f"  by {v.created_by or '-'}  stages {', '.join(held) or '-'}"
        )
        if v.metadata:
            click.echo(f"metadata {v.metadata}")
        if v.metrics:
            click.echo(f"metrics {v.metrics}")
        rows = [
            [
                ("* " if x.version == v.version else "  ") + f"v{x.version}",
                x.digest[:16],
                x.run_id or "-",
                x.stage or "-",
                _when(x.created_at),
            ]
            for x in s.versions(v.name)
        ]
        table(
            f"versions of {v.name}",
            ["version", "digest", "run", "stage", "created (UTC)"],
            rows,
        )

    guard(debug, go)


@artifacts.command("history")
@click.argument("name")
@STORE_OPTION
@DEBUG_OPTION
def artifacts_history(name: str, store: str | None, debug: bool) -> None:
    """Every promotion of an artifact, oldest first: who moved which version where, and why."""

    def go() -> None:
        s = open_store(store)
        if name not in s.artifacts():
            s.artifact(name)  # raises, listing what exists
        rows = [
            [
                _when(p.at),
                f"v{p.version}",
                f"{p.from_stage or '-'} -> {p.to_stage}",
                p.by or "-",
                p.reason or "",
                ", ".join(f"{g.name} {'ok' if g.passed else 'FAILED'}" for g in p.gates) or "-",
            ]
            for p in s.history(name)
        ]
        if not rows:
            click.echo(f"{name}: no promotions yet")
            return
        table(
            f"promotions of {name}",
            ["at (UTC)", "version", "stage", "by", "reason", "gates"],
            rows,
        )

    guard(debug, go)


def _load_gates(source: str) -> None:
    """Import a file or module so that its ``@mk.gate`` declarations register."""
    path = Path(source)
    if source.endswith(".py") or path.exists():
        if not path.exists():
            fail(f"gates file {source!r} does not exist; check the path")
        resolved = path.resolve()
        sys.path.insert(0, str(resolved.parent))
        spec = importlib.util.spec_from_file_location(resolved.stem, resolved)
        if spec is None or spec.loader is None:
            fail(f"cannot load {source!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[resolved.stem] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise UserCodeError(f"importing gates from {source!r} failed", exc) from exc
        return
    sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(source)
    except Exception as exc:
        raise UserCodeError(f"importing gates from {source!r} failed", exc) from exc


def _gate_rows(results: list[Any]) -> list[list[str]]:
    return [[r.name, "passed" if r.passed else "FAILED", r.message] for r in results]


@click.command(short_help="Promote a version of an artifact to a stage, through its gates.")
@click.argument("spec", metavar="NAME@VERSION")
@click.option("--to", "to", required=True, type=click.Choice(list(mk.STAGES)), help="The stage.")
@click.option("--reason", default="", help="Why; recorded with the promotion.")
@click.option(
    "--gates",
    "gates",
    default=None,
    metavar="FILE_OR_MODULE",
    help="A file or module whose @mk.gate declarations apply to this promotion.",
)
@STORE_OPTION
@DEBUG_OPTION
def promote(
    spec: str, to: str, reason: str, gates: str | None, store: str | None, debug: bool
) -> None:
    """Move stage --to of an artifact to the version NAME@VERSION, if every gate passes.

    One rung at a time: poc, then prototype, then mvp (mvp always checks the built-in
    `reproducible` gate). A failed gate changes nothing and exits with status 1.
    """

    def go() -> None:
        if gates:
            _load_gates(gates)
        s = open_store(store)
        try:
            p = s.promote(spec, to=to, reason=reason)
        except mk.GateFailed as exc:
            table(
                f"gates for {spec} -> {to}", ["gate", "result", "message"], _gate_rows(exc.results)
            )
            fail(f"promotion of {spec} to {to} refused: a gate failed; nothing changed")
        click.echo(
            f"{p.name}@{p.version}: {p.from_stage or '-'} -> {p.to_stage}"
            + (f"  ({p.reason})" if p.reason else "")
        )
        if p.gates:
            table(
                f"gates for {spec} -> {to}",
                ["gate", "result", "message"],
                _gate_rows(list(p.gates)),
            )

    guard(debug, go)


@click.command(short_help="Re-execute a past run from scratch and compare every digest.")
@click.argument("run_id")
@click.option("--executor", default="local", show_default=True, help="Where to execute.")
@STORE_OPTION
@DEBUG_OPTION
def reproduce(run_id: str, executor: str, store: str | None, debug: bool) -> None:
    """Re-execute RUN_ID's step calls in a scratch store (nothing from the cache) and compare
    each output digest with the record. Exits with status 1 when a step gives another output."""

    def go() -> None:
        sys.path.insert(0, os.getcwd())  # the pipeline's module, as when it ran from here
        s = open_store(store)
        result = mk.reproduce(run_id, s, executor=executor)
        record = s.run(run_id)
        different = {step: new for step, _, new in result.differences}
        rows = []
        for step in result.compared:
            recorded = next(x.output_digest for x in record.steps if x.name == step) or ""
            now = different.get(step, recorded)
            rows.append(
                [
                    step,
                    recorded[:16],
                    (now or "none")[:16],
                    "DIFFERS" if step in different else "same",
                ]
            )
        table(f"reproducing {result.run_id}", ["step", "recorded", "now", "result"], rows)
        if not result.matches:
            names = ", ".join(different)
            fail(f"run {result.run_id} does not reproduce: {names} gave another output")
        click.echo(f"run {result.run_id} reproduces: every output digest is equal")

    guard(debug, go)
