"""A real browser on the served page: Debian's chromium driven by Playwright.

Starts ``python app.py`` (the shipped zoo when it is there, else the miniature zoo), ticks tasks,
moves p, presses Run, checks that the numbers on the page equal what ``python -m taskarith_core
run --config`` prints for the run config the page offers for download, runs a forgetting demo
and saves a screenshot (the README's screenshots come from the layout tests).
Never runs ``playwright install``: install chromium with ``apt-get install -y chromium``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHIPPED_ZOO = REPO / "assets" / "zoo"
SLOW = 240_000  # ms: the CI machine has 2 cores shared with other jobs

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="needs Debian's chromium: apt-get install -y chromium"
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_CACHE = {"dir": ""}  # one disk cache shared by the app and the CLI, inside pytest's tmp


def _env() -> dict[str, str]:
    extra = {"TASKARITH_CACHE": _CACHE["dir"]} if _CACHE["dir"] else {}
    return {**os.environ, "PYTHONPATH": str(REPO), "GRADIO_ANALYTICS_ENABLED": "False", **extra}


@pytest.fixture(scope="module")
def zoo_args(request) -> list[str]:
    """$TASKARITH_BROWSER_ZOO, else the shipped zoo if it is built, else the miniature one."""
    if os.environ.get("TASKARITH_BROWSER_ZOO"):
        return ["--zoo-root", os.environ["TASKARITH_BROWSER_ZOO"]]
    if (SHIPPED_ZOO / "tasks.json").is_file():
        return []
    return ["--zoo-root", str(request.getfixturevalue("mini_zoo_root"))]


@pytest.fixture(scope="module")
def app_url(zoo_args, tmp_path_factory):
    _CACHE["dir"] = str(tmp_path_factory.mktemp("cache"))
    port = _free_port()
    log = (tmp_path_factory.mktemp("app") / "app.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), *zoo_args],
        cwd=REPO,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail("python app.py did not serve the page within 180 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser_page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        tab.set_default_timeout(SLOW)
        tab.goto(app_url)
        _wait_text(tab, "#source-status", "Loaded")
        yield tab
        browser.close()


def _wait_text(tab, selector: str, text: str) -> None:
    tab.wait_for_function(
        "([sel, text]) => document.querySelector(sel)?.innerText?.includes(text)",
        arg=[selector, text],
        timeout=SLOW,
    )


def _table(tab, selector: str) -> pd.DataFrame:
    rows = tab.evaluate(
        """sel => {
            const grid = document.querySelector(sel);
            const head = [...grid.querySelectorAll('thead th')].map(th => th.title.trim());
            const body = [...grid.querySelectorAll('[role=row].virtual-row')].map(
                row => [...row.querySelectorAll('[role=gridcell]')].map(c => c.innerText.trim()));
            return {head, body};
        }""",
        selector,
    )
    return pd.DataFrame(rows["body"], columns=rows["head"])


def test_merge_in_the_browser_matches_the_cli(browser_page, tmp_path):
    page = browser_page
    boxes = page.locator("#merge-tasks label")
    names = [boxes.nth(i).inner_text().strip() for i in range(boxes.count())]
    assert len(names) >= 2
    last = page.locator("#merge-tasks label", has_text=names[-1])
    last.click()  # untick ...
    if len(names) == 2:
        last.click()  # ... and tick again: a merge needs two tasks
    ticked = names if len(names) == 2 else names[:-1]
    number = page.locator("#merge-sta-p input[type=number]")
    number.fill("0.85")
    number.press("Enter")
    _wait_text(page, "#merge-kept", "p = 0.85")
    page.locator("#merge-run").click()
    _wait_text(page, "#merge-mean", "Mean merged accuracy")
    page.wait_for_selector("#merge-chart .js-plotly-plot")
    shown = _table(page, "#merge-table")
    assert shown["task"].tolist() == ticked

    with page.expect_download() as download:
        page.locator('a[download][href$="run_config.json"]').first.click()
    config = tmp_path / "run_config.json"
    download.value.save_as(config)
    out = tmp_path / "cli.csv"
    done = subprocess.run(
        [sys.executable, "-m", "taskarith_core", "run", "--config", str(config), "--out", str(out)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    cli = pd.read_csv(out)
    assert cli["task"].tolist() == ticked
    for column in ("zeroshot", "finetuned", "merged", "normalised"):
        assert [float(v) for v in shown[column]] == cli[column].tolist()

    screenshot = tmp_path / "screenshot.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000


def test_forgetting_demo_in_the_browser(browser_page):
    page = browser_page
    page.get_by_role("tab", name="Forget").click()
    lam = page.locator("#forget-lam input[type=number]")
    lam.fill("1")
    lam.press("Enter")
    page.locator("#forget-run").click()
    _wait_text(page, "#forget-summary", "->")
    table = _table(page, "#forget-table")
    assert table["role"].tolist()[0] == "target"
    page.wait_for_selector("#forget-gallery img")
    assert page.locator("#forget-gallery img").count() >= 1
    assert "Traceback" not in page.content()


def test_a_mistake_shows_a_sentence_not_a_traceback(browser_page):
    page = browser_page
    page.get_by_role("tab", name="Merge").click()
    boxes = page.locator("#merge-tasks label.selected")
    while boxes.count():
        boxes.first.click()
    page.locator("#merge-run").click()
    page.get_by_text("tick at least two tasks").first.wait_for()
    assert "Traceback" not in page.content()
