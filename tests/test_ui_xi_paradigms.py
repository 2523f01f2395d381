"""The page offers the zoo's paradigms and compares xi across them on one colour scale."""

from __future__ import annotations

import json
import shutil

import pytest

from taskarith_core.errors import InputError
from taskarith_core.ui.page import PARADIGM_LABELS, zoo_paradigm_labels
from taskarith_core.zoo import PARADIGMS


def test_picker_offers_the_paradigms_the_zoo_holds(mini_zoo_root, tmp_path):
    labels = zoo_paradigm_labels({"zoo_root": str(mini_zoo_root)})
    assert [value for _, value in labels] == list(PARADIGMS)
    smaller = tmp_path / "zoo"
    smaller.mkdir()
    info = json.loads((mini_zoo_root / "tasks.json").read_text())
    info["paradigms"] = ["full", "talos"]
    (smaller / "tasks.json").write_text(json.dumps(info))
    assert [v for _, v in zoo_paradigm_labels({"zoo_root": str(smaller)})] == ["full", "talos"]
    assert zoo_paradigm_labels({"zoo_root": str(tmp_path / "none")}) == PARADIGM_LABELS


def test_xi_of_every_paradigm_side_by_side_on_one_scale(mini_zoo_root, tmp_path, monkeypatch):
    from taskarith_core.ui.xi_tab import summary_table, xi_views

    monkeypatch.setenv("TASKARITH_CACHE", str(tmp_path))
    source = {"source": "zoo", "paradigm": "full", "zoo_root": str(mini_zoo_root)}
    tasks = ("printed_digits", "shapes")
    fig_a, fig_b, summary = xi_views(
        source, *tasks, "full", "all", "plain", "ortiz", "prediction", 16, "lp", 0.5
    )
    assert len(summary) == len(PARADIGMS)  # one mean xi per paradigm
    assert [label.split("/")[-1] for label in summary["label"]] == list(PARADIGMS)
    heatmaps = [fig_a.data[0], *fig_b.data]
    assert len(heatmaps) == len(PARADIGMS)
    top = max(float(summary["max_xi"].max()), 0.0) or 1.0
    assert all(h.zmin == 0.0 and h.zmax == pytest.approx(top) for h in heatmaps)
    assert summary_table(summary)["mean xi"].notna().all()
    # two paradigms: an ordinary pair of plots, still one scale
    fig_a, fig_b, pair = xi_views(
        source, *tasks, "attention", "linearized", "plain", "ortiz", "prediction", 16, "lp", 0.5
    )
    assert fig_a.data[0].zmax == fig_b.data[0].zmax == pytest.approx(pair["max_xi"].max() or 1.0)


def test_a_paradigm_the_zoo_lacks_is_one_sentence(mini_zoo_root, tmp_path, monkeypatch):
    from taskarith_core.ui.xi_tab import xi_views

    monkeypatch.setenv("TASKARITH_CACHE", str(tmp_path))
    smaller = tmp_path / "zoo"
    shutil.copytree(mini_zoo_root, smaller)
    info = json.loads((smaller / "tasks.json").read_text())
    info["paradigms"] = ["full", "attention", "talos"]
    (smaller / "tasks.json").write_text(json.dumps(info))
    source = {"source": "zoo", "paradigm": "full", "zoo_root": str(smaller)}
    with pytest.raises(InputError, match="has no 'lota' checkpoints"):
        xi_views(source, "printed_digits", "shapes", "full", "lota", "plain", "ortiz",
                 "prediction", 16, "lp", 0.5)  # fmt: skip
