from __future__ import annotations

from typing import Any, NamedTuple

import networkx as nx
import numpy as np
import pytest
from numpy.typing import NDArray

import mlflowkit as mk
from mlflowkit.plan import OPS
from tests.resources import dag_basic


def test_planning_records_nodes_in_topological_order_and_runs_nothing() -> None:
    ran: list[int] = []

    @mk.step
    def record(x: int) -> int:
        ran.append(x)
        return x

    @mk.pipeline
    def p() -> Any:
        return record(record(1))

    assert p.plan().steps == ["record", "record-2"]
    assert ran == []
    plan = dag_basic.train.plan(n=50)
    assert plan.steps == ["make_data", "make_data.0", "make_data.1", "fit", "score"]
    g = plan.graph
    assert isinstance(g, nx.DiGraph)
    assert next(iter(nx.topological_sort(g))) == "make_data"
    assert set(g.predecessors("fit")) == {"make_data.0", "make_data.1"}
    assert g.nodes["fit"]["step"] is dag_basic.fit


def test_repeated_calls_are_numbered_and_map_elements_indexed() -> None:
    @mk.pipeline
    def p() -> Any:
        a = dag_basic.inc(1)
        b = dag_basic.inc(a)
        c = dag_basic.inc(b)
        sq = dag_basic.square.map(x=[1, 2])
        return c, sq

    plan = p.plan()
    assert plan.steps[:3] == ["inc", "inc-2", "inc-3"]
    assert "square[0]" in plan.steps and "square[1]" in plan.steps and "square" in plan.steps


def test_nested_pipelines_prefix_their_steps() -> None:
    @mk.pipeline
    def prep(n: int) -> Any:
        return dag_basic.inc(n)

    @mk.pipeline
    def outer() -> Any:
        a = prep(1)
        return dag_basic.square(a)

    plan = outer.plan()
    assert plan.steps == ["prep.inc", "square"]
    assert plan.nodes["square"].deps == ("prep.inc",)


def test_a_nested_pipeline_called_twice_numbers_its_scope() -> None:
    @mk.pipeline
    def prep(n: int) -> Any:
        return dag_basic.inc(dag_basic.inc(n))

    @mk.pipeline
    def twice() -> Any:
        return prep(prep(1))

    @mk.pipeline
    def outer() -> Any:
        return dag_basic.square(twice())

    plan = outer.plan()
    assert plan.steps == [
        "twice.prep.inc",
        "twice.prep.inc-2",
        "twice.prep-2.inc",
        "twice.prep-2.inc-2",
        "square",
    ]
    assert plan.nodes["twice.prep-2.inc"].deps == ("twice.prep.inc-2",)


@pytest.mark.parametrize(
    "body",
    [
        lambda r: bool(r),
        lambda r: len(r),
        lambda r: [x for x in r],
        lambda r: r == 3,
        lambda r: r + 1,
        lambda r: f"{r}",
        lambda r: 3 in r,
    ],
)
def test_ref_in_control_flow_raises_planning_error_naming_step_and_line(body: Any) -> None:
    @mk.pipeline
    def p() -> Any:
        r = dag_basic.inc(1)
        body(r)
        return r

    with pytest.raises(mk.PlanningError) as info:
        p.plan()
    assert info.value.step == "inc"
    assert "test_plan.py" in str(info.value)


class Pair(NamedTuple):
    a: int
    b: int


def test_tuple_unpacking_getitem_and_getattr_make_derived_nodes() -> None:
    @mk.step
    def pair() -> Pair:
        return Pair(1, 2)

    @mk.step
    def d() -> dict[str, int]:
        return {"k": 3}

    @mk.pipeline
    def p() -> Any:
        x, y = pair()
        return x, y, d()["k"], pair().a

    plan = p.plan()
    assert "pair.0" in plan.steps and "pair.1" in plan.steps and "d.k" in plan.steps
    assert "pair-2.a" in plan.steps
    assert p() == (1, 2, 3, 1)


