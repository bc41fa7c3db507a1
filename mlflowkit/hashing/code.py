"""Code digests: what a function computes, from its normalized syntax tree and what it refers to.

``code_digest(fn)`` covers the function's own syntax tree and, transitively, the functions,
classes (every method), module constants, default values and closure cells it refers to in the
user's own modules. ``package_versions(fn)`` lists the third-party distributions that code uses.

Invariants
----------
* **Syntax, not text.** A function's own part is the BLAKE3 of its syntax tree
  (``ast.parse`` of its dedented source) with docstrings removed and its own decorators dropped
  (``@mk.step(...)`` options and execution hints are never part of it); comments and
  formatting do not exist in a syntax tree. Where no source is available (``exec``, ``-c``) the
  code object is digested canonically instead (bytecode, constants, names): never a constant.
* **References.** Globals are found in the code objects (``co_names`` through the
  ``LOAD_GLOBAL``/``LOAD_ATTR`` chains, nested code objects included, and ``import``
  statements inside functions) and resolved in ``fn.__globals__``, so ``helpers.normalize``
  where ``helpers`` is a user module refers to that function, and rebinding a name in a
  notebook changes the digest. Every reference is labelled with the name used and what it
  resolves to.
* **Who counts how.** User code (anything outside ``site-packages``/``dist-packages`` and the
  standard library, ``__main__`` and notebook cells included) counts by its syntax tree and
  values; third-party code (and mlflowkit itself) by ``distribution==version``; the standard
  library and builtins by name only. Values count by ``hash_value``; a global whose value
  cannot be hashed counts by its type when that type is a library's (a logger, a lock), and is
  an error when it is the user's own (register a hasher, or pass it as a parameter).
* **Cycles.** The digest is ``H(root label, sorted local digests of every reachable user
  function and class, sorted packages)``; each local digest labels its references without
  recursing, so recursion and mutual recursion terminate and the result does not depend on the
  order in which things were visited.
* **Memo.** Syntax trees and bytecode references are cached per code object (code objects are
  immutable, a redefinition makes a new one); globals, defaults and closure cells are read
  afresh by every ``CodeDigester``, so a redefined helper or an edited constant gives a new
  digest. ``code_digest`` uses a fresh ``CodeDigester``; a run keeps one for a consistent view.

Known limits: methods called on arguments (``obj.method()`` where ``obj`` is a parameter) are
not followed unless the class itself is referred to; a user module used as a whole (not through
an attribute) counts by its source text.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import dis
import functools
import importlib
import importlib.util
import inspect
import linecache
import re
import sys
import textwrap
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import blake3

from mlflowkit.errors import HashingError
from mlflowkit.hashing import values as _v
from mlflowkit.hashing._origins import (
    STDLIB,
    THIRD_PARTY,
    USER,
    distribution,
    import_kind,
    module_kind,
)

__all__ = ["CodeDigester", "code_digest", "package_versions"]

_DIGEST_VERSION = "mlflowkit-code/1"
_SKIP_MEMBERS = frozenset(
    {
        "__module__",
        "__qualname__",
        "__doc__",
        "__dict__",
        "__weakref__",
        "__annotations__",
        "__dataclass_fields__",
        "__dataclass_params__",
        "__match_args__",
        "__orig_bases__",
        "__parameters__",
        "_abc_impl",
        "__firstlineno__",
        "__static_attributes__",
        "__annotate__",
        "__annotate_func__",
        "__annotations_cache__",
        # added to a class at run time, not written by its author: pickle/copyreg caches
        # __slotnames__ on the class the first time an instance is pickled
        "__slotnames__",
        "__abstractmethods__",
        "_is_protocol",
        "__protocol_attrs__",
        "__non_callable_proto_members__",
        "__subclasshook__",
        "_abc_registry",
        "_abc_cache",
        "_abc_negative_cache",
        "_abc_negative_cache_version",
    }
)
_SKIP_FIELDS = frozenset({"kind", "type_comment", "type_ignores"})


def _function_module(fn: types.FunctionType) -> str:
    name = fn.__globals__.get("__name__")  # the defining module, even under functools.wraps
    return name if isinstance(name, str) else "__main__"


# --------------------------------------------------------------------------------------------
# per code object: the normalized syntax tree and the references


class _CodeInfo(NamedTuple):
    shallow: bytes
    refs: tuple[tuple[str, ...], ...]


_CODE_CACHE: dict[int, tuple[weakref.ref[types.CodeType], _CodeInfo]] = {}
_CODE_LOCK = threading.Lock()


def _code_info(code: types.CodeType) -> _CodeInfo:
    entry = _CODE_CACHE.get(id(code))
    if entry is not None and entry[0]() is code:
        return entry[1]
    info = _CodeInfo(_shallow(code), _references(code))
    key = id(code)

    def forget(_: object, key: int = key) -> None:
        _CODE_CACHE.pop(key, None)

    with _CODE_LOCK:
        _CODE_CACHE[key] = (weakref.ref(code, forget), info)
    return info


def _shallow(code: types.CodeType) -> bytes:
    node = _syntax_tree(code)
    if node is None:
        return b"code:" + _code_object_digest(code)
    return b"ast:" + blake3.blake3(_dump(node)).digest()


_DEF_LINE = re.compile(r"^(\s*def\s)|(\s*async\s+def\s)|(.*(?<!\w)lambda(:|\s))|^(\s*@)")


def _source_lines(code: types.CodeType) -> tuple[list[str], int, ast.Module | None]:
    """The source lines of a code object's block, its first line number, and the parsed block
    (None when it was found another way and is still to be parsed).

    What ``inspect.getsourcelines`` gives, read straight from ``linecache`` (which also holds
    notebook cells): ``inspect`` first searches every loaded module for the file's module,
    which costs milliseconds per call in a large program.
    """
    linecache.checkcache(code.co_filename)  # a file edited since it was cached is re-read
    lines = linecache.getlines(code.co_filename)
    if not lines:
        found, first = inspect.getsourcelines(code)  # loaders that need the module's globals
        return found, first, None
    lnum = code.co_firstlineno - 1
    while lnum > 0 and lnum < len(lines) and not _DEF_LINE.match(lines[lnum]):
        lnum -= 1
    if lnum >= len(lines):
        raise OSError("source line out of range")
    block = _indented_block(lines, lnum)
    try:
        tree = ast.parse(textwrap.dedent("".join(block)))
    except SyntaxError:  # an unusual layout: let the tokenizer find the block's end
        return inspect.getblock(lines[lnum:]), lnum + 1, None
    return block, lnum + 1, tree


def _indented_block(lines: list[str], start: int) -> list[str]:
    """The lines of the block starting at ``start``: up to the next line indented no deeper.

    A cheap stand-in for ``inspect.getblock`` (which tokenizes); the caller checks the result
    parses and falls back to ``getblock`` when it does not (e.g. a signature split over lines
    that are indented less than the ``def``).
    """
    first = lines[start]
    indent = len(first) - len(first.lstrip())
    end = start + 1
    body_seen = False
    while end < len(lines):
        line = lines[end]
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            if len(line) - len(line.lstrip()) <= indent and body_seen:
                break
            if len(line) - len(line.lstrip()) > indent:
                body_seen = True
            elif not stripped.startswith((")", "]", "}", "@", "def ", "async ", "class ")):
                break  # before the body only decorators and the signature sit this far left
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def _syntax_tree(code: types.CodeType) -> ast.AST | None:
    try:
        lines, first, parsed = _source_lines(code)
    except (OSError, TypeError, IndexError):
        return None
    text = "".join(lines)
    try:
        tree = parsed if parsed is not None else ast.parse(textwrap.dedent(text))
    except SyntaxError:
        return None
    node: ast.AST | None
    if code.co_name == "<lambda>":
        dedented = textwrap.dedent(text)
        indent = len(text.splitlines()[0]) - len(dedented.splitlines()[0]) if text else 0
        node = _find_lambda(tree, code, first, indent)
    else:
        node = next(
            (
                n
                for n in tree.body
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == code.co_name
            ),
            None,
        )
    if node is None:
        return None
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        node.decorator_list = []
    _strip_docstrings(node)
    return node


def _find_lambda(tree: ast.AST, code: types.CodeType, first: int, indent: int) -> ast.AST | None:
    lambdas = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
    if len(lambdas) <= 1:
        return lambdas[0] if lambdas else None
    positions = getattr(code, "co_positions", None)  # Python 3.11+
    if positions is None:
        return None
    spots = [
        (line - first + 1, col - indent)
        for line, end_line, col, end_col in positions()
        if line is not None and col is not None and (end_line or line, end_col or 0) > (line, col)
    ]
    if not spots:
        return None
    spot = min(spots)

    def contains(n: ast.Lambda) -> bool:
        end = (n.end_lineno or n.lineno, n.end_col_offset or 0)
        return (n.lineno, n.col_offset) <= spot <= end

    inside = [n for n in lambdas if contains(n)]
    if not inside:
        return None
    return min(inside, key=lambda n: ((n.end_lineno or 0) - n.lineno, n.end_col_offset or 0))


def _strip_docstrings(root: ast.AST) -> None:
    for node in ast.walk(root):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:]


class _Field(str):
    """A field name in the syntax-tree walk (distinct from identifier values)."""


def _dump(root: ast.AST) -> bytes:
    """A canonical, prefix-free serialization of a syntax tree (iterative; no positions)."""
    out: list[str] = []
    stack: list[Any] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.AST):
            fields = [(f, getattr(item, f, None)) for f in item._fields if f not in _SKIP_FIELDS]
            fields = [(f, v) for f, v in fields if v is not None and v != []]
            out.append(f"<{type(item).__name__}:{len(fields)}")
            for name, value in reversed(fields):
                stack.append(value)
                stack.append(_Field(name))
        elif isinstance(item, _Field):
            out.append(f"={item}")
        elif isinstance(item, list):
            out.append(f"[{len(item)}")
            stack.extend(reversed(item))
        else:
            out.append(f"{type(item).__name__}:{item!r}")
    return "\x00".join(out).encode("utf-8", "surrogatepass")


def _code_object_digest(code: types.CodeType) -> bytes:
    parts: list[Any] = [
        code.co_name,
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
        code.co_code,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
    ]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            parts.append(_code_object_digest(const))
        else:
            parts.append(_v.digest_value(const))
    return _v.digest_value(tuple(parts))


def _references(code: types.CodeType) -> tuple[tuple[str, ...], ...]:
    """Global name chains (``("g", name, attr, ...)``) and function-level imports
    (``("i", level, module, top, attr, ...)``) used by a code object and its nested code."""
    refs: set[tuple[str, ...]] = set()
    todo = [code]
    while todo:
        current = todo.pop()
        todo.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
        imported: dict[str, tuple[str, ...]] = {}
        consts: list[Any] = []
        base: tuple[str, ...] | None = None
        value: tuple[str, ...] | None = None
        chain: list[str] | None = None
        for ins in dis.get_instructions(current):
            op, arg = ins.opname, ins.argval
            if chain is not None:
                if op in ("LOAD_ATTR", "LOAD_METHOD"):
                    chain.append(str(arg))
                    continue
                refs.add(tuple(chain))
                chain = None
            if op in ("LOAD_GLOBAL", "LOAD_NAME"):
                chain = ["g", str(arg)]
            elif op in ("LOAD_FAST", "LOAD_DEREF") and arg in imported:
                chain = list(imported[arg])
            elif op == "IMPORT_NAME":
                level = consts[-2] if len(consts) >= 2 and isinstance(consts[-2], int) else 0
                top = "1" if consts and consts[-1] is None else "0"
                base = value = ("i", str(level), str(arg), top)
            elif op == "IMPORT_FROM" and base is not None:
                value = (*base, str(arg))
            elif op.startswith("STORE_") and value is not None:
                imported[str(arg)] = value
                refs.add(value)
                value = None
            elif op not in ("LOAD_CONST", "SWAP", "COPY"):
                base = value = None
            if op == "LOAD_CONST":
                consts.append(arg)
            else:
                consts.clear()
        if chain is not None:
            refs.add(tuple(chain))
    return tuple(sorted(refs))


# --------------------------------------------------------------------------------------------
# the digester


@dataclasses.dataclass
class _Node:
    local: bytes
    targets: list[Any]
    packages: dict[str, str]


class _Collector:
    """What one node's references contribute: nodes to visit and package versions."""

    __slots__ = ("packages", "targets")

    def __init__(self) -> None:
        self.targets: list[Any] = []
        self.packages: dict[str, str] = {}

    def package(self, module: str) -> tuple[str, str]:
        dist, version = distribution(module.partition(".")[0])
        self.packages[dist] = version
        return dist, version


