"""Code digests over real modules: edits that matter change the digest, cosmetic ones don't."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import linecache
import os
import subprocess
import sys
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from mlflowkit.errors import HashingError
from mlflowkit.hashing import CodeDigester, code_digest, hash_value, package_versions

ROOT = Path(__file__).resolve().parents[2]
RESOURCES = ROOT / "tests" / "resources" / "codedigest"

Edits = dict[str, list[tuple[str, str]]]
Loader = Callable[..., types.ModuleType]


def _purge(name: str) -> None:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


@pytest.fixture
def load(tmp_path: Path) -> Iterator[Loader]:
    """Load the fixture modules as a package, optionally edited; one package name per test.

    Every call writes a fresh copy in its own folder and replaces the previous import, as a
    user editing a file and re-running would.
    """
    name = f"codedigest_{uuid.uuid4().hex[:10]}"
    count = 0

    def load_version(edits: Edits | None = None) -> types.ModuleType:
        nonlocal count
        _purge(name)
        count += 1
        root = tmp_path / f"v{count}" / name
        root.mkdir(parents=True)
        for source in RESOURCES.glob("*.py"):
            text = source.read_text()
            for old, new in (edits or {}).get(source.name, []):
                assert old in text, f"{old!r} not found in {source.name}"
                text = text.replace(old, new)
            (root / source.name).write_text(text)
        spec = importlib.util.spec_from_file_location(
            name, root / "__init__.py", submodule_search_locations=[str(root)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
        for module in ("deep", "helpers", "pipeline", "stepped"):
            setattr(package, module, importlib.import_module(f"{name}.{module}"))
        return package

    yield load_version
    _purge(name)


def entry_digest(package: types.ModuleType, attr: str = "entry") -> str:
    return code_digest(getattr(package.pipeline, attr))


def test_digest_is_64_hex_and_repeatable(load: Loader) -> None:
    pkg = load()
    digest = entry_digest(pkg)
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert entry_digest(pkg) == digest
    assert entry_digest(load()) == digest  # a fresh import of the same files


def test_comments_docstrings_and_formatting_do_not_matter(load: Loader) -> None:
    before = entry_digest(load())
    after = entry_digest(
        load(
            {
                "deep.py": [
                    ('    """Two calls below the entry point."""\n', ""),
                    ('    # the factor below is what the "deep edit" test changes\n', ""),
                    ("return x * 3.0", "return (x *\n            3.0)  # same expression"),
                    ("return x - 1.0", "return x - 2.0"),  # not referred to by entry
                ],
                "helpers.py": [
                    ('"""Shift after the core transform."""', '"""Other words."""'),
                    ("OFFSET = 1.0\n", "# every line below moves down\n\n\nOFFSET = 1.0\n"),
                ],
                "pipeline.py": [
                    (
                        "    y = helpers.normalize(x)  # a user-module attribute chain\n",
                        "    y = helpers.normalize(\n        x\n    )\n",
                    ),
                ],
            }
        )
    )
    assert after == before


def test_editing_a_helper_two_calls_down_changes_the_digest(load: Loader) -> None:
    before = entry_digest(load())
    after = entry_digest(load({"deep.py": [("return x * 3.0", "return x * 4.0")]}))
    assert after != before


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("helpers.py", "OFFSET = 1.0", "OFFSET = 1.5"),
        ("pipeline.py", "THRESHOLD = 0.5", "THRESHOLD = 0.25"),
    ],
)
def test_editing_a_module_constant_changes_the_digest(
    load: Loader, module: str, old: str, new: str
) -> None:
    assert entry_digest(load({module: [(old, new)]})) != entry_digest(load())


def test_editing_a_default_value_changes_the_digest(load: Loader) -> None:
    before = entry_digest(load())
    after = entry_digest(load({"pipeline.py": [("scale: float = 2.0", "scale: float = 3.0")]}))
    assert after != before


def test_closure_cell_values_are_part_of_the_digest(load: Loader) -> None:
    pipeline = load().pipeline
    one, other_one, two = (
        pipeline.make_adder(1.0),
        pipeline.make_adder(1.0),
        pipeline.make_adder(2.0),
    )
    assert code_digest(one) == code_digest(other_one)
    assert code_digest(one) != code_digest(two)


def test_changing_a_method_of_a_referenced_class_changes_the_digest(load: Loader) -> None:
    before = entry_digest(load(), "uses_class")
    after = entry_digest(
        load({"helpers.py": [("return x * self.k", "return self.k * x * 1.0")]}), "uses_class"
    )
    assert after != before
    unrelated = entry_digest(
        load({"helpers.py": [("return min(x, limit)", "return 0.0")]}), "uses_class"
    )
    assert unrelated == before


def test_mutual_recursion_terminates_and_tracks_both_functions(load: Loader) -> None:
    pkg = load()
    even, odd = entry_digest(pkg, "is_even"), entry_digest(pkg, "is_odd")
    assert even != odd  # same reachable set, different root
    edited = load({"pipeline.py": [("False if n == 0 else", "(n != 0) and")]})
    assert entry_digest(edited, "is_even") != even


def test_lambdas_are_digested_by_their_own_syntax(load: Loader) -> None:
    pkg = load()
    first, second = pkg.pipeline.pair
    assert code_digest(first) != code_digest(second)
    square = code_digest(pkg.pipeline.square)
    assert code_digest(load().pipeline.square) == square
    edited = load({"pipeline.py": [("lambda x: x * x", "lambda x: x**2")]})
    assert code_digest(edited.pipeline.square) != square


def test_imports_inside_a_function_are_followed(load: Loader) -> None:
    before = entry_digest(load(), "local_import")
    after = entry_digest(load({"deep.py": [("return x * 3.0", "return x * 5.0")]}), "local_import")
    assert after != before


def test_third_party_code_counts_by_package_version(load: Loader) -> None:
    pkg = load()
    assert package_versions(pkg.pipeline.uses_numpy) == {"numpy": np.__version__}
    assert package_versions(pkg.pipeline.entry) == {}  # math, threading: standard library


def test_library_objects_without_a_digest_count_by_type(load: Loader) -> None:
    pkg = load()
    assert entry_digest(pkg, "uses_lock") == entry_digest(load(), "uses_lock")


def test_step_decorators_and_hints_are_not_part_of_the_digest(load: Loader) -> None:
    pkg = load()
    fit = pkg.stepped.fit
    assert code_digest(fit) == code_digest(fit.fn)
    hints = load({"stepped.py": [("@mk.step(retries=1, timeout=10.0)", "@mk.step(retries=5)")]})
    assert code_digest(hints.stepped.fit) == code_digest(fit)
    body = load({"stepped.py": [("* alpha", "* alpha * 2.0")]})
    assert code_digest(body.stepped.fit) != code_digest(fit)
    assert code_digest(body.stepped.chained) != code_digest(pkg.stepped.chained)


def test_partials_and_methods(load: Loader) -> None:
    pipeline = load().pipeline
    one = functools.partial(pipeline.entry, scale=1.0)
    assert code_digest(one) == code_digest(functools.partial(pipeline.entry, scale=1.0))
    assert code_digest(one) != code_digest(functools.partial(pipeline.entry, scale=3.0))
    assert hash_value(one) != hash_value(functools.partial(pipeline.entry, scale=3.0))
    scaler = pipeline.Scaler(2.0)
    assert hash_value(pipeline.entry) == hash_value(pipeline.entry)
    with pytest.raises(HashingError, match="Scaler"):
        hash_value(scaler.apply)  # the bound instance has no canonical digest


def _run_cell(namespace: dict[str, object], source: str) -> None:
    filename = f"<ipython-input-{uuid.uuid4().hex[:8]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)


def test_notebook_cells_and_redefined_helpers() -> None:
    ns: dict[str, object] = {"__name__": "__main__"}
    _run_cell(ns, "def helper(x):\n    return x + 1\n")
    _run_cell(ns, "def f(x):\n    # a comment\n    return helper(x) * 2\n")
    f = ns["f"]
    assert callable(f)
    first = code_digest(f)
    _run_cell(ns, "def helper(x):\n    return x + 2\n")
    assert code_digest(f) != first
    _run_cell(
        ns, "def helper(x):\n    '''Same code, new docstring.'''\n    return x + 1  # again\n"
    )
    assert code_digest(f) == first
    _run_cell(ns, "SCALE = 2\ng = lambda x: x * SCALE\n")
    before = code_digest(ns["g"])  # type: ignore[arg-type]
    _run_cell(ns, "SCALE = 3\n")
    assert code_digest(ns["g"]) != before  # type: ignore[arg-type]


def test_functions_without_source_are_digested_from_their_code_objects() -> None:
    ns: dict[str, object] = {"__name__": "no_source_module"}
    exec(
        compile("def a(x):\n    return x + 1\ndef b(x):\n    return x + 2\n", "<string>", "exec"),
        ns,
    )
    a, b = ns["a"], ns["b"]
    assert code_digest(a) != code_digest(b)  # type: ignore[arg-type]
    ns2: dict[str, object] = {"__name__": "no_source_module"}
    exec(compile("def a(x):\n    return x + 1\n", "<string>", "exec"), ns2)
    assert code_digest(ns2["a"]) == code_digest(a)  # type: ignore[arg-type]


class Opaque:
    """A user class without a hasher."""


def test_unhashable_user_globals_fail_loudly() -> None:
    ns: dict[str, object] = {"__name__": "user_module_with_state", "thing": Opaque()}
    exec(compile("def f():\n    return thing\n", "<string>", "exec"), ns)
    with pytest.raises(HashingError, match="Opaque"):
        code_digest(ns["f"])  # type: ignore[arg-type]


def test_a_digester_memoizes_per_function(load: Loader) -> None:
    pkg = load()
    pipeline = pkg.pipeline
    digester = CodeDigester()
    assert digester.digest(pkg.stepped.fit) == code_digest(pkg.stepped.fit)
    first = digester.digest(pipeline.uses_numpy)
    assert digester.digest(pipeline.uses_numpy) == first == code_digest(pipeline.uses_numpy)
    assert digester.packages(pipeline.uses_numpy) == {"numpy": np.__version__}


_SUBPROCESS = """
import sys
sys.path.insert(0, sys.argv[1])
from mlflowkit.hashing import code_digest
from tests.resources.codedigest import pipeline, stepped
print(code_digest(pipeline.entry), code_digest(pipeline.uses_class), code_digest(stepped.chained))
"""


def test_digests_are_equal_across_processes_and_hash_seeds() -> None:
    from tests.resources.codedigest import pipeline, stepped

    expected = " ".join(
        code_digest(f) for f in (pipeline.entry, pipeline.uses_class, stepped.chained)
    )
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS, str(ROOT)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            cwd=str(ROOT),
        )
        assert out.stdout.strip() == expected


def test_pickling_an_instance_does_not_change_its_class_digest() -> None:
    """pickle caches ``__slotnames__`` on a class; that must not move any code digest."""
    import copyreg

    from mlflowkit.hashing import code_digest as digest_of

    class Model:
        def __init__(self, w: float) -> None:
            self.w = w

    def train(n: int) -> Model:
        return Model(float(n))

    before = digest_of(train)
    copyreg._slotnames(Model)  # what pickling an instance does to its class
    assert "__slotnames__" in Model.__dict__
    assert digest_of(train) == before
