"""AdaMerging on a two-number 'tower' whose entropy gradient can be read off by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from taskarith_core.errors import InputError
from taskarith_core.fusion import merge
from taskarith_core.fusion.adamerging import Adaptation, adamerging_coefficients, entropy

W = "visual.proj"
B = "visual.ln_post.bias"
HEAD = torch.eye(2) * 10


def features(state, images):
    return images @ state[W].T + state[B]


def _setup(tau2=0.5):
    # theta_pre maps x = (1, 0) to (1, 1): on the diagonal, where the two logits tie.
    pre = {W: torch.tensor([[1.0, 0.0], [1.0, 0.0]]), B: torch.zeros(2)}
    # tau_1 moves the features towards class 0 (1 + l1, 1); tau_2 back towards the diagonal
    # (1 + l1, 1 + 0.5 l2), so the entropy falls as l1 grows and rises as l2 grows.
    fts = [
        {W: pre[W] + torch.tensor([[1.0, 0.0], [0.0, 0.0]]), B: torch.zeros(2)},
        {W: pre[W] + torch.tensor([[0.0, 0.0], [tau2, 0.0]]), B: torch.zeros(2)},
    ]
    images = torch.tensor([[1.0, 0.0]]).repeat(4, 1)
    return pre, fts, Adaptation(images=[images, images], heads=[HEAD, HEAD], features=features)


def test_entropy_by_hand():
    assert entropy(torch.zeros(3, 2)).item() == pytest.approx(math.log(2))
    assert entropy(torch.tensor([[100.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_one_adam_step_moves_each_coefficient_by_lr_against_its_gradient():
    pre, fts, adaptation = _setup()
    lams = adamerging_coefficients(pre, fts, adaptation, steps=1, lr=1e-3, init=0.3)
    # Adam's first step is lr * sign(-gradient)
    torch.testing.assert_close(lams, torch.tensor([0.301, 0.299]))


def test_coefficients_stay_in_the_unit_interval():
    pre, fts, adaptation = _setup()
    lams = adamerging_coefficients(pre, fts, adaptation, steps=30, lr=0.1, init=0.95)
    assert lams[0] == 1.0 and 0.0 <= lams[1] < 0.95


def test_layer_wise_learns_one_coefficient_per_tensor_and_task():
    pre, fts, adaptation = _setup()
    lams = adamerging_coefficients(pre, fts, adaptation, granularity="layer", steps=1)
    assert lams.shape == (2, 2)
    # the bias task vectors are zero: no gradient, so Adam leaves those coefficients at 0.3
    torch.testing.assert_close(lams[0], torch.tensor([0.301, 0.299]))
    torch.testing.assert_close(lams[1], torch.tensor([0.3, 0.3]))


def test_merge_applies_the_learned_coefficients():
    pre, fts, adaptation = _setup()
    out = merge("adamerging", pre, fts, adaptation=adaptation, steps=1)
    expected = pre[W] + 0.301 * (fts[0][W] - pre[W]) + 0.299 * (fts[1][W] - pre[W])
    torch.testing.assert_close(out[W], expected)
    # the merged model is more confident on the unlabeled images than theta_pre
    logits = F.normalize(features(out, adaptation.images[0]), dim=-1) @ HEAD.T
    assert entropy(logits) < math.log(2)


def test_without_images_the_method_refuses_with_a_sentence():
    pre, fts, _ = _setup()
    with pytest.raises(InputError, match="unlabeled test images"):
        merge("adamerging", pre, fts)
    empty = Adaptation(images=[torch.empty(0, 2)] * 2, heads=[HEAD, HEAD], features=features)
    with pytest.raises(InputError, match="task 1 has no unlabeled images"):
        merge("adamerging", pre, fts, adaptation=empty)


def test_zoo_adaptation_runs_the_tower_and_refuses_a_source_without_images():
    from taskarith_core.models.adaptation import adaptation_for
    from taskarith_core.zoo.source import ZooSource

    source = ZooSource()
    tasks = source.tasks[:2]
    adaptation = adaptation_for(source, tasks, max_samples=8)
    assert [len(x) for x in adaptation.images] == [8, 8]
    pre = source.load_pretrained()
    fts = [source.load_finetuned(t) for t in tasks]
    lams = adamerging_coefficients(pre, fts, adaptation, steps=2, batch_size=4)
    assert lams.shape == (2,) and bool(((lams - 0.3).abs() <= 0.002 + 1e-7).all())

    class NoData:
        name = "no-data"

        def dataset(self, task, split):
            raise InputError("this source has no images")

        def build_visual(self, device="cpu"):
            return source.build_visual(device)

    with pytest.raises(InputError, match="no-data has none for task 'digits'"):
        adaptation_for(NoData(), ["digits"])


def test_page_service_and_sweeps_run_adamerging_on_the_zoo():
    from taskarith_core.analyses.sweeps import prepare_method
    from taskarith_core.runconfig import MERGE_CHOICES, RunConfig
    from taskarith_core.service.explorer import Explorer
    from taskarith_core.zoo.source import ZooSource

    assert "adamerging" in MERGE_CHOICES
    source = ZooSource()
    tasks = source.tasks[:2]
    cfg = RunConfig(method="adamerging", tasks=tasks, params={"steps": 1, "batch_size": 2})
    state = Explorer(source).merged_state(cfg)
    pre, fts = source.load_pretrained(), [source.load_finetuned(t) for t in tasks]
    key = "visual.proj"
    # one Adam step from 0.3 moves each coefficient by at most lr
    moved = state[key] - pre[key] - 0.3 * sum(ft[key] - pre[key] for ft in fts)
    assert float(moved.abs().max()) <= 1.1e-3 * sum(
        float((f[key] - pre[key]).abs().max()) for f in fts
    )
    prep = prepare_method(source, "adamerging-layer", tasks)
    assert prep.params(0.3)["granularity"] == "layer" and "adaptation" in prep.params(0.3)
