"""A pipeline with every kind of internal node: items of an unpacked tuple, an attribute, the
gathering of a fan-out, and a fan-out over another fan-out's results (its items).

Its step calls: ``pair``, ``add[0..2]``, ``add-2[0..2]``, ``total``, ``shape_of``: 9.
"""

from __future__ import annotations

from typing import Any

import mlflowkit as mk

CALLS = 9


@mk.step
def pair(n: int) -> tuple[int, int]:
    return n, n + 1


@mk.step
def add(a: int, b: int) -> int:
    return a + b


@mk.step
def total(xs: list[int]) -> int:
    return sum(xs)


@mk.step
def shape_of(imag: Any) -> int:
    return int(imag) + 1


@mk.step
def numbers(n: int) -> list[int]:
    return list(range(n))


@mk.pipeline
def counted(n: int = 3) -> dict[str, int]:
    a, b = pair(n)
    sums = add.map(a=[1, 2, 3], b=b)  # sized while planning
    again = add.map(a=sums, b=a)  # over a gather: sized while planning too
    grand = total(again)
    return {"total": grand, "imag": shape_of(grand.imag)}


@mk.pipeline
def sized_at_run_time(n: int = 4) -> int:
    return total(add.map(a=numbers(n), b=1))
