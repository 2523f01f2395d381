"""A mistake in a real browser: one sentence, and the page keeps what it showed.

Serves ``python app.py`` on the miniature zoo, runs a merge, then uploads a picture named
``.json`` as a run config: the sentence says what is wrong, the chart, the tables and every
input stay visible, and no "Error" badge covers them. Needs Debian's chromium
(``apt-get install -y --no-install-recommends chromium``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
SLOW = 240_000  # ms: the test machine's cores are shared
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="needs Debian's chromium: apt-get install -y --no-install-recommends chromium",
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(mini_zoo_root, tmp_path_factory):
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "TASKARITH_CACHE": str(tmp_path_factory.mktemp("cache")),
    }
    port = _free_port()
    log = (tmp_path_factory.mktemp("app") / "app.log").open("w")
    command = [sys.executable, "app.py", "--port", str(port), "--zoo-root", str(mini_zoo_root)]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
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
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
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


def _toasts(tab, text: str) -> int:
    """How many of the page's pop-up messages say ``text`` (they close after 10 s)."""
    return tab.locator("[data-testid=toast-text]", has_text=text).count()


#: status trackers Gradio shows over a component (progress, or its "Error" badge)
SHOWN_TRACKERS = """ids => ids.filter(id => {
    const box = document.getElementById(id);
    return [...box.querySelectorAll('[data-testid=status-tracker]')].some(
        wrap => !wrap.classList.contains('hide') && wrap.querySelector('.error'));
})"""


def test_a_bad_upload_keeps_results_and_inputs_visible(page, tmp_path):
    page.locator("#merge-run").click()
    _wait_text(page, "#merge-mean", "Mean merged accuracy")
    page.wait_for_selector("#merge-chart .js-plotly-plot")
    time.sleep(2)  # the run's follow-up events
    assert page.locator("[data-testid=toast-text]").count() == 0  # a good run says nothing
    mean = page.locator("#merge-mean").inner_text()
    rows = page.locator("#merge-table [role=row].virtual-row").count()
    assert rows >= 2

    picture = tmp_path / "run_config.json"
    picture.write_bytes(PNG + os.urandom(2000))
    with page.expect_file_chooser() as chooser:
        page.locator("#merge-upload").click()
    chooser.value.set_files(str(picture))
    page.get_by_text("is not text").first.wait_for()
    assert _toasts(page, "is not text") == 1  # the sentence, once
    time.sleep(1)  # let the page settle after the answer

    assert page.locator("#merge-mean").inner_text() == mean
    assert page.locator("#merge-chart .js-plotly-plot").is_visible()
    assert page.locator("#merge-table [role=row].virtual-row").count() == rows
    shown = ["merge-chart", "merge-mean", "merge-table", "merge-history"]
    shown += ["merge-tasks", "merge-method", "merge-sta-p", "merge-run"]
    for element in shown:
        assert page.locator(f"#{element}").is_visible(), element
    assert page.evaluate(SHOWN_TRACKERS, shown) == []
    assert page.evaluate(SHOWN_TRACKERS, ["merge-run-status"]) == ["merge-run-status"]
    assert page.get_by_text("This is a bug").count() == 0
    screenshot = tmp_path / "bad_upload.png"
    page.screenshot(path=str(screenshot), full_page=True)
    if os.environ.get("TASKARITH_SCREENSHOT_DIR"):
        target = Path(os.environ["TASKARITH_SCREENSHOT_DIR"]) / "bad_upload.png"
        target.write_bytes(screenshot.read_bytes())


def test_a_rejected_run_keeps_the_chart_and_shows_one_sentence(page):
    page.get_by_role("tab", name="Merge").click()
    # the last test's sentence closes by itself after 10 s
    page.wait_for_selector("[data-testid=toast-body]", state="detached", timeout=60_000)
    mean = page.locator("#merge-mean").inner_text()
    boxes = page.locator("#merge-tasks label.selected")
    while boxes.count():
        boxes.first.click()
    page.locator("#merge-run").click()
    page.get_by_text("no task is ticked").first.wait_for()
    assert _toasts(page, "no task is ticked") == 1  # the sentence, once
    time.sleep(1)
    assert page.locator("#merge-mean").inner_text() == mean
    assert page.locator("#merge-chart .js-plotly-plot").is_visible()
    shown = ["merge-chart", "merge-mean", "merge-table", "merge-tasks", "merge-sta-p"]
    assert page.evaluate(SHOWN_TRACKERS, shown) == []