_ACTIVE = threading.local()


class CodeDigester:
    """Computes code digests and package versions, memoizing per function object.

    Create one per run: every digest it returns reflects the code and global values as they
    were when it first saw them. ``code_digest`` uses a fresh one per call.
    """

    def __init__(self) -> None:
        self._nodes: dict[int, tuple[Any, _Node]] = {}
        self._results: dict[int, tuple[Any, str, dict[str, str]]] = {}
        self._current: _Collector | None = None
        self._valuing: set[int] = set()

    # public ----------------------------------------------------------------------------------
    def digest(self, fn: Any) -> str:
        """The code digest of ``fn`` (a function, lambda, method, Step, partial or builtin).

        Returns
        -------
        str
            64 hex characters.
        """
        return self._analyze(_unwrap_step(fn))[0]

    def packages(self, fn: Any) -> dict[str, str]:
        """The third-party distributions (``{name: version}``) ``fn``'s code uses."""
        return dict(self._analyze(_unwrap_step(fn))[1])

    def reference(self, obj: Any) -> bytes:
        """The label digest of ``obj`` seen from the node being digested (used while hashing
        values inside code, so functions inside constants are followed, not recursed into)."""
        collector = self._current
        if collector is None:
            return bytes.fromhex(CodeDigester().digest(obj))
        return _v.digest_value(self._label(obj, collector))

    # internals -------------------------------------------------------------------------------
    def _analyze(self, fn: Any) -> tuple[str, dict[str, str]]:
        memo = self._results.get(id(fn))
        if memo is not None and memo[0] is fn:
            return memo[1], memo[2]
        previous = getattr(_ACTIVE, "digester", None)
        _ACTIVE.digester = self
        root = _Collector()
        saved, self._current = self._current, root
        try:
            root_label = self._label(fn, root)
            packages = dict(root.packages)
            locals_: list[bytes] = []
            seen: set[int] = set()
            queue = list(root.targets)
            while queue:
                obj = queue.pop()
                if id(obj) in seen:
                    continue
                seen.add(id(obj))
                node = self._node(obj)
                locals_.append(node.local)
                packages.update(node.packages)
                queue.extend(node.targets)
        finally:
            _ACTIVE.digester = previous
            self._current = saved
        locals_.sort()
        packages = dict(sorted(packages.items()))
        digest = _v.hash_value((_DIGEST_VERSION, root_label, locals_, packages))
        self._results[id(fn)] = (fn, digest, packages)
        return digest, packages

    def _node(self, obj: Any) -> _Node:
        entry = self._nodes.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        collector = _Collector()
        saved, self._current = self._current, collector
        try:
            if isinstance(obj, type):
                local = _v.digest_value(self._class_local(obj, collector))
            else:
                local = _v.digest_value(self._function_local(obj, collector))
        finally:
            self._current = saved
        node = _Node(local, collector.targets, collector.packages)
        self._nodes[id(obj)] = (obj, node)
        return node

    def _function_local(self, fn: types.FunctionType, c: _Collector) -> tuple[Any, ...]:
        code = fn.__code__
        info = _code_info(code)
        defaults = tuple(self._label(d, c) for d in fn.__defaults__ or ())
        kwdefaults = tuple(
            (k, self._label(v, c)) for k, v in sorted((fn.__kwdefaults__ or {}).items())
        )
        cells: list[Any] = []
        for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
            try:
                value = cell.cell_contents
            except ValueError:
                cells.append((name, "empty"))
                continue
            cells.append((name, self._label(value, c)))
        refs = tuple(self._ref_label(fn, ref, c) for ref in info.refs)
        return ("fn", fn.__qualname__, info.shallow, defaults, kwdefaults, tuple(cells), refs)

    def _class_local(self, cls: type, c: _Collector) -> tuple[Any, ...]:
        is_dc = dataclasses.is_dataclass(cls)
        members: list[Any] = []
        for name, value in sorted(vars(cls).items()):
            if name in _SKIP_MEMBERS:
                continue
            if (
                is_dc
                and isinstance(value, types.FunctionType)
                and value.__code__.co_filename == "<string>"
            ):
                continue  # generated by @dataclass from the fields below
            members.append((name, self._member_label(value, c)))
        annotations = tuple(
            (k, v if isinstance(v, str) else _annotation_text(v))
            for k, v in sorted(inspect.get_annotations(cls).items())
        )
        dc: tuple[Any, ...] = ()
        if is_dc:
            params = vars(cls).get("__dataclass_params__")
            flags = tuple(
                (f, bool(getattr(params, f, False)))
                for f in ("init", "repr", "eq", "order", "unsafe_hash", "frozen")
            )
            fields = tuple(
                (
                    f.name,
                    f.compare,
                    f.init,
                    None
                    if f.default_factory is dataclasses.MISSING
                    else self._label(f.default_factory, c),
                )
                for f in dataclasses.fields(cls)
            )
            dc = (flags, fields)
        bases = tuple(self._label(b, c) for b in cls.__bases__)
        return ("class", cls.__qualname__, bases, tuple(members), annotations, dc)

    def _member_label(self, value: Any, c: _Collector) -> Any:
        if isinstance(value, (staticmethod, classmethod)):
            return (type(value).__name__, self._label(value.__func__, c))
        if isinstance(value, property):
            return ("property", *(self._label(f, c) for f in (value.fget, value.fset, value.fdel)))
        if isinstance(value, functools.cached_property):
            return ("cached_property", self._label(value.func, c))
        return self._label(value, c)

    def _ref_label(self, fn: types.FunctionType, ref: tuple[str, ...], c: _Collector) -> Any:
        if ref[0] == "i":
            return self._import_label(fn, ref, c)
        name, attrs = ref[1], ref[2:]
        scope = fn.__globals__
        if name in scope:
            obj = scope[name]
        elif hasattr(builtins, name):
            return ("builtin", name)
        else:
            return ("unbound", name)
        used = [name]
        obj = _walk(obj, attrs, used)
        return (".".join(used), self._label(obj, c))

    def _import_label(self, fn: types.FunctionType, ref: tuple[str, ...], c: _Collector) -> Any:
        level, module_name, top, attrs = int(ref[1]), ref[2], ref[3] == "1", ref[4:]
        if level:
            package = fn.__globals__.get("__package__") or ""
            try:
                module_name = importlib.util.resolve_name("." * level + module_name, package)
            except (ImportError, ValueError):
                return ("unresolved-import", ref)
        head = module_name.partition(".")[0] if top else module_name
        # classify by the top-level package: finding the spec of a submodule would import its
        # parent package (a slow, side-effecting import of e.g. sklearn just to hash code)
        package = module_name.partition(".")[0]
        kind = module_kind(package) if package in sys.modules else import_kind(package)
        if kind == STDLIB:
            return ("import", package, "stdlib")
        if kind == THIRD_PARTY:
            return ("import", package, "package", *c.package(package))
        try:
            importlib.import_module(module_name)
        except ImportError as exc:
            return ("unresolved-import", module_name, type(exc).__name__)
        used = [head]
        obj = _walk(sys.modules[head], attrs, used)
        return ("import", ".".join(used), self._label(obj, c))

    def _label(self, obj: Any, c: _Collector) -> Any:
        """How a referenced object counts (visiting user functions and classes as nodes)."""
        if getattr(type(obj), "__mlflowkit_step__", False) is True and hasattr(obj, "fn"):
            return ("step", self._label(obj.fn, c))
        if isinstance(obj, types.FunctionType):
            module = _function_module(obj)
            kind = module_kind(module)
            if kind == USER:
                c.targets.append(obj)
                return ("fn", obj.__qualname__, _code_info(obj.__code__).shallow)
            return self._library(module, obj.__qualname__, kind, obj, c)
        if isinstance(obj, type):
            kind = module_kind(obj.__module__)
            if kind == USER:
                c.targets.append(obj)
                return ("class", obj.__qualname__)
            return self._library(obj.__module__, obj.__qualname__, kind, obj, c)
        if isinstance(obj, types.ModuleType):
            kind = module_kind(obj.__name__)
            if kind == USER:
                return ("module", obj.__name__, _module_source_digest(obj))
            return self._library(obj.__name__, "", kind, obj, c)
        if isinstance(obj, types.MethodType):
            return ("method", self._label(obj.__func__, c), self._label(obj.__self__, c))
        if isinstance(obj, functools.partial):
            args = tuple(self._label(a, c) for a in obj.args)
            kwargs = tuple((k, self._label(v, c)) for k, v in sorted(obj.keywords.items()))
            return ("partial", self._label(obj.func, c), args, kwargs)
        if hasattr(obj, "__wrapped__"):
            t = type(obj)
            if module_kind(t.__module__ or "") == THIRD_PARTY:
                c.package(t.__module__)
            return ("wrapped", _v.type_name(t), self._label(obj.__wrapped__, c))
        if callable(obj) and module_kind(type(obj).__module__ or "") != USER:
            owner = getattr(obj, "__self__", None)
            module = getattr(obj, "__module__", None) or type(owner).__module__ or "builtins"
            name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
            if isinstance(name, str) and isinstance(module, str):
                return self._library(module, name, module_kind(module), obj, c)
        return self._value_label(obj, c)

    def _library(self, module: str, name: str, kind: str, obj: Any, c: _Collector) -> Any:
        if kind == THIRD_PARTY:
            dist, _ = c.package(module)
            label: tuple[Any, ...] = ("lib", dist, module, name)
        else:
            label = ("stdlib", module, name)
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is not None and not isinstance(obj, type):
            label = (*label, self._label(wrapped, c))
        return label

    def _value_label(self, obj: Any, c: _Collector) -> Any:
        t = type(obj)
        kind = module_kind(t.__module__)
        if kind == USER and not isinstance(obj, type):
            c.targets.append(t)  # the methods of a user object's class are code too
        if id(obj) in self._valuing:
            raise HashingError(
                f"cannot digest code that refers to a {_v.type_name(t)} whose digest refers "
                "back to itself (e.g. a hasher returning one of the object's bound methods)",
                type_name=_v.type_name(t),
            )
        self._valuing.add(id(obj))
        try:
            return ("value", _v.digest_value(obj))
        except HashingError as exc:
            if kind == USER:
                raise HashingError(
                    f"code refers to a {_v.type_name(t)} object that cannot be hashed, so "
                    f"its effect on results cannot be tracked ({str(exc).rstrip('.')}). "
                    "Register a hasher for "
                    "the class, or pass the object to the step as a parameter.",
                    type_name=_v.type_name(t),
                ) from exc
            if kind == THIRD_PARTY:
                c.package(t.__module__)
            return ("instance", _v.type_name(t))
        finally:
            self._valuing.discard(id(obj))


