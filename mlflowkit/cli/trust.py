"""The governance commands of the ``mlflowkit`` command line: ``keys``, ``policy``, ``audit``
(``store adopt`` is with the other store commands).

Invariant: like every command, an error prints one clear message and exits with status 1;
the process signs with ``$MLFLOWKIT_KEY`` (else the ``default`` key).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import click

from mlflowkit.cli.common import DEBUG_OPTION, STORE_OPTION, guard, open_store, table

__all__ = ["audit", "keys", "policy"]


@click.group("keys", short_help="Make and list signing keys.")
def keys() -> None:
    """Make and list the Ed25519 keys this user signs with.

    Keys live in $MLFLOWKIT_KEYS_DIR, else $XDG_CONFIG_HOME/mlflowkit/keys, else
    ~/.config/mlflowkit/keys. A process signs with $MLFLOWKIT_KEY (a key name or a .key
    path), else with the key named "default" (made on first use).
    """


@keys.command("new")
@click.argument("name")
@DEBUG_OPTION
def keys_new(name: str, debug: bool) -> None:
    """Make key NAME (readable by its owner only) and print its key id."""

    def go() -> None:
        from mlflowkit.trust.keys import new_key

        info = new_key(name)
        click.echo(info.key_id)

    guard(debug, go)


@keys.command("list")
@DEBUG_OPTION
def keys_list(debug: bool) -> None:
    """List the keys in the keys folder; * marks the one this process signs with."""

    def go() -> None:
        import os

        from mlflowkit.trust.keys import DEFAULT_KEY, keys_dir, list_keys

        current = os.environ.get("MLFLOWKIT_KEY") or DEFAULT_KEY
        found = list_keys()
        if not found:
            click.echo(f"no keys in {keys_dir()} (the default key is made on first use)")
            return
        rows = [[("* " if k.name == current else "  ") + k.name, k.key_id] for k in found]
        table(f"keys in {keys_dir()}", ["name", "key id"], rows)

    guard(debug, go)


@click.group("policy", short_help="Show or change who may do what in a store.")
def policy() -> None:
    """Show or change the store's policy: which keys hold which roles, per namespace.

    Roles: reader, writer (runs, cache), publisher (new versions), promoter (per stage),
    admin (changes the policy). admin holds every role; publisher and promoter hold writer;
    writer holds reader. Only an admin may grant or revoke.
    """


@policy.command("show")
@STORE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@DEBUG_OPTION
def policy_show(store: str | None, as_json: bool, debug: bool) -> None:
    """The policy in force (with no policy written, the store's owner is admin)."""

    def go() -> None:
        s = open_store(store)
        p = s.policy
        if as_json:
            click.echo(json.dumps({"owner": s.owner, **p.to_dict()}, indent=2))
            return
        title = f"policy of {s.url}: " + (
            f"version {p.version}, by {p.by} at {p.at}"
            if p.version
            else f"none written; the owner {s.owner} is admin"
        )
        rows = [[g.role, g.key, g.namespace, g.stage or ""] for g in p.grants]
        table(title, ["role", "key", "namespace", "stage"], rows)

    guard(debug, go)


def _change(
    verb: str,
    role: str,
    key_id: str,
    namespace: str | None,
    stage: str | None,
    store: str | None,
    debug: bool,
) -> None:
    def go() -> None:
        s = open_store(store)
        before = s.policy.version if s.exists() else 0
        fn = s.grant if verb == "grant" else s.revoke
        p = fn(role, key_id, namespace=namespace, stage=stage)
        where = f"namespace {namespace}" if namespace else "every namespace"
        what = f"{role}{f' ({stage})' if stage else ''} for {key_id} in {where}"
        if p.version == before:
            click.echo(f"unchanged: {what} (policy version {p.version})")
        else:
            click.echo(f"{verb}ed {what}: policy version {p.version}")

    guard(debug, go)


def _grant_options(fn: Callable[..., None]) -> Callable[..., None]:
    """ROLE KEY_ID [--namespace NS] [--stage STAGE] [--store URL] [--debug]: what grant and
    revoke take."""
    for option in reversed(
        (
            click.argument("role"),
            click.argument("key_id"),
            click.option(
                "--namespace", default=None, help="Only in this namespace (default: all)."
            ),
            click.option(
                "--stage", default=None, help="For promoter: only this stage (default: all)."
            ),
            STORE_OPTION,
            DEBUG_OPTION,
        )
    ):
        fn = option(fn)
    return fn


@policy.command("grant")
@_grant_options
def policy_grant(
    role: str,
    key_id: str,
    namespace: str | None,
    stage: str | None,
    store: str | None,
    debug: bool,
) -> None:
    """Give KEY_ID the role ROLE (signed by this process's key, which must be admin)."""
    _change("grant", role, key_id, namespace, stage, store, debug)


@policy.command("revoke")
@_grant_options
def policy_revoke(
    role: str,
    key_id: str,
    namespace: str | None,
    stage: str | None,
    store: str | None,
    debug: bool,
) -> None:
    """Take the role ROLE from KEY_ID; what it signed is no longer trusted."""
    _change("revoke", role, key_id, namespace, stage, store, debug)


@click.command("audit", short_help="Who changed what in the store.")
@click.option("--since", default=None, metavar="ISO_TIME", help="Only entries from this time.")
@STORE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@DEBUG_OPTION
def audit(since: str | None, store: str | None, as_json: bool, debug: bool) -> None:
    """The audit trail: policy changes, gc, adoptions, publishes and promotions.

    `mlflowkit store verify` reports an entry that was edited or removed.
    """

    def go() -> None:
        entries = open_store(store).audit(since=since)
        if as_json:
            for e in entries:
                click.echo(
                    json.dumps(
                        {
                            "at": e.at,
                            "by": e.by,
                            "action": e.action,
                            "target": e.target,
                            "detail": e.detail,
                        }
                    )
                )
            return
        rows = [
            [e.at, e.by, e.action, e.target, json.dumps(e.detail, sort_keys=True)] for e in entries
        ]
        table("audit trail", ["at", "by", "action", "target", "detail"], rows)

    guard(debug, go)
