"""The ``store`` commands: ``verify``, ``gc``, ``du``, ``adopt`` and ``migrate``.

Same invariant as the rest of the command line: an error prints one clear message and exits
with status 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json

import click

import mlflowkit as mk
from mlflowkit.cli.common import DEBUG_OPTION, STORE_OPTION, guard, open_store, table

__all__ = ["store_group"]


@click.group("store", short_help="Check, clean and measure the artifact store.")
def store_group() -> None:
    """Check, clean and measure the artifact store."""


@store_group.command("verify")
@STORE_OPTION
@DEBUG_OPTION
def store_verify(store: str | None, debug: bool) -> None:
    """Re-hash every stored object, set aside and list the corrupt ones; check signatures,
    the policy chain and the audit trail, and list what fails."""

    def go() -> None:
        bad = open_store(store).verify()
        corrupt = [b for b in bad if " " not in b]
        for digest in corrupt:
            click.echo(f"corrupt: {digest}")
        for line in bad:
            if " " in line:
                click.echo(line)
        if bad:
            raise click.ClickException(
                f"{len(corrupt)} corrupt object(s) set aside (the steps that made them "
                f"re-execute on the next run); {len(bad) - len(corrupt)} untrusted or broken "
                "signed record(s), left in place and never used"
            )
        click.echo("all objects verified, and every signature and the audit trail")

    guard(debug, go)


@store_group.command("gc")
@STORE_OPTION
@click.option("--keep-last", default=10, show_default=True, help="Keep what the last N runs use.")
@click.option("--pin", "pins", multiple=True, help="A digest to keep (repeatable).")
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
@DEBUG_OPTION
def store_gc(
    store: str | None, keep_last: int, pins: tuple[str, ...], dry_run: bool, debug: bool
) -> None:
    """Delete objects and cache entries that neither recent runs nor pins use."""

    def go() -> None:
        r = open_store(store).gc(keep_last=keep_last, pins=list(pins), dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        click.echo(
            f"{verb} {r.objects_deleted} object(s) and {r.cache_deleted} cache entries "
            f"({_size(r.bytes_freed)}); kept {r.objects_kept} object(s) and {r.cache_kept} "
            f"cache entries"
        )
        if r.quarantine_deleted or r.tmp_deleted:
            click.echo(
                f"{verb} {r.quarantine_deleted} quarantined object(s) and {r.tmp_deleted} "
                f"stale temporary file(s)"
            )

    guard(debug, go)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


@store_group.command("du")
@STORE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@DEBUG_OPTION
def store_du(store: str | None, as_json: bool, debug: bool) -> None:
    """Disk usage of the store by area: objects, cache entries, runs, packs, quarantine, tmp."""

    def go() -> None:
        the_store = open_store(store)
        usage = the_store.du()
        if as_json:
            click.echo(json.dumps(usage, indent=2, default=str))
            return
        rows = [
            [area, str(v.get("count", "")), _size(int(v.get("bytes", 0)))]
            for area, v in usage.items()
        ]
        table(f"store {the_store.url}", ["area", "count", "size"], rows)

    guard(debug, go)


@store_group.command("adopt")
@STORE_OPTION
@DEBUG_OPTION
def store_adopt(store: str | None, debug: bool) -> None:
    """Take on a store made by an earlier version: record this key as its owner (if none)
    and sign its unsigned pickles. Only for a store whose content you trust."""

    def go() -> None:
        s = open_store(store)
        adopted = s.adopt()
        click.echo(f"store {s.url} is owned by {s.owner}; signed {len(adopted)} object(s)")

    guard(debug, go)


@store_group.command("migrate")
@click.argument("source", metavar="SOURCE")
@click.argument("target", metavar="TARGET")
@click.option(
    "--index",
    default=None,
    metavar="URL",
    help="The target's index: a PostgreSQL URL (password in PGPASSWORD or ~/.pgpass). "
    "Default: the target's own SQLite index.",
)
@click.option(
    "--source-index",
    default=None,
    metavar="URL",
    help="The source's index, if it has a shared one.",
)
@DEBUG_OPTION
def store_migrate(
    source: str, target: str, index: str | None, source_index: str | None, debug: bool
) -> None:
    """Copy the store at SOURCE to TARGET (e.g. a folder to s3://bucket/prefix with
    --index postgresql://...) without re-running anything: objects, cache entries, runs,
    packs, the registry, policy and audit. Run it again to resume an interrupted copy."""
    from mlflowkit.store.migrate import copy_store

    def go() -> None:
        src = mk.Store(source, index=source_index)
        dst = mk.Store(target, index=index)
        shown: dict[str, int] = {}

        def progress(area: str, done: int, total: int) -> None:
            if (done == total or done % 500 == 0) and shown.get(area) != done:
                click.echo(f"  {area}: {done}/{total}")
                shown[area] = done

        click.echo(f"copying {src.url} -> {dst.url}")
        report = copy_store(src, dst, progress=progress)
        found = ", ".join(f"{n} {what}" for what, n in report.index.items())
        click.echo(
            f"copied {report.copied} file(s) ({_size(report.bytes)}), {report.skipped} already "
            f"there; the target's index holds {found}"
        )
        if report.corrupt:
            raise click.ClickException(
                f"{len(report.corrupt)} corrupt object(s) in the source were not copied: "
                f"{', '.join(report.corrupt[:5])}; run `mlflowkit store verify --store {source}`"
            )

    guard(debug, go)