def test_plan_renders_mermaid_and_dot() -> None:
    plan = dag_basic.train.plan()
    mermaid = plan.to_mermaid()
    assert mermaid.startswith("flowchart TD") and mermaid.count("-->") == 7
    dot = plan.to_dot()
    assert dot.startswith('digraph "train"') and '"fit" -> "score";' in dot


def test_pipeline_returns_structures_and_none() -> None:
    @mk.pipeline
    def p() -> Any:
        return {"a": dag_basic.inc(1), "b": [dag_basic.inc(2), "x"], "c": None}

    assert p() == {"a": 2, "b": [3, "x"], "c": None}

    @mk.pipeline
    def nothing() -> None:
        dag_basic.inc(1)

    assert nothing() is None


def test_map_over_a_planning_time_list_zips_and_broadcasts() -> None:
    @mk.step
    def affine(x: int, a: int, b: int) -> int:
        return a * x + b

    @mk.pipeline
    def p() -> Any:
        return affine.map(x=[1, 2, 3], a=[10, 20, 30], b=1)

    assert p() == [11, 41, 91]


def test_map_with_unequal_lists_is_a_wiring_error() -> None:
    @mk.pipeline
    def p() -> Any:
        return dag_basic.square.map(x=[1, 2], y=[1])

    with pytest.raises(mk.WiringError, match="equal"):
        p.plan()


def test_map_over_a_ref_fans_out_at_run_time(tmp_path: Any) -> None:
    run = dag_basic.fan.plan(n=6).run(store=str(tmp_path))
    assert run.output == sum(i * i for i in range(6))
    names = [s.name for s in run.steps]
    assert "square[5]" in names and "split.5" in names
    again = dag_basic.fan.plan(n=6).run(store=str(tmp_path))
    assert all(s.status == "cached" for s in again.steps)


@mk.pipeline
def _fan_indexed(n: int) -> Any:
    squares = dag_basic.square.map(x=dag_basic.split(n))
    return squares[2], dag_basic.inc.map(x=squares), squares


@mk.pipeline
def _fan_indexed_elsewhere(n: int) -> Any:  # the same calls, another pipeline: no pack
    squares = dag_basic.square.map(x=dag_basic.split(n))
    return dag_basic.inc(squares[-1])


@pytest.mark.parametrize("executor", ["local", "threads"])
def test_a_gather_records_no_item_digests_yet_is_indexed_and_mapped_over(
    tmp_path: Any, executor: str
) -> None:
    store = mk.Store(str(tmp_path))
    run = _fan_indexed.plan(n=4).run(store=store, executor=executor, progress=False)
    assert run.output == (4, [1, 2, 5, 10], [0, 1, 4, 9])
    steps = {s.name: s for s in run.steps}
    gather = steps["square"]
    assert gather.step == OPS["gather"].qualified_name
    # its items are the values it collected: the scheduler knows their digests already
    assert store.get_cache(gather.key or "").meta == {"len": 4}
    assert steps["square.2"].output_digest == steps["square[2]"].output_digest
    again = _fan_indexed.plan(n=4).run(store=store, executor=executor, progress=False)
    assert again.output == run.output
    assert {s.status for s in again.steps} == {"cached"}
    assert [s.output_digest for s in again.steps] == [s.output_digest for s in run.steps]
    elsewhere = _fan_indexed_elsewhere.plan(n=4).run(store=store, executor=executor)
    assert elsewhere.output == 10
    assert {s.status for s in elsewhere.steps} == {"cached"}


