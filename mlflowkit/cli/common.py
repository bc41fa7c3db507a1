"""What every command of the ``mlflowkit`` command line shares: errors, options, tables.

Invariant: an error prints one clear message (what, where, how to fix) and exits with status
1 (2 for a malformed command line); ``--debug`` shows the full traceback instead. Only the
public API (``import mlflowkit as mk``) is used here.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Callable
from typing import Any

import click

import mlflowkit as mk

__all__ = [
    "DEBUG_OPTION",
    "OUTPUT_LIMIT",
    "STORE_OPTION",
    "ListByDefault",
    "UserCodeError",
    "fail",
    "guard",
    "open_store",
    "ranges",
    "short_repr",
    "table",
]


def fail(message: str) -> typing.NoReturn:
    raise click.ClickException(message)


class UserCodeError(Exception):
    """The user's module raised while it was imported."""

    def __init__(self, what: str, cause: BaseException) -> None:
        super().__init__(what)
        self.what = what
        self.cause = cause


_DEBUG_HINT = "(run again with --debug for the full traceback)"
_STEP_TRACEBACK = "\n\nTraceback of the step (where it ran):\n"


def _where(exc: BaseException) -> str:
    """`` (at file:line)`` of the innermost frame of ``exc``'s traceback outside mlflowkit."""
    import traceback

    package = os.path.dirname(os.path.abspath(mk.__file__))
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not os.path.abspath(f.filename).startswith(package + os.sep)
        and "importlib" not in f.filename
    ]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _step_line(traceback_text: str) -> str:
    """The last ``File "...", line N, in f`` of a step's traceback text, as ``file:N in f``."""
    found = ""
    for line in traceback_text.splitlines():
        stripped = line.strip()
        if stripped.startswith('File "'):
            path, _, rest = stripped[len('File "') :].partition('", line ')
            number, _, func = rest.partition(", in ")
            found = f"{path}:{number} in {func}"
    return found


def _message(exc: mk.MlflowkitError) -> str:
    text = f"{type(exc).__name__}: {exc}"
    head, sep, tb = text.partition(_STEP_TRACEBACK)
    if sep:  # a failed step: its own error, and the line of the step that raised it
        line = _step_line(tb)
        text = head + (f"\n  raised at {line}" if line else "")
    return f"{text}\n{_DEBUG_HINT}"


def guard(debug: bool, fn: Callable[[], None]) -> None:
    """Run a command body; turn errors into one clear message, or re-raise with --debug."""
    try:
        fn()
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except mk.MlflowkitError as exc:
        if debug:
            raise
        raise click.ClickException(_message(exc)) from None
    except UserCodeError as exc:
        if debug:
            raise exc.cause from None
        cause = exc.cause
        raise click.ClickException(
            f"{exc.what}: {type(cause).__name__}: {cause}{_where(cause)}\n{_DEBUG_HINT}"
        ) from None
    except Exception as exc:  # user code raised while planning (the pipeline body)
        if debug:
            raise
        raise click.ClickException(
            f"{type(exc).__name__}: {exc}{_where(exc)}\n{_DEBUG_HINT}"
        ) from None


def open_store(store: str | None) -> Any:
    return mk.Store(store) if store else mk.Store()


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console(width=max(100, len(" ".join(columns)) + 20)).print(table)


STORE_OPTION = click.option(
    "--store",
    default=None,
    metavar="URL",
    help="Store folder or fsspec URL (default $MLFLOWKIT_STORE or ./.mlflowkit).",
)
DEBUG_OPTION = click.option("--debug", is_flag=True, help="Show full tracebacks.")


class ListByDefault(click.Group):
    """A group whose bare invocation (or one starting with an option) runs ``list``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


#: characters of a run's output that ``mlflowkit run`` prints unless given ``--full``
OUTPUT_LIMIT = 400


def short_repr(value: Any, limit: int = OUTPUT_LIMIT) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def ranges(names: tuple[str, ...]) -> str:
    """``fit[0..4], scale`` from ``fit[0], fit[1], fit[2], fit[3], fit[4], scale``."""
    parts: list[list[Any]] = []  # [base, first, last] of a run of elements, or [name]
    for name in names:
        m = re.fullmatch(r"(.+)\[(\d+)\]", name)
        last = parts[-1] if parts else None
        if m and last and len(last) == 3 and last[0] == m[1] and int(m[2]) == last[2] + 1:
            last[2] += 1
            continue
        parts.append([m[1], int(m[2]), int(m[2])] if m else [name])
    return ", ".join(
        p[0] if len(p) == 1 else f"{p[0]}[{p[1]}]" if p[1] == p[2] else f"{p[0]}[{p[1]}..{p[2]}]"
        for p in parts
    )
