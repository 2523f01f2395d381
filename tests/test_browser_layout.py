"""Every tab of the served page at 1400 px in Debian's chromium: figures drawn at a readable
size, no text cut off (plotly titles and labels inside their figure, captions and table cells
not ellipsised), the masks heatmap redrawn once per slider drag. Screenshots of each tab go to
docs/<tab>.png when TASKARITH_UPDATE_SCREENSHOT=1 (the README shows them).
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests import test_browser as served
from tests.test_browser import CHROMIUM, REPO, SLOW

# the served app and one browser tab, shared with the page's other browser tests
zoo_args = served.zoo_args
app_url = served.app_url
browser_page = served.browser_page

pytestmark = pytest.mark.browser

#: texts of a plotly figure outside its drawing, and HTML text cut by an ellipsis or overflow
CLIPPED = """(sel) => {
  const out = [];
  for (const root of document.querySelectorAll(sel)) {
    for (const svg of root.querySelectorAll('svg.main-svg')) {
      const box = svg.getBoundingClientRect();
      for (const t of svg.querySelectorAll('text')) {
        const r = t.getBoundingClientRect();
        if (!t.textContent.trim() || r.width === 0) continue;
        if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1
            || r.bottom > box.bottom + 1) out.push(t.textContent.trim());
      }
    }
    for (const el of root.querySelectorAll('*')) {
      if (!el.offsetParent) continue;
      const style = getComputedStyle(el);
      if (style.textOverflow !== 'ellipsis' && style.overflow !== 'hidden') continue;
      if (![...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
      if (el.scrollWidth > el.clientWidth + 1) out.push(el.textContent.trim().slice(0, 60));
    }
  }
  return out;
}"""


def _clipped(page, selector: str) -> list[str]:
    return page.evaluate(CLIPPED, selector)


def _plot_area(page, selector: str) -> dict:
    """The drawing area of the first plotly subplot in ``selector`` (pixels)."""
    page.wait_for_selector(f"{selector} .js-plotly-plot")
    return page.locator(f"{selector} .nsewdrag").first.bounding_box()


def _inside(inner: dict, outer: dict) -> bool:
    return (
        inner["x"] >= outer["x"] - 1
        and inner["y"] >= outer["y"] - 1
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 1
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 1
    )


def _shoot(page, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if os.environ.get("TASKARITH_UPDATE_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copy(path, REPO / "docs" / f"{name}.png")


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_page_is_1400_px_wide(browser_page):
    assert browser_page.viewport_size["width"] == 1400
    assert CHROMIUM.endswith("chromium")


@pytest.mark.slow
def test_merge_tab_figure_tables_and_every_runs_downloads(browser_page, tmp_path):
    page = browser_page
    _tab(page, "Merge")
    page.locator("#merge-run").click()
    # the first run also computes its references (minutes on a busy 2-core machine)
    page.wait_for_function(
        "document.querySelector('#merge-mean')?.innerText?.includes('Mean merged accuracy')",
        timeout=3 * SLOW,
    )
    chart = page.locator("#merge-chart .js-plotly-plot").bounding_box()
    assert chart["width"] >= 600 and chart["height"] >= 350
    assert _clipped(page, "#merge-chart") == []
    assert _clipped(page, "#merge-table") == []
    page.wait_for_function("document.querySelectorAll('#merge-files a[download]').length >= 5")
    names = [
        a.get_attribute("href").rsplit("/", 1)[-1]
        for a in page.locator("#merge-files a[download]").all()
    ]
    assert "plotly.min.js" in names and "merge_accuracy.html" in names
    _shoot(page, tmp_path, "merge")


def test_masks_tab_heatmap_redraws_once_per_drag_and_gallery_shows_every_task(
    browser_page, tmp_path
):
    page = browser_page
    _tab(page, "Masks")
    area = _plot_area(page, "#masks-heatmap")
    figure = page.locator("#masks-heatmap .js-plotly-plot").bounding_box()
    assert figure["width"] >= 600 and figure["height"] <= 600  # one row of panels, not five
    assert area["height"] >= 150
    assert _clipped(page, "#masks-heatmap") == [] and _clipped(page, "#masks-iou") == []
    time.sleep(2)  # the IoU drawn after the heatmap

    joins: list[str] = []
    page.on("request", lambda r: joins.append(r.url) if "queue/join" in r.url else None)
    before = page.locator("#masks-summary").inner_text()
    track = page.locator("#masks-p input[type=range]").bounding_box()
    y = track["y"] + track["height"] / 2
    page.mouse.move(track["x"] + 0.8 * track["width"], y)
    page.mouse.down()
    for step in range(20):
        page.mouse.move(track["x"] + (0.8 - 0.03 * step) * track["width"], y)
    page.mouse.up()
    page.wait_for_function(
        "b => document.querySelector('#masks-summary').innerText !== b", arg=before
    )
    time.sleep(2)
    assert 1 <= len(joins) <= 2  # the heatmap, then the IoU: once for the whole drag

    page.locator("#masks-tensor input").click()
    page.keyboard.type("in_proj_weight")
    page.locator("ul[role=listbox] li").first.click()
    tasks = page.locator("#masks-tasks label.selected").count()
    page.wait_for_function(
        "n => document.querySelectorAll('#masks-gallery img').length >= n", arg=tasks
    )
    gallery = page.locator("#masks-gallery").bounding_box()
    images = page.locator("#masks-gallery img").all()
    assert len(images) == tasks
    assert all(_inside(image.bounding_box(), gallery) for image in images)
    assert _clipped(page, "#masks-gallery") == []
    _shoot(page, tmp_path, "masks")


def test_forget_tab_gallery_and_table_fit(browser_page, tmp_path):
    page = browser_page
    _tab(page, "Forget")
    page.locator("#forget-run").click()
    page.wait_for_selector("#forget-gallery img")
    gallery = page.locator("#forget-gallery").bounding_box()
    images = page.locator("#forget-gallery img").all()
    assert len(images) >= 6
    assert all(_inside(image.bounding_box(), gallery) for image in images)
    assert _clipped(page, "#forget-gallery") == [] and _clipped(page, "#forget-table") == []
    cells = page.locator("#forget-table [role=gridcell]").all_inner_texts()
    percents = [c for c in cells if c.replace(".", "", 1).isdigit() and "." in c]
    assert percents and all(len(c.split(".")[1]) in (2, 3) for c in percents)
    _shoot(page, tmp_path, "forget")


def test_disentanglement_heatmaps_are_square_and_titled_with_their_paradigm(browser_page, tmp_path):
    page = browser_page
    _tab(page, "Disentanglement")
    samples = page.locator("#xi-samples input[type=number]")
    samples.fill("16")
    samples.press("Enter")
    page.locator("#xi-run").click()
    for which, selector in (("A", "#xi-plot-a"), ("B", "#xi-plot-b")):
        area = _plot_area(page, selector)
        assert area["width"] >= 250 and abs(area["width"] - area["height"]) <= 0.05 * area["width"]
        assert _clipped(page, selector) == []
        title = page.locator(f"{selector} .gtitle").first.text_content()
        assert title.startswith(f"Paradigm {which}:")
    assert _clipped(page, "#xi-summary") == []
    _shoot(page, tmp_path, "disentanglement")


def test_analyses_tab_shows_only_the_chosen_analysis_controls(browser_page, tmp_path):
    page = browser_page
    _tab(page, "Analyses")
    assert page.locator("#analyses-by").is_visible()
    assert not page.locator("#analyses-method").is_visible()
    page.get_by_text("Accuracy sweep of one method").click()
    page.locator("#analyses-method").wait_for(state="visible")
    assert not page.locator("#analyses-by").is_visible()
    page.get_by_text("Cosine similarity of task vectors").click()
    page.locator("#analyses-by").wait_for(state="visible")
    page.locator("#analyses-run").click()
    page.wait_for_selector("#analyses-plot .js-plotly-plot", timeout=SLOW)
    assert _clipped(page, "#analyses-plot") == [] and _clipped(page, "#analyses-table") == []
    _shoot(page, tmp_path, "analyses")