def test_ten_thousand_step_chain_plans_and_runs_without_recursion_error() -> None:
    @mk.step(cache=False)
    def step_inc(x: int) -> int:
        return x + 1

    @mk.pipeline
    def long(n: int) -> Any:
        x = step_inc(0)
        for _ in range(n - 1):
            x = step_inc(x)
        return x

    plan = long.plan(n=10_000)
    assert len(plan.steps) == 10_000
    assert plan.run(store="memory://chain10k", progress=False).output == 10_000
    assert len(plan.to_mermaid().splitlines()) > 10_000


def test_pipeline_parameters_are_checked() -> None:
    with pytest.raises(mk.WiringError, match="alpha"):
        dag_basic.train.plan(alpha="big")  # type: ignore[arg-type]
    with pytest.raises(mk.WiringError, match="nope"):
        dag_basic.train.plan(nope=1)  # type: ignore[call-arg]


def test_returning_a_step_itself_is_a_planning_error() -> None:
    @mk.pipeline
    def p() -> Any:
        return dag_basic.inc

    with pytest.raises(mk.PlanningError, match="returned the step"):
        p.plan()


def test_ndarray_wiring_is_checked_by_dtype() -> None:
    @mk.step
    def ints() -> NDArray[np.int64]:
        return np.arange(3)

    @mk.step
    def wants_floats(x: NDArray[np.float64]) -> float:
        return float(x.sum())

    @mk.pipeline
    def p() -> Any:
        return wants_floats(ints())

    with pytest.raises(mk.WiringError) as info:
        p.plan()
    assert info.value.parameter == "x" and info.value.step == "wants_floats"


@mk.step
def _keyword_only(a: int, *, b: int = 2) -> int:
    return a + b


@mk.pipeline
def _map_keyword_only(values: list[Any]) -> list[int]:
    return _keyword_only.map(a=values, b=10)


def test_map_over_a_step_with_keyword_only_parameters(tmp_path: Any) -> None:
    plan = _map_keyword_only.plan(values=[1, 2, 3])  # binds each element on its own
    assert plan.steps == [
        "_keyword_only[0]",
        "_keyword_only[1]",
        "_keyword_only[2]",
        "_keyword_only",
    ]
    assert plan.run(store=str(tmp_path / "s"), progress=False).output == [11, 12, 13]
    with pytest.raises(mk.WiringError, match=r"_keyword_only\[1\]'.*parameter 'a'.*expected int"):
        _map_keyword_only.plan(values=[1, "x"])


def test_a_map_element_of_the_wrong_type_is_named() -> None:
    with pytest.raises(mk.WiringError, match=r"inc\[2\]'.*parameter 'x'.*expected int"):
        _map_inc_values.plan(values=[1, 2, "three"])


@mk.pipeline
def _map_inc_values(values: list[Any]) -> list[int]:
    return dag_basic.inc.map(x=values)


# --- a pipeline's own return annotation ----------------------------------------------------


@mk.step
def _as_dict(x: int) -> dict[str, int]:
    return {"a": x}


@mk.step
def _untyped_dict(x: int):  # type: ignore[no-untyped-def]  # no return annotation on purpose
    return {"a": x}


def test_a_pipelines_return_annotation_is_checked_while_planning() -> None:
    @mk.pipeline
    def plain(x: int) -> float:
        return {"a": x}  # type: ignore[return-value]

    @mk.pipeline
    def wired(x: int) -> float:
        return _as_dict(x)  # type: ignore[return-value]

    @mk.pipeline
    def outer(x: int) -> Any:
        return wired(x)

    for pipe, found in (
        (plain, "returns dict ({'a': 1})"),
        (wired, "returns dict[str, int] (the output of step '_as_dict')"),
        (outer, "returns dict[str, int] (the output of step 'wired._as_dict')"),
    ):
        with pytest.raises(mk.WiringError) as info:
            pipe.plan(x=1)
        assert f"{found}, but its return annotation says float" in str(info.value)
        assert info.value.parameter == "return" and info.value.expected is float
        assert info.value.location is not None and "test_plan.py" in info.value.location


