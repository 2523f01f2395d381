import pytest
import torch

from taskarith_core.errors import InputError
from taskarith_core.keys import block_index, is_attention_weight, tensor_kind
from taskarith_core.masks import (
    flatten_masks,
    minmax_normalise,
    no_ranking,
    selection_rates,
    sta_fusion_masks,
    sta_negation_mask,
    unflatten_masks,
)

KEY = "visual.transformer.resblocks.1.attn.in_proj_weight"
# normalised: I1 -> [0, .25, .5, 1], I2 -> [1, 1, 0, 1/3], I3 -> [.5, 0, 1, 1]
IMPORTANCES = [
    {KEY: torch.tensor([0.0, 1.0, 2.0, 4.0])},
    {KEY: torch.tensor([3.0, 3.0, 0.0, 1.0])},
    {KEY: torch.tensor([1.0, 0.0, 2.0, 2.0])},
]


def _as_lists(masks):
    return [m[KEY].int().tolist() for m in masks]


def test_minmax_normalise_and_constant_tensor_is_zero():
    assert minmax_normalise(torch.tensor([2.0, 4.0, 3.0])).tolist() == [0.0, 1.0, 0.5]
    assert minmax_normalise(torch.full((3, 2), 7.0)).eq(0).all()


def test_fusion_masks_by_hand_median():
    # p = 0.5, N = 3: T is the middle value; ties at the top (element 3) select nobody
    assert _as_lists(sta_fusion_masks(IMPORTANCES, 0.5)) == [
        [0, 0, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 1, 0],
    ]


def test_fusion_masks_by_hand_p0_p1_and_interpolated():
    assert _as_lists(sta_fusion_masks(IMPORTANCES, 0.0)) == [
        [0, 1, 1, 1],
        [1, 1, 0, 0],
        [1, 0, 1, 1],
    ]
    assert _as_lists(sta_fusion_masks(IMPORTANCES, 1.0)) == [[0, 0, 0, 0]] * 3
    # p = 0.75: L_p = 2.5, T halfway between 2nd and 3rd smallest
    assert _as_lists(sta_fusion_masks(IMPORTANCES, 0.75)) == [
        [0, 0, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 1, 0],
    ]


def test_fusion_masks_constant_importance_never_wins():
    imps = [{KEY: torch.ones(4)}, {KEY: torch.tensor([0.0, 1.0, 2.0, 3.0])}]
    # N = 2, p = 0.5: T = mean of the two normalised values; the constant task's are all 0
    assert _as_lists(sta_fusion_masks(imps, 0.5)) == [[0, 0, 0, 0], [0, 1, 1, 1]]


def test_fusion_masks_eight_tasks_p_high_keeps_only_the_maximum():
    # already normalised (min 0, max 1 present): element 0 rises with t, element 1 falls
    imps = [{KEY: torch.tensor([t / 7, (7 - t) / 7, 0.0, 1.0])} for t in range(8)]
    masks = _as_lists(sta_fusion_masks(imps, 0.9))  # L_p = 7.3: between 7th and 8th value
    assert [m[0] for m in masks] == [0] * 7 + [1]
    assert [m[1] for m in masks] == [1] + [0] * 7
    assert all(m[2] == 0 and m[3] == 0 for m in masks)  # all equal: nobody strictly above


def test_fusion_needs_two_tasks():
    with pytest.raises(InputError, match="at least 2"):
        sta_fusion_masks(IMPORTANCES[:1], 0.5)


def test_negation_mask_by_hand():
    imp = {KEY: torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])}
    assert sta_negation_mask(imp, 0.5)[KEY].int().tolist() == [0, 0, 0, 1, 1]
    assert sta_negation_mask(imp, 0.6)[KEY].int().tolist() == [0, 0, 0, 1, 1]
    assert sta_negation_mask(imp, 0.0)[KEY].int().tolist() == [0, 1, 1, 1, 1]
    assert sta_negation_mask(imp, 1.0)[KEY].int().tolist() == [0, 0, 0, 0, 0]


def test_selection_rates_frame():
    masks = {
        "digits": {KEY: torch.tensor([1, 0, 1, 1]).bool(), "visual.conv1.weight": torch.zeros(2)},
        "shapes": {KEY: torch.tensor([0, 0, 0, 1]).bool(), "visual.conv1.weight": torch.ones(2)},
    }
    rates = selection_rates(masks)
    assert list(rates.columns) == ["task", "tensor", "block", "kind", "numel", "selected", "rate"]
    row = rates[(rates.task == "digits") & (rates.tensor == KEY)].iloc[0]
    assert (row.block, row.kind, row.numel, row.selected, row.rate) == (1, "attention", 4, 3, 0.75)
    conv = rates[(rates.task == "shapes") & (rates.tensor == "visual.conv1.weight")].iloc[0]
    assert (conv.block, conv.kind, conv.rate) == (-1, "embedding", 1.0)


