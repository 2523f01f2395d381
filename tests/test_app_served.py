"""The served page driven through ``gradio_client``: endpoints, errors, and 8 users at once."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from taskarith_core.service.sources import explorer_for
from taskarith_core.ui import merge_tab
from taskarith_core.ui.common import config_from_source
from tests.served_page import serve_tiny_page

TASKS = ["task0", "task1", "task2"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with serve_tiny_page(tmp_path_factory, "tiny_served", concurrency=4) as (url, _demo, settings):
        yield url, settings


def _merge_args(method: str = "task_arithmetic", lam: float = 0.3, tasks=TASKS, p: float = 0.5):
    # tasks, method, importance, Ns, seed, evaluation images per task, split, then one value per
    # parameter control (every method's, in merge_tab.PARAM_CONTROLS order)
    values = merge_tab.param_values(method, {"lam": lam, "p": p})
    return [tasks, method, "lp", 8, 0, 0, "test", *values]


def test_page_is_served_on_localhost(served):
    url, _ = served
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        assert "<html" in response.read().decode().lower()


def test_merge_endpoint_returns_chart_mean_and_tables(served):
    url, _ = served
    client = Client(url, verbose=False)
    chart, mean, table, runs, files = client.predict(*_merge_args(), api_name="/merge")
    assert "Mean merged accuracy" in mean
    assert table["headers"][:4] == ["task", "zeroshot", "finetuned", "merged"]
    assert [row[0] for row in table["data"]] == TASKS
    assert len(runs["data"]) == 1
    assert {p.rsplit("/", 1)[-1] for p in files} == {
        "run_config.json",
        "merge_accuracy.html",
        "plotly.min.js",
        "merge_results.csv",
        "all_runs.csv",
    }


def test_user_mistakes_come_back_as_sentences(served):
    url, _ = served
    client = Client(url, verbose=False)
    with pytest.raises(AppError, match="tick at least two tasks"):
        client.predict(*_merge_args(tasks=[]), api_name="/merge")
    with pytest.raises(AppError, match="tick two or more tasks"):
        client.predict(*_merge_args(tasks=["task0"]), api_name="/merge")
    with pytest.raises(AppError) as info:
        client.predict(*_merge_args(method="sta", p=1.5), api_name="/merge")
    assert "Traceback" not in str(info.value)
    with pytest.raises(AppError, match="manifest .* not found"):
        client.predict("manifest", "full", "/no/such/manifest.yaml", api_name="/load")


def test_eight_concurrent_users_each_get_their_own_answer(served):
    url, settings = served
    lams = [0.1 * (i + 1) for i in range(8)]

    def user(lam: float):
        client = Client(url, verbose=False)
        first = client.predict(*_merge_args(lam=lam), api_name="/merge")
        second = client.predict(*_merge_args(lam=lam, tasks=TASKS[:2]), api_name="/merge")
        return first, second

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(user, lams))
    service = explorer_for(config_from_source(settings))
    for lam, (first, second) in zip(lams, results):
        _, mean, table, runs, _ = first
        expected = service.run_merge(
            config_from_source(
                settings,
                tasks=TASKS,
                method="task_arithmetic",
                params={"lam": lam},
                samples=8,
            )
        )
        shown = [row[3] for row in table["data"]]
        assert shown == (expected["merged"] * 100).round(2).tolist()
        assert [row[2] for row in runs["data"]] == ["task_arithmetic"]
        assert f"lam={lam}" in runs["data"][0][3]
        second_runs = second[3]["data"]  # the same user's history: both runs, nobody else's
        assert [row[0] for row in second_runs] == [1, 2]
        assert all(f"lam={lam}" in row[3] for row in second_runs)


def test_masks_and_forget_endpoints(served):
    url, _ = served
    client = Client(url, verbose=False)
    heatmap, summary, tensor = client.predict(
        "all", TASKS, "sta", "lp", 0.6, 0.9, 8, 0, api_name="/masks"
    )
    assert summary.startswith("Kept per task") and heatmap is not None
    iou = client.predict("all", TASKS, "sta", "lp", 0.6, 0.9, 8, 0, api_name="/masks_iou")
    assert iou is not None
    text, table, gallery, files = client.predict(
        "task0", "task_arithmetic", "lp", 1.0, 0.9, 8, 0, 0, api_name="/forget"
    )
    assert "task0" in text and [row[0] for row in table["data"]] == ["target", "control"]
    assert len(gallery) == 12
