"""The demo's HTML report in a real browser: headless Chromium renders it cleanly.

``landscape.demo.run_demo(quick=True)`` — what ``landscape demo --quick`` runs — writes its
page ``demo_report.html`` into a temporary folder. Headless Chromium (Debian's ``chromium``
package, driven by Playwright with ``executable_path``: no browser is downloaded) opens the
page as a file, and the test asserts

* no console message of level error, no uncaught page error, no failed request;
* at least one ``<img>``, and every one loaded (``complete`` and ``naturalWidth > 0``);
* the page's text contains its title, the comparison's (``Landscape comparison: ...``);
* it opens with at least four findings, and metric names carry hover definitions.

It saves a full-page PNG screenshot to ``$LANDSCAPE_SCREENSHOT`` when set, else into the
test's temporary folder. A second test feeds the same check a broken page, so a pass means
the check can fail. The page check knows nothing of ``landscape``: a page is a file.

Without Chromium or the ``playwright`` package (``dev`` extra) the tests skip. Run them with
``make test-browser``: it installs Chromium with apt-get when missing (as root), then runs
this module with ``LANDSCAPE_SCREENSHOT=figures/report_screenshot.png``, the README's
screenshot. By hand::

    apt-get install chromium
    .venv/bin/python -m pytest tests/test_browser.py
"""

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from landscape.demo import run_demo

CHROMIUM_NAMES = ("chromium", "chromium-browser")
HOW_TO_RUN = (
    "run `make test-browser` (it installs Debian's chromium as root), "
    "or `apt-get install chromium` and `pip install -e '.[dev]'`"
)
IMAGES = """() => Array.from(document.images, (img) => ({
    src: (img.getAttribute("src") || "").slice(0, 48), complete: img.complete,
    width: img.naturalWidth,
}))"""


@dataclass
class PageCheck:
    """What a browser saw on one page."""

    title: str = ""
    text: str = ""
    images: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def unloaded_images(self):
        return [img for img in self.images if not (img["complete"] and img["width"] > 0)]


def _chromium():
    """The path of the system's Chromium, or None."""
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def _screenshot_path(tmp_path):
    path = Path(os.environ.get("LANDSCAPE_SCREENSHOT") or tmp_path / "report_screenshot.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # the assertion below sees this run's screenshot
    return path


def _listen(page, check):
    """Record console errors and warnings, page errors and failed requests into ``check``."""

    def on_console(message):
        line = f"console {message.type}: {message.text} at {message.location}"
        if message.type in ("error", "assert"):
            check.errors.append(line)
        elif message.type == "warning":
            check.warnings.append(line)

    def on_response(response):
        if response.status >= 400:
            check.errors.append(f"HTTP {response.status}: {response.url[:120]}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: check.errors.append(f"page error: {error}"))
    page.on("requestfailed", lambda r: check.errors.append(f"failed: {r.url[:120]} {r.failure}"))
    page.on("response", on_response)


def check_page(browser, path, screenshot=None, selectors=()):
    """Open the file ``path`` in ``browser``; return what it saw, save a full-page PNG.

    ``selectors``: CSS selectors whose matches are counted into ``check.counts``.
    """
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    check = PageCheck()
    _listen(page, check)
    try:
        page.goto(Path(path).resolve().as_uri(), wait_until="load")
        check.title = page.title()
        check.text = page.inner_text("body")
        check.images = page.evaluate(IMAGES)
        check.counts = {s: page.locator(s).count() for s in selectors}
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
    finally:
        page.close()
    return check


@pytest.fixture(scope="module")
def browser():
    """Headless system Chromium through Playwright, or a skip that says how to get it."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason=f"browser test needs the playwright package: {HOW_TO_RUN}"
    )
    executable = _chromium()
    if executable is None:
        pytest.skip(f"browser test needs Chromium ({' or '.join(CHROMIUM_NAMES)}): {HOW_TO_RUN}")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def demo_page(tmp_path, monkeypatch):
    """``landscape demo --quick`` into ``tmp_path``: the page and the comparison's title."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on two shared cores: 10x slower under load
    try:
        result = run_demo(tmp_path / "demo", quick=True, progress=False, log=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    return tmp_path / "demo" / "demo_report.html", result.comparison.summary().splitlines()[0]


def test_demo_report_renders_in_chromium(browser, demo_page, tmp_path):
    path, title = demo_page
    screenshot = _screenshot_path(tmp_path)

    findings, defined = "h2 + ol.findings > li", "abbr[title]"
    check = check_page(browser, path, screenshot, selectors=(findings, defined))

    assert not check.errors, "\n".join(check.errors + check.warnings)
    assert check.counts[findings] >= 4, check.counts
    assert check.counts[defined] >= 10, check.counts
    assert check.text.index("Findings") < check.text.index("Overview")
    assert check.images, "the page has no <img>"
    assert not check.unloaded_images(), f"images not loaded: {check.unloaded_images()}"
    assert check.title == title
    assert title in check.text
    assert screenshot.stat().st_size > 0


def test_check_page_reports_a_broken_page(browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>Broken</title></head><body><p>text</p>"
        '<img src="missing.png"><script>console.error("boom")</script></body></html>',
        encoding="utf-8",
    )

    check = check_page(browser, page)

    assert any("boom" in e for e in check.errors), check.errors
    assert any("missing.png" in e for e in check.errors), check.errors
    assert [img["src"] for img in check.unloaded_images()] == ["missing.png"]
    assert "Broken" not in check.text
