import pytest
import torch

from taskarith_core.errors import InputError
from taskarith_core.importance import IMPORTANCE_METRICS, compute_importance

K = "visual.transformer.resblocks.0.attn.in_proj_weight"
PRE = {K: torch.tensor([1.0, -2.0, 0.5]), "visual.idx": torch.tensor([1, 2])}
FT = {K: torch.tensor([1.5, -3.0, 0.5]), "visual.idx": torch.tensor([1, 2])}


def test_amp_and_magnitude_by_hand():
    assert compute_importance("amp", PRE, FT)[K].tolist() == [2.25, 9.0, 0.25]
    assert compute_importance("magnitude", PRE, FT)[K].tolist() == [0.5, 1.0, 0.0]
    assert "visual.idx" not in compute_importance("amp", PRE, FT)  # integer buffers are not edited


def test_random_is_seeded_per_task():
    a = compute_importance("random", PRE, FT, task="digits", seed=0)[K]
    assert torch.equal(a, compute_importance("random", PRE, FT, task="digits", seed=0)[K])
    assert not torch.equal(a, compute_importance("random", PRE, FT, task="shapes", seed=0)[K])
    assert not torch.equal(a, compute_importance("random", PRE, FT, task="digits", seed=1)[K])


@pytest.mark.parametrize("metric", ["lp", "lp_amp", "fisher"])
def test_model_metrics_need_a_source(metric):
    with pytest.raises(InputError, match="needs the model"):
        compute_importance(metric, PRE, FT)


def test_unknown_metric_and_registry():
    with pytest.raises(InputError, match="unknown importance metric 'grad'"):
        compute_importance("grad", PRE, FT)
    assert set(IMPORTANCE_METRICS) == {"lp", "amp", "lp_amp", "fisher", "magnitude", "random"}
