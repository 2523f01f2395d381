"""The page's callbacks called directly (no browser) on the tiny open_clip source."""

from __future__ import annotations

import json
import os

import gradio as gr
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from taskarith_core.errors import InputError
from taskarith_core.fusion import merge
from taskarith_core.models.evaluation import evaluate_states
from taskarith_core.runconfig import RunConfig
from taskarith_core.service.results import sta_fraction_kept
from taskarith_core.service.sources import clear_explorers, register_source
from taskarith_core.ui import forget_tab, masks_tab, merge_tab
from taskarith_core.ui.common import config_from_source, user_errors
from taskarith_core.ui.page import build_page, load_source
from tests.tiny_source import make_tiny_source

TASKS = ["task0", "task1", "task2"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Source settings of a registered tiny source (3 tasks + control)."""
    root = tmp_path_factory.mktemp("tiny_ui")
    source = make_tiny_source(root, n_tasks=3)
    settings = {"source": "zoo", "paradigm": "full", "zoo_root": str(root), "device": "cpu"}
    register_source(config_from_source(settings), source)
    with pytest.MonkeyPatch.context() as patch:  # disk caches of this module stay in tmp
        patch.setenv("TASKARITH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield settings
    clear_explorers()


def _merge_cfg(base, method="task_arithmetic", tasks=TASKS, importance="lp", seed=0, **params):
    """The Merge tab's config with these parameter values (the method's others at defaults)."""
    values = merge_tab.param_values(method, params)
    return merge_tab.merge_config(base, tasks, method, importance, 8, seed, 0, "test", *values)


def _service(base):
    from taskarith_core.service.sources import explorer_for

    return explorer_for(config_from_source(base))


@pytest.mark.parametrize(
    "method", ["sta", "task_arithmetic", "ties", "dare", "consensus", "masked_arithmetic"]
)
def test_every_method_gives_a_per_task_table_and_figure(base, method):
    cfg = _merge_cfg(
        base,
        method,
        importance="fisher" if method == "masked_arithmetic" else "lp",
    )
    table, figure, mean, history, frame = merge_tab.run_merge(cfg, [])
    assert list(table["task"]) == TASKS
    assert table[["zeroshot", "finetuned", "merged"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (table["finetuned"] == 1.0).all()  # the tiny source's theta_t fits its own labels
    assert len(figure.data) == 6  # 3 series x (absolute, normalised)
    assert "Mean merged accuracy" in mean and method in mean
    assert len(history) == 1 and frame.loc[0, "method"] == method


def test_merged_accuracy_is_the_engine_merge_evaluated(base):
    cfg = _merge_cfg(base, "task_arithmetic", lam=0.4)
    table, *_ = merge_tab.run_merge(cfg, [])
    service = _service(base)
    state = merge(
        "task_arithmetic", service.pretrained(), [service.finetuned(t) for t in TASKS], lam=0.4
    )
    direct = evaluate_states(service.source, {"m": state}, tasks=TASKS)
    assert table["merged"].tolist() == pytest.approx(direct["accuracy"].tolist())


def test_history_accumulates_runs_side_by_side(base):
    history: list[dict] = []
    for lam in (0.1, 0.5):
        *_, history, frame = merge_tab.run_merge(_merge_cfg(base, lam=lam), history)
    assert frame["run"].tolist() == [1, 2]
    assert [s.split(",")[0] for s in frame["settings"]] == ["lam=0.1", "lam=0.5"]
    assert set(TASKS) <= set(frame.columns)


def test_moving_p_recomputes_masks_not_importances(base):
    service = _service(base)
    seed = 7  # keys no other test uses: the counts below see only this test's work
    merge_tab.run_merge(_merge_cfg(base, "sta", p=0.2, seed=seed), [])
    before = dict(service.counts)
    cfg = masks_tab.mask_config(base, TASKS, "sta", "lp", 0.9, 0.9, 8, seed)
    masks_tab.mask_views(cfg, "all")
    merge_tab.run_merge(_merge_cfg(base, "sta", p=0.9, seed=seed), [])
    after = dict(service.counts)
    assert after["importance"] == before["importance"]
    assert after["evaluation"] == before["evaluation"] + 1
    merge_tab.run_merge(_merge_cfg(base, "sta", p=0.9, lam=1.7, seed=seed), [])  # STA has no lam
    assert dict(service.counts)["evaluation"] == after["evaluation"]
    masks_before = dict(service.counts)["masks"]
    merge_tab.run_merge(_merge_cfg(base, "sta", p=0.6, seed=seed), [])  # floor(2 * 0.6) = 1
    cfg = masks_tab.mask_config(base, TASKS, "sta", "lp", 0.55, 0.9, 8, seed)
    masks_tab.mask_views(cfg, "all")
    assert dict(service.counts)["evaluation"] == after["evaluation"]
    assert dict(service.counts)["masks"] == masks_before


def test_fraction_kept_beside_p_matches_the_masks(base):
    for p in (0.0, 0.3, 0.5, 0.8, 1.0):
        cfg = masks_tab.mask_config(base, TASKS, "sta", "random", p, 0.9, 8, 0)
        masks = _service(base).masks(cfg)
        kept = sum(int(m.sum()) for mask in masks.values() for m in mask.values())
        total = sum(m.numel() for mask in masks.values() for m in mask.values())
        assert kept / total == pytest.approx(sta_fraction_kept(p, 3), abs=1e-3)
    assert "66.67%" in merge_tab.fraction_text("sta", {"p": 0.3}, 3)
    assert "only 2 distinct masks exist, at p = 0, 0.5" in merge_tab.fraction_text(
        "sta", {"p": 0.3}, 3
    )
    assert "90%" in merge_tab.fraction_text("masked_arithmetic", {"sparsity": 0.1}, 3)
    assert "20%" in merge_tab.fraction_text("ties", {"keep": 0.2, "lam": 1.0}, 3)


def test_masks_views_heatmap_iou_and_drill_down(base):
    cfg = masks_tab.mask_config(base, TASKS, "sta", "lp", 0.5, 0.9, 8, 0)
    rates, summary, tensors = masks_tab.mask_views(cfg, "all")
    iou = masks_tab.iou_view(cfg)
    assert {trace.type for trace in rates.data} == {"heatmap"}
    assert len(rates.data) >= 3  # one panel per tensor kind
    attention, *_ = masks_tab.mask_views(cfg, "attention")
    assert len(attention.data) == 1
    assert iou.data[0].type == "heatmap"
    assert summary.startswith("Kept per task")
    weight = next(t for t in tensors if t.endswith("attn.in_proj_weight"))
    images = masks_tab.mask_images(cfg, weight)
    assert len(images) == 3 and images[0][0].dtype.name == "uint8"
    assert set(images[0][0].ravel().tolist()) <= {0, 255}
    with pytest.raises(InputError, match="not in the masks"):
        masks_tab.mask_images(cfg, "visual.nope")
    with pytest.raises(InputError, match="at least two tasks"):
        masks_tab.mask_config(base, ["task0"], "sta", "lp", 0.5, 0.9, 8, 0)


def test_forget_with_lambda_zero_changes_nothing(base):
    cfg = forget_tab.forget_config(base, "task1", "task_arithmetic", "lp", 0.0, 0.9, 8, 0, 0)
    table, text = forget_tab.run_forget(cfg)
    assert table["role"].tolist() == ["target", "control"]
    assert table["after"].tolist() == pytest.approx(table["before"].tolist())
    assert "keeps >= 95%" in text


def test_forget_lowers_the_target_and_shows_images(base):
    cfg = forget_tab.forget_config(base, "task0", "task_arithmetic", "lp", 1.5, 0.9, 8, 0, 0)
    table, _ = forget_tab.run_forget(cfg)
    assert table.loc[0, "after"] < table.loc[0, "before"]
    gallery = forget_tab.forget_gallery(cfg, count=6)
    assert len(gallery) == 6
    image, caption = gallery[0]
    assert image.ndim == 3 and image.shape[2] == 3
    before, after = caption.split(" -> ")
    names = _service(base).source.classnames("task0")
    assert before[:-1] in names and after[:-1] in names
    assert before[-1] in "\u2713\u2717" and after[-1] in "\u2713\u2717"
    assert forget_tab.gallery_caption(["M", "K"], 0, 0, 1) == "M\u2713 -> K\u2717"
    long = forget_tab.gallery_caption(["a" * 30, "b"], 1, 0, 1)
    assert len(long) < 20 and long.endswith("b\u2713")
    sta = forget_tab.forget_config(base, "task0", "sta", "lp", 1.0, 0.5, 8, 0, 0)
    figure = forget_tab.negation_curve(sta)
    assert any(getattr(s, "line", None) is not None for s in figure.layout.shapes)


def test_user_mistakes_are_sentences(base):
    with pytest.raises(InputError, match="tick at least two"):
        merge_tab.merge_config(base, [], "sta", "lp", 8, 0, 0, "test")
    with pytest.raises(InputError, match="tick two or more tasks"):
        merge_tab.run_merge(_merge_cfg(base, tasks=["task0"]), [])
    with pytest.raises(InputError, match="outside"):
        _merge_cfg(base, "sta", p=1.2)
    with pytest.raises(InputError, match="not in"):
        merge_tab.run_merge(_merge_cfg(base, tasks=["task0", "nope"]), [])
    with pytest.raises(InputError, match="manifest .* not found"):
        load_source("manifest", "full", "/no/such/manifest.yaml", base)
    with pytest.raises(InputError, match="no path"):
        load_source("manifest", "full", " ", base)


def test_user_errors_shows_gr_error_without_traceback():
    @user_errors
    def bad_input():
        raise InputError("p=2 is outside [0, 1]; choose a value in [0, 1]")

    @user_errors
    def bug():
        raise KeyError("oops")

    with pytest.raises(gr.Error) as info:
        bad_input()
    assert info.value.message.startswith("p=2 is outside")
    with pytest.raises(gr.Error) as info:
        bug()
    assert "KeyError" in info.value.message and "Traceback" not in info.value.message


def test_uploaded_config_restores_the_controls(base):
    cfg = _merge_cfg(base, "ties", keep=0.35, lam=0.9)
    values = merge_tab.controls_from_config(RunConfig.from_json(cfg.to_json()))
    source, *controls = values
    again = merge_tab.merge_config(source, *controls)
    assert again == cfg


def test_merged_model_download_records_the_config(base):
    cfg = _merge_cfg(base, "task_arithmetic", lam=0.25)
    path = merge_tab.save_merged_model(cfg.to_dict())
    with safe_open(path, "pt") as handle:
        assert RunConfig.from_json(handle.metadata()["run_config"]) == cfg
        key = next(iter(handle.keys()))
        assert isinstance(handle.get_tensor(key), torch.Tensor)
    with pytest.raises(InputError, match="press Run first"):
        merge_tab.save_merged_model(None)


def test_page_builds_with_the_source_tasks(base):
    demo = build_page(base)
    names = [block.choices for block in demo.blocks.values() if isinstance(block, gr.CheckboxGroup)]
    assert names and all([c[0] for c in choices] == TASKS for choices in names)


def test_masks_figures_as_html_on_demand(base):
    files = masks_tab.masks_html(base, "all", TASKS, "sta", "lp", 0.5, 0.9, 8, 0)
    names = [f.rsplit("/", 1)[-1] for f in files]
    assert names == ["mask_rates.html", "mask_iou.html", "plotly.min.js"]
    html = open(files[0]).read()
    assert 'src="plotly.min.js"' in html and len(html) < 1_000_000  # plotly.js is not embedded
    assert os.path.getsize(files[2]) > 1_000_000  # the one shared copy of plotly.js


def test_xi_tab_grid_and_summary(base, tmp_path, monkeypatch):
    from taskarith_core.ui.xi_tab import summary_table, xi_views

    monkeypatch.setenv("TASKARITH_CACHE", str(tmp_path))
    said = []
    fig_a, fig_b, summary = xi_views(
        base,
        *("task0", "task1", "full", "none", "sta", "ortiz", "kl", 16, "lp", 0.5),
        progress=lambda value, desc=None: said.append(desc),
    )
    assert said and all(text.startswith("Paradigm A") for text in said)
    shown = summary_table(summary)
    assert shown.loc[0, "mean xi"] == round(summary.loc[0, "mean_xi"], 3)
    assert shown.loc[0, "grid with xi < 0.1 (%)"] == round(
        100 * summary.loc[0, "fraction_below"], 2
    )
    assert fig_b is None and fig_a.data[0].type == "heatmap"
    assert len(fig_a.data[0].x) == 15 and len(fig_a.data[0].y) == 15
    assert summary.loc[0, "mean_xi"] >= 0 and summary.loc[0, "distance"] == "kl"
    assert "STA p=0.50" in summary.loc[0, "label"]
    with pytest.raises(InputError, match="two different tasks"):
        xi_views(base, "task0", "task0", "full", "none", "plain", "ortiz", "kl", 32, "lp", 0.5)
    with pytest.raises(InputError, match="pick at least paradigm A"):
        xi_views(base, "task0", "task1", "none", "none", "plain", "ortiz", "kl", 32, "lp", 0.5)


def test_analyses_tab_cosine_and_sweep(base):
    from taskarith_core.ui.analyses_tab import run_analysis

    figure, frame = run_analysis(base, "cosine", TASKS, "kind", "ta", 0, 8)
    assert set(frame["group"]) >= {"attention", "mlp"}
    assert figure.data[0].type == "heatmap"
    figure, frame = run_analysis(base, "sweep", TASKS[:2], "whole", "ta", 32, 8)
    assert "mean" in set(frame["task"]) and figure.data
    with pytest.raises(InputError, match="at least two tasks"):
        run_analysis(base, "cosine", ["task0"], "whole", "ta", 0, 8)


def test_uploaded_forgetting_config_restores_the_forget_tab(base):
    cfg = forget_tab.forget_config(base, "task2", "sta", "amp", 0.7, 0.85, 16, 1, 40)
    source, *controls = forget_tab.forget_controls_from_config(RunConfig.from_json(cfg.to_json()))
    assert forget_tab.forget_config(source, *controls) == cfg
    with pytest.raises(InputError, match="Merge tab"):
        forget_tab.forget_controls_from_config(_merge_cfg(base))


def test_warm_computes_reference_and_importances_once(base):
    service = _service(base)
    service.warm(None, metric="amp")
    before = dict(service.counts)
    service.warm(None, metric="amp")
    assert dict(service.counts) == before
    assert ("task0", "amp", 0, 0) in service._importance


def test_download_folders_older_than_a_day_are_removed(tmp_path, monkeypatch):
    """Each download gets a fresh folder; folders left from earlier days are swept, so a page
    that runs for weeks does not fill the temp folder."""
    import os
    import tempfile
    import time

    from taskarith_core.ui import common

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parent = tmp_path / "taskarith_downloads"
    stale, recent = parent / "stale", parent / "recent"
    for folder in (stale, recent):
        folder.mkdir(parents=True)
        (folder / "figure.html").write_text("x")
    old = time.time() - common.DOWNLOAD_MAX_AGE_S - 60
    os.utime(stale, (old, old))
    path = common.write_text("run_config.json", "{}")
    assert not stale.exists() and recent.exists()
    assert open(path).read() == "{}" and os.path.dirname(path) != str(recent)


def test_no_ranking_summary_names_the_tensors():
    table = pd.DataFrame(
        {
            "task": ["a", "b", "a"],
            "tensor": ["x.bias", "x.bias", "y.weight"],
            "numel": [12, 12, 4],
            "no_ranking": [4, 4, 0],
        }
    )
    text = masks_tab.no_ranking_summary(table)
    assert "`x.bias` 33%" in text and "y.weight" not in text
    assert masks_tab.no_ranking_summary(table.assign(no_ranking=0)) == ""


def test_run_shows_references_intervals_and_compares_runs(base):
    from taskarith_core.ui import evidence

    first = _merge_cfg(base, "sta", importance="amp")
    _, figure, mean, history, _ = merge_tab.run_merge(first, [])
    second = _merge_cfg(base, "task_arithmetic", lam=0.1)
    _, _, _, history, frame = merge_tab.run_merge(second, history)
    assert "95% interval of the run's mean" in mean and "random importance" in mean
    merged = next(t for t in figure.data if t.name == "merged")
    assert merged.error_y.array[-1] >= 0 and merged.error_y.array[0] == 0  # whisker on the mean
    assert any("task arithmetic" in a.text for a in figure.layout.annotations)
    assert {"95% interval", "vs task arithmetic"} <= set(frame.columns)
    assert "_config" not in frame.columns
    assert frame["vs random importance"].isna().tolist() == [False, True]
    text = evidence.compare_runs(history, 1, 2)
    assert text.startswith("Run 1 minus run 2") and "paired images" in text
    assert evidence.compare_runs(history, 1, 1).endswith("cannot separate them**.")
    with pytest.raises(InputError, match="no run 7"):
        evidence.compare_runs(history, 7, 1)
    other = _merge_cfg(base, "task_arithmetic", tasks=TASKS[:2])
    _, _, _, history, _ = merge_tab.run_merge(other, history)
    with pytest.raises(InputError, match="same images"):
        evidence.compare_runs(history, 3, 1)


def test_zoo_claims_panel_lists_every_claim(tmp_path):
    from taskarith_core.ui.evidence import CLAIM_SENTENCES, zoo_claims_markdown

    shipped = zoo_claims_markdown(merge_tab._ZOO_CARD)
    assert all(sentence in shipped for sentence in CLAIM_SENTENCES.values())
    card = tmp_path / "card.json"
    claim = {"verdict": "cannot tell", "holds": False, "ta": 63.6, "interval": [-0.5, 1.2]}
    card.write_text(json.dumps({"claims": {"sta_lp_beats_ta": claim}}))
    text = zoo_claims_markdown(card)
    assert "**cannot tell**" in text and "[-0.50, 1.20]" in text and "ta 63.6" in text
    assert zoo_claims_markdown(tmp_path / "missing.json") == ""


def test_warm_references_prepares_the_default_run(base):
    merge_tab.warm_references(base)
    service = _service(base)
    before = service.counts["analysis"]
    merge_tab.run_merge(merge_tab.default_config(base), [])
    assert service.counts["analysis"] == before  # its references were already computed


def test_every_run_keeps_its_own_downloads():
    store, picker = merge_tab.remember_downloads([{"run": 1}], ["/a/run_config.json"], {})
    store, picker = merge_tab.remember_downloads(
        [{"run": 1}, {"run": 2}], ["/b/run_config.json", "/b/merge_results.csv"], store
    )
    assert picker["choices"] == ["1", "2"] and picker["value"] == "2"
    assert merge_tab.run_downloads("1", store) == ["/a/run_config.json"]
    assert merge_tab.run_downloads(2, store) == ["/b/run_config.json", "/b/merge_results.csv"]
    assert merge_tab.run_downloads(None, store) == []


def test_analyses_tab_shows_only_the_picked_analysis_controls():
    from taskarith_core.ui.analyses_tab import ANALYSES, shown_controls

    # by, method, evaluation images, Ns
    assert shown_controls("cosine") == [True, False, False, False]
    assert shown_controls("sweep") == [False, True, True, True]
    assert shown_controls("kernel") == [False, False, True, False]
    assert all(any(shown_controls(v)) for _, v in ANALYSES)
