"""The added methods give the same model streamed from files as merged in memory."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from taskarith_core.fusion import merge
from taskarith_core.streaming import stream_merge

KEYS = {
    "visual.conv1.weight": (8, 3, 2, 2),
    "visual.transformer.resblocks.0.attn.in_proj_weight": (24, 8),
    "visual.transformer.resblocks.0.attn.in_proj_bias": (24,),
    "visual.ln_post.weight": (8,),
}

CASES = [
    ("average", {}),
    ("average", {"dare_rate": 0.3, "dare_seed": 4}),
    ("task_arithmetic", {"lam": 0.4, "dare_rate": 0.5, "dare_seed": 1}),
    ("ties", {"keep": 0.2, "lam": 1.0, "dare_rate": 0.5, "dare_seed": 2}),
    ("pcb", {"ratio": 0.1, "lam": 1.2}),
    ("breadcrumbs", {"keep": 0.3, "outliers": 0.1, "lam": 0.5}),
    ("tsv_m", {"lam": 0.8}),
    ("iso_c", {"lam": 1.3}),
    ("iso_cts", {"lam": 1.0, "common": 0.5}),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    gen = torch.Generator().manual_seed(0)
    pre = {k: torch.randn(s, generator=gen) for k, s in KEYS.items()}
    fts = [{k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in pre.items()}]
    fts += [{k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in pre.items()}]
    fts += [{k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in pre.items()}]
    save_file(pre, tmp / "pre.safetensors")
    for t, ft in enumerate(fts):
        save_file(ft, tmp / f"ft{t}.safetensors")
    return tmp, pre, fts


@pytest.mark.parametrize("method,params", CASES, ids=[f"{m}-{len(p)}" for m, p in CASES])
def test_streamed_equals_in_memory(models, method, params):
    tmp, pre, fts = models
    out = tmp / f"{method}.safetensors"
    paths = [tmp / f"ft{t}.safetensors" for t in range(3)]
    stream_merge(method, tmp / "pre.safetensors", paths, out, params=params)
    got = load_file(out)
    expected = merge(method, pre, fts, **params)
    for key in KEYS:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0)


def test_adamerging_is_refused_on_files_alone(models):
    from taskarith_core.errors import InputError

    tmp, _, _ = models
    paths = [tmp / f"ft{t}.safetensors" for t in range(3)]
    with pytest.raises(InputError, match="unlabeled test images"):
        stream_merge("adamerging", tmp / "pre.safetensors", paths, tmp / "ada.safetensors")
    assert not (tmp / "ada.safetensors").exists()


def test_every_published_merge_method_can_be_measured():
    """Each merge method of the papers' tables is a method the sweeps and reproduce run."""
    from taskarith_core.analyses.sweeps import METHODS
    from taskarith_core.real.reproduce import published

    paradigms = {"zeroshot", "l-lora", "linearized-ft", "lota"}  # fine-tuning, not merging
    assert set(published()["method"]) - paradigms <= set(METHODS)


@pytest.mark.parametrize("name", ["avg", "avg+dare", "ta+dare", "ties+dare", "pcb", "tsv-m"])
def test_sweep_entries_merge_the_zoo(name):
    from taskarith_core.analyses.sweeps import METHODS, prepare_method
    from taskarith_core.zoo.source import ZooSource

    source = ZooSource()
    prep = prepare_method(source, name, source.tasks[:3])
    state = prep.merge(METHODS[name].grid[-1])
    assert all(bool(v.isfinite().all()) for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize(
    "method,flags,params",
    [
        ("average", ["--dare-rate", "0.2"], {"dare_rate": 0.2}),
        ("pcb", ["--ratio", "0.1", "--lam", "1.0"], {"ratio": 0.1, "lam": 1.0}),
        ("breadcrumbs", ["--keep", "0.3", "--outliers", "0.05"], {"keep": 0.3, "outliers": 0.05}),
        ("iso_cts", ["--common", "0.5", "--lam", "1.2"], {"common": 0.5, "lam": 1.2}),
    ],
)
def test_cli_runs_the_added_methods(models, method, flags, params):
    from taskarith_core.cli import main

    tmp, pre, fts = models
    out = tmp / f"cli-{method}.safetensors"
    fts_paths = [str(tmp / f"ft{t}.safetensors") for t in range(3)]
    argv = ["merge", "--method", method, "--pretrained", str(tmp / "pre.safetensors")]
    assert main([*argv, "--finetuned", *fts_paths, "--out", str(out), *flags]) == 0
    expected = merge(method, pre, fts, **params)
    got = load_file(out)
    for key in KEYS:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0)


def test_cli_refuses_adamerging_on_files(models, capsys):
    from taskarith_core.cli import main

    tmp, _, _ = models
    fts_paths = [str(tmp / f"ft{t}.safetensors") for t in range(3)]
    argv = ["merge", "--method", "adamerging", "--pretrained", str(tmp / "pre.safetensors")]
    code = main([*argv, "--finetuned", *fts_paths, "--out", str(tmp / "a.safetensors")])
    assert code == 2 and "unlabeled test images" in capsys.readouterr().err
