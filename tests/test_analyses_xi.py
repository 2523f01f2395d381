"""Disentanglement error: the maths on a linear toy model, the grid, the summary, the mixer."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from taskarith_core.analyses._common import TowerMixer
from taskarith_core.analyses.xi import (
    DISTANCES,
    XI_PRESETS,
    XiGrid,
    xi_from_runner,
    xi_summary,
)
from taskarith_core.errors import InputError

DIM, CLASSES = 6, 4


def _linear_runner(w0, t1, t2):
    """f(x; W) = x @ W, logits = f @ head.T: a model whose xi is known in closed form."""

    def run(a1, a2, images, head):
        return images @ (w0 + a1 * t1 + a2 * t2) @ head.T

    return run


def _data(gen, support: slice):
    x = torch.zeros(40, DIM)
    x[:, support] = torch.randn(40, support.stop - support.start, generator=gen)
    return x, torch.randn(CLASSES, DIM, generator=gen)


@pytest.mark.parametrize("distance", sorted(DISTANCES))
def test_disentangled_vectors_give_zero_error(distance):
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(DIM, DIM, generator=gen)
    t1, t2 = torch.zeros(DIM, DIM), torch.zeros(DIM, DIM)
    t1[:3] = torch.randn(3, DIM, generator=gen)  # tau1 only reads inputs of task 1's support
    t2[3:] = torch.randn(3, DIM, generator=gen)
    data = [_data(gen, slice(0, 3)), _data(gen, slice(3, 6))]
    frame = xi_from_runner(_linear_runner(w0, t1, t2), data, [-1.0, 0.0, 1.5], distance)
    assert len(frame) == 9
    assert frame["xi"].abs().max() < 1e-5


def _brute_force(run, data, alphas, dist):
    (x1, h1), (x2, h2) = data
    out = {}
    for a1 in alphas:
        for a2 in alphas:
            e1 = dist(run(a1, 0.0, x1, h1), run(a1, a2, x1, h1)).mean()
            e2 = dist(run(0.0, a2, x2, h2), run(a1, a2, x2, h2)).mean()
            out[(a1, a2)] = float(e1 + e2)
    return out


@pytest.mark.parametrize("distance", sorted(DISTANCES))
def test_entangled_grid_matches_definition(distance):
    gen = torch.Generator().manual_seed(1)
    w0, t1, t2 = (torch.randn(DIM, DIM, generator=gen) for _ in range(3))
    data = [_data(gen, slice(0, 6)), _data(gen, slice(0, 6))]
    data[1] = (data[1][0], torch.randn(CLASSES + 1, DIM, generator=gen))  # heads may differ
    alphas = [-2.0, -0.5, 0.0, 1.0, 2.0]
    run = _linear_runner(w0, t1, t2)
    frame = xi_from_runner(run, data, alphas, distance)
    expected = _brute_force(run, data, alphas, DISTANCES[distance])
    got = {(r.alpha1, r.alpha2): r.xi for r in frame.itertuples()}
    assert got == pytest.approx(expected, abs=1e-5)
    assert frame["xi"].max() > 0.05  # the toy vectors really interfere
    # Each task's term vanishes where the other coefficient is zero.
    assert frame.loc[frame["alpha2"] == 0.0, "xi_task1"].abs().max() < 1e-6
    assert frame.loc[frame["alpha1"] == 0.0, "xi_task2"].abs().max() < 1e-6


@pytest.mark.parametrize("alphas", [[-1.0, 0.0, 1.0], [-1.0, 0.5, 1.0]])
def test_each_model_is_evaluated_once_per_dataset(alphas):
    gen = torch.Generator().manual_seed(3)
    w0, t1, t2 = (torch.randn(DIM, DIM, generator=gen) for _ in range(3))
    data = [_data(gen, slice(0, 6)), _data(gen, slice(0, 6))]
    seen = []
    linear = _linear_runner(w0, t1, t2)

    def run(a1, a2, images, head):
        seen.append((a1, a2, len(images)))
        return linear(a1, a2, images, head)

    frame = xi_from_runner(run, data, alphas)
    assert len({(a1, a2) for a1, a2, _ in seen}) == len(seen) or 0.0 not in alphas
    images = sum(n for *_, n in seen)
    grid = len(alphas) ** 2 * 80  # every grid model on D_1 and D_2 (40 images each)
    extra = 0 if 0.0 in alphas else 2 * len(alphas) * 40  # singles off the grid: one half each
    assert images == grid + extra
    expected = _brute_force(linear, data, alphas, DISTANCES["prediction"])
    assert {(r.alpha1, r.alpha2): r.xi for r in frame.itertuples()} == pytest.approx(expected)


def test_parallel_rows_give_the_same_grid():
    gen = torch.Generator().manual_seed(4)
    w0, t1, t2 = (torch.randn(DIM, DIM, generator=gen) for _ in range(3))
    data = [_data(gen, slice(0, 6)), _data(gen, slice(0, 6))]
    run = _linear_runner(w0, t1, t2)
    alphas = [-1.0, 0.0, 0.5, 1.0]
    calls = []
    serial = xi_from_runner(run, data, alphas, "kl")
    parallel = xi_from_runner(
        run, data, alphas, "kl", lambda *a: calls.append(a), workers=[run, run]
    )
    pd.testing.assert_frame_equal(serial, parallel)
    assert [c[0] for c in calls] == [1, 2, 3, 4, 5] and calls[-1][1] == 5


def test_progress_reports_each_row():
    gen = torch.Generator().manual_seed(2)
    w0, t1, t2 = (torch.randn(DIM, DIM, generator=gen) for _ in range(3))
    data = [_data(gen, slice(0, 6)), _data(gen, slice(0, 6))]
    calls = []
    xi_from_runner(
        _linear_runner(w0, t1, t2), data, [0.0, 1.0, 2.0], progress=lambda *a: calls.append(a)
    )
    assert [c[:2] for c in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_distances_are_zero_on_identical_outputs_and_positive_otherwise():
    a = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    b = torch.tensor([[0.0, 2.0, -1.0], [0.0, 1.0, 0.4]])
    assert DISTANCES["prediction"](a, a).sum() == 0
    assert DISTANCES["prediction"](a, b).tolist() == [1.0, 0.0]
    assert DISTANCES["kl"](a, a).abs().max() < 1e-6
    assert (DISTANCES["kl"](a, b) > 0).all()


def test_grid_presets_and_validation():
    ortiz = XI_PRESETS["ortiz"].alphas()
    assert len(ortiz) == 15 and ortiz[0] == -2.0 and ortiz[-1] == 2.0 and 0.0 in ortiz
    talos = XI_PRESETS["talos"].alphas()
    assert len(talos) == 20 and talos[0] == -3.0 and talos[-1] == 3.0
    with pytest.raises(InputError, match="positive"):
        XiGrid(0, -1, 1).validate()
    with pytest.raises(InputError, match="positive"):
        XiGrid(-3, -1, 1).validate()
    with pytest.raises(InputError, match="reversed"):
        XiGrid(5, 2, -2).validate()


def test_unknown_distance_is_refused():
    with pytest.raises(InputError, match="unknown xi distance"):
        xi_from_runner(lambda *a: None, [(None, None), (None, None)], [0.0], "cosine")


def test_summary_mean_and_area_below_threshold():
    alphas = [-1.0, 0.0, 1.0]
    rows = [(a1, a2, 0.0 if a1 == 0 or a2 == 0 else 0.5) for a1 in alphas for a2 in alphas]
    frame = pd.DataFrame(rows, columns=["alpha1", "alpha2", "xi"]).assign(
        label="zoo/full", task1="a", task2="b", distance="prediction"
    )
    summary = xi_summary(frame, threshold=0.1)
    assert len(summary) == 1
    row = summary.iloc[0]
    assert row["mean_xi"] == pytest.approx(4 * 0.5 / 9)
    assert row["fraction_below"] == pytest.approx(5 / 9)
    assert row["area_below"] == pytest.approx(5 / 9 * 4.0)  # the grid spans [-1, 1]^2
    with pytest.raises(InputError):
        xi_summary(frame, threshold=-1)


class _Tower(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 2)
        self.ln = nn.LayerNorm(2)


def test_tower_mixer_sets_combinations_in_place():
    tower = _Tower()
    pre = {f"visual.{k}": v.detach().clone() + 1.0 for k, v in tower.state_dict().items()}
    tau1 = {"visual.proj.weight": torch.ones(2, 3)}
    tau2 = {"visual.proj.weight": torch.full((2, 3), 2.0), "visual.ln.bias": torch.ones(2)}
    mixer = TowerMixer(tower, pre, [tau1, tau2])
    # Untouched tensors hold theta_pre from the start.
    assert torch.equal(tower.ln.weight, pre["visual.ln.weight"])
    mixer.set((0.5, -1.0))
    assert torch.allclose(tower.proj.weight, pre["visual.proj.weight"] + 0.5 - 2.0)
    assert torch.allclose(tower.ln.bias, pre["visual.ln.bias"] - 1.0)
    assert torch.equal(tower.proj.bias, pre["visual.proj.bias"])
    mixer.set((0.0, 0.0))
    assert torch.allclose(tower.proj.weight, pre["visual.proj.weight"])


# ----------------------------------------------------------------------------- on a model source


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.tiny_source import make_tiny_source

    return make_tiny_source(tmp_path_factory.mktemp("tiny_xi"), n_tasks=2)


def test_grid_on_a_source_is_cached_on_disk(tiny, tmp_path, monkeypatch):
    from taskarith_core.analyses import xi

    grid = XiGrid(3, -1.0, 1.0)
    first = xi.disentanglement_grid(
        tiny, "task0", "task1", grid=grid, samples=16, cache_dir=tmp_path, label="tiny"
    )
    assert len(first) == 9 and set(first["task1"]) == {"task0"}
    assert first.loc[(first.alpha1 == 0) & (first.alpha2 == 0), "xi"].iloc[0] == 0.0
    assert len(list((tmp_path / "analyses" / "xi").glob("*.csv"))) == 1

    def boom(*_args, **_kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(xi, "_compute_grid", boom)
    again = xi.disentanglement_grid(
        tiny, "task0", "task1", grid=grid, samples=16, cache_dir=tmp_path, label="tiny"
    )
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(AssertionError, match="recomputed"):  # another sample count: new key
        xi.disentanglement_grid(tiny, "task0", "task1", grid=grid, samples=8, cache_dir=tmp_path)


def test_worker_threads_match_a_single_tower(tiny):
    from taskarith_core.analyses.xi import disentanglement_grid

    kwargs = dict(grid=XiGrid(3, -1.0, 1.0), samples=16, use_cache=False, distance="kl")
    one = disentanglement_grid(tiny, "task0", "task1", **kwargs)
    two = disentanglement_grid(tiny, "task0", "task1", workers=2, **kwargs)
    pd.testing.assert_frame_equal(one, two)
    with pytest.raises(InputError, match="worker"):
        disentanglement_grid(tiny, "task0", "task1", workers=0, **kwargs)


def test_masked_vectors_change_the_grid(tiny, tmp_path):
    from taskarith_core.analyses._common import source_task_vectors
    from taskarith_core.analyses.xi import disentanglement_grid

    vecs = source_task_vectors(tiny, ["task0", "task1"])
    zero2 = {k: torch.zeros_like(v) for k, v in vecs["task1"].items()}
    frame = disentanglement_grid(
        tiny,
        "task0",
        "task1",
        vectors=[vecs["task0"], zero2],
        grid=XiGrid(3, -1.0, 1.0),
        samples=16,
        use_cache=False,
        distance="kl",
    )
    # With tau2 = 0 the combined model is the single-task model 1: task 1's term vanishes.
    assert frame["xi_task1"].abs().max() < 1e-6


def test_bad_input_is_refused_before_any_work(tiny, tmp_path):
    from taskarith_core.analyses.xi import disentanglement_grid

    bad = [
        ({"grid": XiGrid(0, -1.0, 1.0)}, "positive"),
        ({"grid": XiGrid(5, 1.0, -1.0)}, "reversed"),
        ({"samples": 0}, "positive number of samples"),
        ({"distance": "l2"}, "unknown xi distance"),
        ({"vectors": [{"visual.nope": torch.zeros(2)}, {}]}, "not in the pretrained"),
    ]
    for kwargs, message in bad:
        with pytest.raises(InputError, match=message):
            disentanglement_grid(tiny, "task0", "task1", cache_dir=tmp_path, **kwargs)
    with pytest.raises(InputError, match="unknown task"):
        disentanglement_grid(tiny, "task0", "missing", cache_dir=tmp_path)
    assert not (tmp_path / "analyses").exists()


def test_samples_beyond_the_split_use_the_whole_split(tiny, tmp_path):
    import warnings

    from taskarith_core.analyses.xi import disentanglement_grid

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the papers' 2048 on a smaller split is not a mistake
        frame = disentanglement_grid(
            tiny, "task0", "task1", grid=XiGrid(2, 0.0, 1.0), samples=10_000, use_cache=False
        )
    assert len(frame) == 4


def test_xi_on_the_representation_compares_tower_outputs_with_kl(tiny):
    from taskarith_core.analyses._common import TowerMixer, source_task_vectors
    from taskarith_core.analyses.xi import _tower_runner, disentanglement_grid

    kwargs = dict(grid=XiGrid(3, -1.0, 1.0), samples=16, use_cache=False, distance="kl")
    rep = disentanglement_grid(tiny, "task0", "task1", on="representation", **kwargs)
    head = disentanglement_grid(tiny, "task0", "task1", **kwargs)
    assert rep.loc[(rep.alpha1 == 0) & (rep.alpha2 == 0), "xi"].iloc[0] == 0.0
    assert not rep["xi"].equals(head["xi"]) and (rep["xi"] >= 0).all()
    with pytest.raises(InputError, match="use KL"):
        disentanglement_grid(tiny, "task0", "task1", on="representation", distance="prediction")
    with pytest.raises(InputError, match="head or representation"):
        disentanglement_grid(tiny, "task0", "task1", on="logits", distance="kl")
    pre = tiny.load_pretrained()
    vectors = list(source_task_vectors(tiny, ["task0", "task1"], pre).values())
    mixer = TowerMixer(tiny.build_visual(), pre, vectors)
    images = tiny.dataset("task0", "test")[0][0][None]
    width = tiny.head("task0").shape[1]
    out = _tower_runner(mixer, 8, "cpu", raw=True)(1.0, 0.0, images, torch.eye(width))
    with torch.no_grad():
        assert torch.allclose(out, mixer.set((1.0, 0.0))(images), atol=1e-5)