def _walk(obj: Any, attrs: tuple[str, ...], used: list[str]) -> Any:
    """Follow attributes through user modules (stopping at anything else)."""
    for attr in attrs:
        if not isinstance(obj, types.ModuleType) or module_kind(obj.__name__) != USER:
            break
        nxt = getattr(obj, attr, None)
        if nxt is None:
            nxt = sys.modules.get(f"{obj.__name__}.{attr}")
        if nxt is None:
            break
        obj = nxt
        used.append(attr)
    return obj


def _module_source_digest(module: types.ModuleType) -> str:
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return "no-source"
    return blake3.blake3(source.encode("utf-8", "surrogatepass")).digest().hex()


def _annotation_text(annotation: Any) -> str:
    if isinstance(annotation, type):
        return _v.type_name(annotation)
    return repr(annotation)  # typing constructs: their repr is their source-like spelling


# --------------------------------------------------------------------------------------------
# module-level entry points


def _unwrap_step(fn: Any) -> Any:
    if getattr(type(fn), "__mlflowkit_step__", False) is True and hasattr(fn, "fn"):
        return fn.fn
    return fn


def code_digest(fn: Callable[..., Any]) -> str:
    """The digest of a function's code and of the user code it refers to, transitively.

    Parameters
    ----------
    fn:
        A function, lambda, method, ``functools.partial``, builtin or ``mk.Step`` (its
        ``.fn`` is digested; its decorator options are not).

    Returns
    -------
    str
        64 hex characters.

    Raises
    ------
    HashingError
        When the code refers to an object of a user class that cannot be hashed.
    """
    active: CodeDigester | None = getattr(_ACTIVE, "digester", None)
    if active is not None:
        return active.reference(fn).hex()
    return CodeDigester().digest(_unwrap_step(fn))


def package_versions(fn: Callable[..., Any]) -> dict[str, str]:
    """The third-party distributions ``{name: version}`` used by ``fn``'s code, transitively.

    The standard library is not listed; mlflowkit itself is, when the code uses it.
    """
    return CodeDigester().packages(_unwrap_step(fn))
