from __future__ import annotations

import inspect
import pickle

import cloudpickle
import pytest

import mlflowkit as mk
from tests.resources import dag_basic


def test_bare_and_called_decorator_keep_function_metadata() -> None:
    @mk.step
    def add(a: int, b: int = 2) -> int:
        """Add two numbers."""
        return a + b

    @mk.step(retries=2, name="plus")
    def add2(a: int) -> int:
        return a

    assert isinstance(add, mk.Step) and isinstance(add2, mk.Step)
    assert add.__doc__ == "Add two numbers."
    assert add.__wrapped__ is add.fn
    assert inspect.signature(add) == inspect.signature(add.fn)
    assert add.name == "add" and add2.name == "plus"
    assert add2.hints.retries == 2


def test_outside_a_pipeline_a_step_is_the_plain_function() -> None:
    assert dag_basic.inc(3) == 4
    assert dag_basic.square.map(x=[1, 2, 3]) == [1, 4, 9]


def test_step_is_frozen() -> None:
    with pytest.raises(AttributeError, match="frozen"):
        dag_basic.inc.fn = print  # type: ignore[misc]


def test_identity_and_hints_are_separate() -> None:
    @mk.step(version="v1", cache=False, retries=3, retry_delay=0.5, timeout=2, resources={"gpu": 1})
    def f(x: int) -> int:
        return x

    assert f.identity.version == "v1" and f.identity.cache is False
    assert f.hints.retries == 3 and f.hints.retry_delay == 0.5
    assert f.hints.timeout == 2.0 and f.hints.gpus == 1.0
    assert not hasattr(f.identity, "retries")


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"retries": -1}, "retries"),
        ({"retry_delay": -0.5}, "retry_delay"),
        ({"timeout": 0}, "timeout"),
        ({"resources": {"gpu": "one"}}, "resources"),
        ({"version": ""}, "version"),
        ({"cache": "yes"}, "cache"),
        ({"name": "a.b"}, "name"),
    ],
)
def test_bad_options_raise_wiring_error(options: dict[str, object], needle: str) -> None:
    with pytest.raises(mk.WiringError, match=needle):

        @mk.step(**options)  # type: ignore[call-overload]
        def f(x: int) -> int:
            return x


def test_steps_pickle_by_reference_and_by_value() -> None:
    assert pickle.loads(pickle.dumps(dag_basic.inc)) is dag_basic.inc

    @mk.step
    def local_step(x: int) -> int:
        return x * 3

    clone = cloudpickle.loads(cloudpickle.dumps(local_step))
    assert clone(2) == 6 and clone.name == "local_step"


def test_qualified_name_is_module_and_qualname() -> None:
    assert dag_basic.inc.qualified_name == "tests.resources.dag_basic:inc"