def test_a_pipelines_output_is_checked_when_it_runs_if_planning_cannot_tell(
    tmp_path: Any,
) -> None:
    @mk.pipeline
    def p(x: int) -> tuple[float, float]:
        return _untyped_dict(x), 1.0  # type: ignore[return-value]

    plan = p.plan(x=1)
    assert plan.check_returns
    for _ in range(2):  # executed, then cached: the output is checked either way
        with pytest.raises(mk.RunFailed) as info:
            plan.run(store=str(tmp_path), progress=False)
        err = info.value.__cause__
        assert isinstance(err, mk.TypeCheckError)
        assert (
            "Pipeline 'p' returned tuple, but its return annotation says tuple[float, float] "
            "(item [0] is dict {'a': 1}, expected float)"
        ) in str(err)
        assert info.value.run.status == "failed"
    assert info.value.run.step("_untyped_dict").status == "cached"

    @mk.pipeline
    def right(x: int) -> tuple[dict[str, int], float]:
        return _untyped_dict(x), 1.0

    assert right.plan(x=1).run(store=str(tmp_path), progress=False).output == ({"a": 1}, 1.0)

    @mk.pipeline
    def as_ref(x: int) -> mk.Ref[dict[str, int]]:  # read as the value's type
        return _as_dict(x)  # type: ignore[return-value]

    assert not as_ref.plan(x=1).check_returns
    assert as_ref.plan(x=1).run(store=str(tmp_path), progress=False).output == {"a": 1}


@pytest.mark.timeout(20)
def test_a_self_referential_parameter_argument_or_output_fails_planning_at_once() -> None:
    looped: list[Any] = [1]
    looped.append(looped)
    mapping: dict[str, Any] = {}
    mapping["self"] = mapping

    @mk.pipeline
    def param(x: Any) -> Any:
        return dag_basic.inc(1)

    @mk.pipeline
    def argument() -> Any:
        return _untyped_dict(mapping)

    @mk.pipeline
    def mapped() -> Any:
        return _untyped_dict.map(x=[looped])

    @mk.pipeline
    def output() -> Any:
        return [dag_basic.inc(1), looped]

    for call, where in (
        (lambda: param.plan(x=looped), "Pipeline 'param', parameter 'x': "),
        (argument.plan, "Step '_untyped_dict' (at "),
        (mapped.plan, "_untyped_dict.map(...) at "),
        (output.plan, "Pipeline 'output' returned a value that holds itself: "),
    ):
        with pytest.raises(mk.HashingError) as info:
            call()
        assert str(info.value).startswith(where)
        assert "that contains itself (a reference cycle)" in str(info.value)


def test_each_node_keeps_the_line_of_the_pipeline_that_made_it() -> None:
    """Step calls, items of a Ref, fan-outs and calls inside a nested pipeline: each node's
    location is the user's line (the frames of mlflowkit in between are skipped)."""
    import inspect

    @mk.pipeline
    def prep(n: int) -> Any:
        return dag_basic.inc(n)

    @mk.pipeline
    def p() -> Any:
        data = dag_basic.make_data(4)
        first = data[0]
        squares = dag_basic.square.map(x=[1, 2])
        return prep(dag_basic.inc(1)), first, squares

    lines, start = inspect.getsourcelines(p.fn)
    line_of = {
        text.strip().split(" = ")[0]: start + i for i, text in enumerate(lines) if " = " in text
    }
    nodes = p.plan().nodes
    expected = {
        "make_data": line_of["data"],
        "make_data.0": line_of["first"],
        "square": line_of["squares"],
        "square[1]": line_of["squares"],
        "inc": start + len(lines) - 1,
        "prep.inc": inspect.getsourcelines(prep.fn)[1] + 2,
    }
    for name, line in expected.items():
        assert nodes[name].location == f"{__file__}:{line}", name
    assert nodes["make_data"].code is p.fn.__code__ and nodes["make_data"].line == line_of["data"]