def test_flatten_round_trip():
    masks = {"a": {KEY: torch.tensor([True, False])}, "b": {KEY: torch.tensor([False, True])}}
    back = unflatten_masks(flatten_masks(masks))
    assert back.keys() == masks.keys()
    assert torch.equal(back["b"][KEY], masks["b"][KEY])


@pytest.mark.parametrize(
    "key,block,kind",
    [
        ("visual.transformer.resblocks.0.attn.out_proj.weight", 0, "attention"),
        ("visual.transformer.resblocks.11.mlp.c_fc.bias", 11, "mlp"),
        ("visual.transformer.resblocks.2.ln_1.weight", 2, "layernorm"),
        ("visual.ln_post.weight", -1, "layernorm"),
        ("visual.positional_embedding", -1, "embedding"),
        ("visual.class_embedding", -1, "embedding"),
        ("visual.proj", -1, "other"),
    ],
)
def test_key_parsing(key, block, kind):
    assert block_index(key) == block
    assert tensor_kind(key) == kind


def test_attention_weights_are_projection_weights_only():
    assert is_attention_weight("visual.transformer.resblocks.0.attn.in_proj_weight")
    assert is_attention_weight("visual.transformer.resblocks.0.attn.out_proj.weight")
    assert not is_attention_weight("visual.transformer.resblocks.0.attn.in_proj_bias")
    assert not is_attention_weight("visual.transformer.resblocks.0.mlp.c_fc.weight")


@pytest.mark.parametrize("n_tasks", [2, 3, 6, 8, 20])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0])
def test_fusion_masks_equal_the_torch_quantile_threshold(n_tasks, p):
    gen = torch.Generator().manual_seed(n_tasks)
    imps = [{KEY: torch.rand(40, 30, generator=gen).round(decimals=1)} for _ in range(n_tasks)]
    stacked = torch.stack([minmax_normalise(i[KEY]) for i in imps])
    threshold = torch.quantile(stacked.double(), p, dim=0, interpolation="linear")
    expected = stacked.double() > threshold  # ties included: values are rounded to 0.1 steps
    got = torch.stack([m[KEY] for m in sta_fusion_masks(imps, p)])
    assert torch.equal(got, expected)


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 0.9, 0.99, 1.0])
def test_negation_mask_equals_the_torch_quantile_threshold(p):
    values = torch.rand(5000, generator=torch.Generator().manual_seed(1)).round(decimals=2)
    normalised = minmax_normalise(values)
    expected = normalised.double() > torch.quantile(normalised.double(), p)
    assert torch.equal(sta_negation_mask({KEY: values}, p)[KEY], expected)


def test_stacked_normalisation_equals_per_tensor():
    from taskarith_core.masks import _stack_normalised

    imps = [
        torch.tensor([[1.0, 5.0], [3.0, 2.0]]),
        torch.full((2, 2), 4.0),
        torch.tensor([[0.0, -1.0], [2.0, 8.0]]),
    ]
    expected = torch.stack([minmax_normalise(i) for i in imps])
    assert torch.equal(_stack_normalised(imps), expected)


def _with_noise_third(seed: int) -> torch.Tensor:
    """An in_proj_bias-like importance: q and v thirds ranked, the key third float noise."""
    gen = torch.Generator().manual_seed(seed)
    values = torch.rand(12, generator=gen) + 0.5
    values[4:8] = torch.rand(4, generator=gen) * 1e-7 * values.max()  # below 2^-20 of the max
    return values


def test_noise_below_the_floor_normalises_to_zero():
    values = _with_noise_third(0)
    normalised = minmax_normalise(values)
    assert normalised[4:8].eq(0).all()
    assert normalised[[0, 1, 2, 3, 8, 9, 10, 11]].gt(0).sum() >= 7  # the rest keeps its ranking
    assert no_ranking(values).tolist() == [False] * 4 + [True] * 4 + [False] * 4
    assert no_ranking(torch.full((3,), 2.0)).all()  # constant: no ranking anywhere
    # just above the floor still ranks
    assert not no_ranking(torch.tensor([1.0, 2.0**-19]))[1]


def test_fusion_masks_ignore_noise_only_entries():
    imps = [{KEY: _with_noise_third(seed)} for seed in range(4)]
    masks = sta_fusion_masks(imps, 0.5)
    for mask in masks:
        assert not mask[KEY][4:8].any()  # noise decides nothing: no task is selected there
    # the ranked entries still select the tasks above the median
    assert sum(int(m[KEY][0]) for m in masks) == 2


def test_selection_rates_count_entries_without_ranking():
    imps = {"a": {KEY: _with_noise_third(0)}, "b": {KEY: torch.full((12,), 1.0)}}
    masks = dict(zip(imps, sta_fusion_masks(list(imps.values()), 0.5)))
    table = selection_rates(masks, imps)
    assert table.set_index("task")["no_ranking"].to_dict() == {"a": 4, "b": 12}
    assert "no_ranking" not in selection_rates(masks)
