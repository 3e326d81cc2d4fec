"""The documentation site builds with no warning and works in a real browser, offline.

``mkdocs build --strict`` (what ``make docs`` runs) builds the site from ``docs/`` into a
temporary folder: any warning — a broken link, a page missing from the navigation, a
docstring mkdocstrings cannot read — fails the build. The built site is then served from a
local HTTP server (Material's search fetches its index, which a ``file://`` page cannot) and
every page is opened in headless Chromium (Debian's ``chromium`` driven by Playwright, as in
``tests/test_browser.py``). Per page the crawl asserts

* no console error, no uncaught page error, no failed request, no HTTP status ≥ 400;
* no request leaves the local server (the site must work offline);
* every ``<img>`` loaded;
* every link into the site reaches a file, and every ``#anchor`` into a page exists there;

and the search box returns results for "eigenvalue". A control crawl of a small broken site
shows each check can fail. Without Chromium or Playwright the browser tests skip with a
message (``make test-browser`` installs Chromium as root; ``.ci/run`` does too).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_NAMES = ("chromium", "chromium-browser")
HOW_TO_GET_CHROMIUM = (
    "run `make test-browser` (it installs Debian's chromium as root), "
    "or `apt-get install chromium` and `pip install -e '.[dev]'`"
)
PAGE_FACTS = """() => ({
    ids: Array.from(document.querySelectorAll("[id], a[name]"), (e) => e.id || e.name),
    links: Array.from(document.querySelectorAll("a[href]"), (a) => a.href),
    images: Array.from(document.images, (img) => ({
        src: img.currentSrc || img.src, loaded: img.complete && img.naturalWidth > 0,
    })),
})"""


def build_site(site_dir: Path) -> subprocess.CompletedProcess:
    """Run ``mkdocs build --strict`` into ``site_dir``, as ``make docs`` does."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site's folder; the build's output is in the failure message."""
    pytest.importorskip("mkdocs", reason="the docs tests need the docs extra (mkdocs)")
    site_dir = tmp_path_factory.mktemp("site")
    result = build_site(site_dir)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    return site_dir, result


def test_site_builds_strict_with_no_warning(site):
    site_dir, result = site
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert not warnings, "\n".join(warnings)
    assert (site_dir / "index.html").is_file()
    assert (site_dir / "search" / "search_index.json").is_file()
    for page in ("reference/analysis", "examples/analyze_a_model", "validation"):
        assert (site_dir / page / "index.html").is_file(), page


# -- a local server and a crawl ------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(site):
    """The site over HTTP on 127.0.0.1 (a free port), for as long as the module runs."""
    with serve(site[0]) as base:
        yield site[0], base


