"""Method specs: every registered method's declared facts hold for its function."""

import inspect

import pytest
import torch

from taskarith_core.errors import InputError
from taskarith_core.fusion import MERGE_METHODS, NEGATION_METHODS, check_params, merge
from taskarith_core.fusion.params import Param
from taskarith_core.fusion.spec import MethodSpec

K = "visual.w"
ALL = [(name, spec) for name, spec in MERGE_METHODS.items()] + [
    (f"negate {name}", spec) for name, spec in NEGATION_METHODS.items()
]


def _side(spec: MethodSpec, n: int) -> dict:
    gen = torch.Generator().manual_seed(1)
    if spec.needs == "importances":
        return {"importances": [{K: torch.rand(6, generator=gen)} for _ in range(n)]}
    if spec.needs == "masks":
        return {"masks": [{K: torch.rand(6, generator=gen) > 0.5} for _ in range(n)]}
    return {}


@pytest.mark.parametrize("name,spec", ALL, ids=[n for n, _ in ALL])
def test_function_takes_every_declared_parameter(name, spec):
    accepted = set(inspect.signature(spec.fn).parameters)
    assert {p.name for p in spec.params} <= accepted
    assert spec.needs is None or spec.needs in accepted
    assert spec.check({}, 3) == spec.defaults  # the paper's values pass their own checks


@pytest.mark.parametrize("name", [n for n, s in MERGE_METHODS.items() if s.linear_in_lambda])
def test_declared_linear_methods_are_linear_in_lambda(name):
    spec = MERGE_METHODS[name]
    gen = torch.Generator().manual_seed(0)
    pre = {K: torch.randn(6, generator=gen, dtype=torch.float64)}
    fts = [{K: pre[K] + torch.randn(6, generator=gen, dtype=torch.float64)} for _ in range(3)]
    side = _side(spec, 3)
    unit = merge(name, pre, fts, **side, lam=1.0)[K] - pre[K]
    for lam in (0.3, 2.5):
        scaled = merge(name, pre, fts, **side, lam=lam)[K] - pre[K]
        torch.testing.assert_close(scaled, lam * unit)


def test_cross_parameter_rule_sees_the_task_count():
    assert check_params("consensus", {"agreement": 3}, 3)["agreement"] == 3
    with pytest.raises(InputError, match=r"consensus agreement=4 .* \[1, 3\]"):
        check_params("consensus", {"agreement": 4}, 3)


def test_values_are_converted_to_the_parameter_kind():
    full = check_params("consensus", {"agreement": 2.0, "lam": 1}, 3)
    assert full["agreement"] == 2 and isinstance(full["agreement"], int)
    assert full["lam"] == 1.0 and isinstance(full["lam"], float)


def test_per_task_parameter_takes_one_value_per_task():
    assert check_params("consensus", {"tall_lambda": [0.1, 0.2, 0.3]}, 3)["tall_lambda"] == [
        0.1,
        0.2,
        0.3,
    ]
    with pytest.raises(InputError, match="2 values for 3 tasks"):
        check_params("consensus", {"tall_lambda": [0.1, 0.2]}, 3)
    with pytest.raises(InputError, match=r"tall_lambda=-1 is outside \[0, inf\)"):
        check_params("consensus", {"tall_lambda": [0.1, -1, 0.2]}, 3)


def test_negation_parameters_come_from_the_negation_table():
    assert check_params("sta", {}, 1, negation=True)["p"] == 0.9
    assert check_params("sta", {}, 2)["p"] == 0.7
    with pytest.raises(InputError, match="unknown negation method 'ties'"):
        check_params("ties", {}, 1, negation=True)


def test_inconsistent_specs_are_refused_when_written():
    def fn(pre, fts):
        return dict(pre)

    lam = Param("lam", "float", 1.0, "scale")
    with pytest.raises(ValueError, match="no 'lam'"):
        MethodSpec(fn, (), "s", "r", "x", linear_in_lambda=True)
    with pytest.raises(ValueError, match="share a name"):
        MethodSpec(fn, (lam, lam), "s", "r", "x")
    with pytest.raises(ValueError, match="global"):
        MethodSpec(fn, (lam,), "s", "r", "x", streams="global")
    with pytest.raises(ValueError, match="needs"):
        MethodSpec(fn, (lam,), "s", "r", "x", needs="images")
