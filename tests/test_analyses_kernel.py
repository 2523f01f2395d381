"""Post-hoc linearisation: exact at tau = 0, first-order for small tau, and the test table."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taskarith_core.analyses.kernel import kernel_test, linearised_logits, slow_attention_path
from taskarith_core.errors import InputError
from tests.tiny_source import make_tiny_source


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_source(tmp_path_factory.mktemp("tiny_kernel"), n_tasks=2)


def _setup(tiny):
    from taskarith_core.analyses._common import source_task_vectors
    from taskarith_core.models.evaluation import split_tensors

    pre = tiny.load_pretrained()
    tau = source_task_vectors(tiny, ["task0"], pre)["task0"]
    images, _ = split_tensors(tiny, "task0", "test", max_samples=16)
    return tiny.build_visual("cpu"), pre, tau, images, tiny.head("task0")


def test_linearisation_is_exact_at_zero_and_first_order_for_small_steps(tiny):
    visual, pre, tau, images, head = _setup(tiny)
    zero, nonlinear, linear = linearised_logits(visual, pre, {}, images, head, batch_size=8)
    assert torch.allclose(zero, nonlinear, atol=1e-5) and torch.allclose(zero, linear, atol=1e-5)
    errors = []
    for scale in (1e-2, 5e-3):
        small = {k: scale * v for k, v in tau.items()}
        zero, nonlinear, linear = linearised_logits(visual, pre, small, images, head)
        errors.append(float((nonlinear - linear).abs().max()))
        assert float((nonlinear - zero).abs().max()) > 10 * errors[-1]  # the step does something
    # Taylor remainder is second order: halving the step quarters the error (allow slack).
    assert errors[1] < errors[0] / 2.5


def test_jvp_matches_a_finite_difference(tiny):
    visual, pre, tau, images, head = _setup(tiny)
    eps = 1e-3
    small = {k: eps * v for k, v in tau.items()}
    back = {k: -eps * v for k, v in tau.items()}
    zero, plus, linear = linearised_logits(visual, pre, small, images, head)
    _, minus, _ = linearised_logits(visual, pre, back, images, head)
    central = (plus - minus) / 2  # = J tau eps + O(eps^3) in logit space
    assert torch.allclose(linear - zero, central, atol=5e-4)


def test_attention_switch_is_restored():
    attn = nn.MultiheadAttention(8, 2).eval()
    with slow_attention_path(attn):
        assert attn.training
    assert not attn.training


def test_kernel_table(tiny):
    frame = kernel_test(tiny, samples=16, label="tiny")
    assert list(frame["task"]) == ["task0", "task1"]
    assert set(frame.columns) >= {"zeroshot", "nonlinear", "linearised", "gap", "samples"}
    assert (frame["nonlinear"] == 1.0).all()  # tiny theta_t labels its own data
    assert frame["gap"].tolist() == pytest.approx(
        (frame["nonlinear"] - frame["linearised"]).tolist()
    )
    with pytest.raises(InputError, match="positive number of samples"):
        kernel_test(tiny, samples=0)
    with pytest.raises(InputError, match="no task vector"):
        kernel_test(tiny, ["task0"], vectors={"task1": {}})
