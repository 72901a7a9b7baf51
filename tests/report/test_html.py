"""report.html: one self-contained page that renders in a real browser (headless Chromium)."""
import json
import re
import shutil

import numpy as np
import pytest

from calibtune.report.html import Figure, Paragraph, Table, render_html
from calibtune.report.reading import run_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def page_check(path, screenshot=None, width=1280):
    """Load `path` in headless Chromium: console errors, images' natural sizes, table rows."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": width, "height": 900})
        errors, requests = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
        rows = page.eval_on_selector_all("table tbody tr", "els => els.length")
        first = page.eval_on_selector_all("table[data-sortable] tbody tr td:first-child",
                                          "els => els.map(e => e.textContent)")
        table = page.locator("table[data-sortable]").first
        table.locator("th:nth-child(2)").click()
        sorted_col = table.locator("tbody tr td:nth-child(2)").evaluate_all(
            "els => els.map(e => e.getAttribute('data-value'))")
        if screenshot:
            page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return {"errors": errors, "images": images, "rows": rows, "first": first,
            "sorted": sorted_col, "requests": [r for r in requests if not r.startswith("data:")
                                               and not r.startswith("file:")]}


def test_text_is_escaped_and_bold_is_the_only_markup():
    page = render_html("a <b> title", [Paragraph("x < y and **bold** <script>alert(1)</script>")])
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page
    assert "<strong>bold</strong>" in page and "a &lt;b&gt; title" in page


@pytest.mark.browser
def test_run_page_renders_in_chromium(tmp_path):
    assert CHROMIUM, "chromium is not installed: `make test` installs it (apt-get install chromium)"
    from calibtune.workflows.run_folder import write_run
    from calibtune.scores import OptionScores

    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 4)) * 3
    scores = OptionScores(z, rng.integers(0, 4, 200), np.ones((200, 4), bool),
                          [f"q{i}" for i in range(200)])
    write_run(tmp_path, scores, title="demo", context={"model": "tiny"}, n_boot=50)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    page = tmp_path / "page.html"
    extra = [Table(["method", "ECE", "accuracy"], [["b", 0.2, 0.5], ["a", 0.05, 0.4],
                                                   ["c", 0.1, 0.45]], caption="sortable")]
    page.write_text(run_page(metrics, title="demo run", context={"model": "tiny"},
                             figures=["reliability.png", "classwise.png"], folder=tmp_path,
                             extra_blocks=extra))
    assert not re.search(r'(src|href)="(https?:)?//', page.read_text())  # nothing from the network
    result = page_check(page, screenshot=tmp_path / "shot.png")
    assert result["errors"] == [] and result["requests"] == []
    assert len(result["images"]) == 2 and all(w > 0 and h > 0 for w, h in result["images"])
    assert result["rows"] >= 4 + 3
    assert result["sorted"] == sorted(result["sorted"], key=float)  # click sorts as numbers
    assert (tmp_path / "shot.png").stat().st_size > 10_000
    phone = page_check(page, width=390)  # a phone-sized viewport loads as cleanly
    assert phone["errors"] == [] and all(w > 0 for w, _ in phone["images"])


def test_figures_must_be_images(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="only PNG, SVG or JPEG"):
        render_html("t", [Figure(tmp_path / "x.txt")])