class serve:
    """Serve ``folder`` on 127.0.0.1 at a free port; the context value is the base URL."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.server = _QuietServer(("127.0.0.1", 0), handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a browser that moved on
            super().handle_error(request, client_address)


@dataclass
class Crawl:
    """What the browser saw on each page, and what it found wrong."""

    problems: list[str] = field(default_factory=list)
    ids: dict[str, set[str]] = field(default_factory=dict)
    links: dict[str, list[str]] = field(default_factory=dict)


def crawl(browser, base: str, pages: list[str]) -> Crawl:
    """Open every page (URLs under ``base``); record errors, ids and links, then check links."""
    seen = Crawl()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", functools.partial(_local_only, base, seen.problems))
    page = context.new_page()
    current = {"url": ""}

    def problem(text):
        seen.problems.append(f"{current['url'][len(base) :] or '/'}: {text}")

    page.on("console", lambda m: m.type == "error" and problem(f"console error: {m.text}"))
    page.on("pageerror", lambda error: problem(f"page error: {error}"))
    page.on(
        "requestfailed", lambda r: _failed(r) and problem(f"request failed: {r.url} {r.failure}")
    )
    page.on("response", lambda r: r.status >= 400 and problem(f"HTTP {r.status}: {r.url}"))
    try:
        for url in pages:
            current["url"] = url
            page.goto(url, wait_until="load")
            facts = page.evaluate(PAGE_FACTS)
            seen.ids[url] = set(facts["ids"])
            seen.links[url] = facts["links"]
            for image in facts["images"]:
                if not image["loaded"]:
                    problem(f"image not loaded: {image['src']}")
    finally:
        context.close()
    seen.problems += _broken_links(base, seen)
    return seen


def _failed(request) -> bool:
    """A request that failed, not one cancelled because the page moved on (ERR_ABORTED)."""
    return "ERR_ABORTED" not in (request.failure or "")


def _local_only(base, problems, route):
    """Let requests to the local server through; record and abort any other."""
    url = route.request.url
    if url.startswith(base) or url.startswith(("data:", "blob:")):
        route.continue_()
    else:
        problems.append(f"a request left the site: {url}")
        route.abort()


def _broken_links(base: str, seen: Crawl) -> list[str]:
    """Links into the site that reach no file, or an anchor the target page lacks."""
    problems, status = [], {}
    for page, links in seen.links.items():
        for link in links:
            target, anchor = urldefrag(link)
            if not target.startswith(base):
                continue  # a link out of the site (no request is made)
            target = _page_url(target)
            if target not in status:
                status[target] = target in seen.ids or _reachable(target)
            where = page[len(base) :] or "/"
            if not status[target]:
                problems.append(f"{where}: broken link {link[len(base) :]}")
            elif anchor and target in seen.ids and anchor not in seen.ids[target]:
                problems.append(f"{where}: no anchor #{anchor} in {target[len(base) :]}")
    return problems


def _page_url(url: str) -> str:
    """``.../page/index.html`` and ``.../page/`` are one page."""
    return url[: -len("index.html")] if url.endswith("/index.html") else url


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # the local server
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def site_pages(site_dir: Path, base: str) -> list[str]:
    """Every HTML page of the site (not the 404 page) as its URL under ``base``."""
    urls = []
    for path in sorted(site_dir.rglob("*.html")):
        relative = path.relative_to(site_dir).as_posix()
        if relative != "404.html":
            urls.append(_page_url(base + relative))
    return urls


# -- the browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless system Chromium through Playwright, or a skip that says how to get it."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason=f"needs the playwright package: {HOW_TO_GET_CHROMIUM}"
    )
    executable = next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if executable is None:
        pytest.skip(f"needs Chromium ({' or '.join(CHROMIUM_NAMES)}): {HOW_TO_GET_CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        yield chromium
        chromium.close()


def test_every_page_loads_cleanly_with_working_links(browser, served):
    site_dir, base = served
    pages = site_pages(site_dir, base)
    assert len(pages) >= 40, pages  # the navigation's pages, the reference, the notebooks

    seen = crawl(browser, base, pages)

    assert not seen.problems, "\n".join(seen.problems[:50])
    linked = {_page_url(urldefrag(link)[0]) for links in seen.links.values() for link in links}
    assert set(pages) <= linked | {base}, "pages no other page links to"


def test_search_finds_eigenvalue(browser, served):
    _, base = served
    page = browser.new_page()
    try:
        page.goto(base, wait_until="load")
        page.fill("input.md-search__input", "eigenvalue")
        page.wait_for_selector(".md-search-result__item", timeout=15_000)
        results = page.eval_on_selector_all(
            ".md-search-result__item a", "(links) => links.map((a) => a.href)"
        )
    finally:
        page.close()
    assert len(results) >= 3, results
    assert all(urlsplit(r).netloc == urlsplit(base).netloc for r in results), results
    assert all(_reachable(urldefrag(r)[0]) for r in results[:5]), results[:5]


def test_the_crawl_reports_a_broken_site(browser, tmp_path):
    """Each check of the crawl can fail: a page with every kind of defect."""
    (tmp_path / "a").mkdir()
    (tmp_path / "index.html").write_text(
        '<html><body><h1 id="top">Home</h1><a href="a/">a</a><a href="missing/">gone</a>'
        '<a href="a/#nowhere">bad anchor</a><a href="#top">ok</a><img src="none.png">'
        '<img src="http://198.51.100.1/x.png"><script>console.error("boom")</script>'
        "</body></html>",
        encoding="utf-8",
    )
    (tmp_path / "a" / "index.html").write_text(
        '<html><body><p id="here">a</p><a href="../">home</a></body></html>', encoding="utf-8"
    )
    with serve(tmp_path) as base:
        seen = crawl(browser, base, site_pages(tmp_path, base))
    text = "\n".join(seen.problems)
    for expected in (
        "broken link missing/",
        "no anchor #nowhere in a/",
        "image not loaded",
        "a request left the site: http://198.51.100.1/x.png",
        "console error: boom",
        "HTTP 404",
    ):
        assert expected in text, text
    assert "#top" not in text and "a/:" not in text  # the good link, the clean page
