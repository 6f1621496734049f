"""The course website in headless Chromium: every page loads cleanly and offline, shows its
figures and its typeset math, switches language to its twin, and finds lessons by search.

The site is built first (`python -m llama_edu site build`; with its execution cache warm this
only renders), then served from localhost. Every request to another host is refused and
recorded: the site must not need one.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from urllib.parse import quote

import pytest

from llama_edu import site

LESSONS = {language: site.lessons(language) for language in site.LANGUAGES}
PAGES = [(language, page) for language in site.LANGUAGES
         for page in ["index", "search", *LESSONS[language]]]


@pytest.fixture(scope="module")
def built():
    site.build()          # incremental: only what changed is rendered again
    return site.OUT


@pytest.fixture(scope="module")
def server(built):
    handler = functools.partial(_QuietHandler, directory=str(built))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def visit(browser, server, artifacts):
    """Open a page of the site; returns (page, problems), where problems lists every console
    error, uncaught exception, failed or outside request the page made."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = []

    def go(path: str):
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}")
                if not r.url.startswith(("data:", "blob:")) else None)
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
                if r.status >= 400 else None)

        def route(request_route):
            url = request_route.request.url
            if url.startswith(server) or url.startswith(("data:", "blob:")):
                request_route.continue_()
            else:
                problems.append(f"outside request: {url}")
                request_route.abort()

        page.route("**/*", route)
        page.goto(f"{server}/{path}", wait_until="load")
        page.wait_for_load_state("networkidle")
        opened.append(page)
        return page, problems

    yield go
    context.close()


def _typeset(page) -> None:
    """Wait until MathJax has typeset the page (on a page that loads it)."""
    page.evaluate("async () => { if (window.MathJax && MathJax.startup) "
                  "await MathJax.startup.promise; }")


@pytest.mark.parametrize("language,name", PAGES, ids=[f"{a}-{b}" for a, b in PAGES])
def test_every_page_loads_offline_without_errors(visit, language, name):
    page, problems = visit(f"{language}/{name}.html")
    _typeset(page)
    assert page.title(), "the page has no title"
    assert problems == [], f"{language}/{name}.html:\n" + "\n".join(problems)


@pytest.mark.parametrize("language,name", [(a, b) for a, b in PAGES if b[:2].isdigit()],
                         ids=[f"{a}-{b}" for a, b in PAGES if b[:2].isdigit()])
def test_every_lesson_page_shows_its_figures_and_typeset_math(visit, artifacts, language,
                                                              name):
    page, problems = visit(f"{language}/{name}.html")
    _typeset(page)
    images = page.eval_on_selector_all(
        "article img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])")
    assert images, f"{language}/{name}: the page shows no figure"
    broken = [src for src, complete, width in images if not complete or width == 0]
    assert not broken, f"{language}/{name}: images not decoded: {broken}"
    prose = page.evaluate("""() => {
        const article = document.querySelector('article').cloneNode(true);
        article.querySelectorAll('pre, code, script, style, mjx-container, .highlight,'
                                 + ' .cell_output').forEach(e => e.remove());
        return article.innerText; }""")
    for raw in ("$$", "\\frac", "\\(", "\\["):
        assert raw not in prose, f"{language}/{name}: raw math {raw!r} left unrendered"
    typeset = page.eval_on_selector_all("article mjx-container", "els => els.length")
    has_math = page.eval_on_selector_all("article .math", "els => els.length")
    assert typeset >= has_math > 0 or has_math == 0, \
        f"{language}/{name}: {has_math} formulas, {typeset} typeset"
    box = page.inner_text("article .admonition")
    assert "pip install -r requirements.txt && pytest" in box and "jupyter lab" in box, \
        f"{language}/{name}: the page does not say how to run it"
    links = page.eval_on_selector_all("article .admonition a",
                                      "els => els.map(e => e.getAttribute('href'))")
    assert sum(href.endswith(f"{name}.ipynb") for href in links) == 2, \
        f"{language}/{name}: the notebook and its learner's edition should be linked: {links}"
    if name == "02_positions":
        page.screenshot(path=str(artifacts / f"site-{language}-{name}.png"), full_page=False)
    assert problems == []


@pytest.mark.parametrize("language,other", [("en", "zh"), ("zh", "en")])
def test_the_language_switch_leads_to_the_twin_page(visit, server, language, other):
    page, problems = visit(f"{language}/02_positions.html")
    page.click(f"a.llama-edu-language-switch[lang={other}]")
    page.wait_for_load_state("load")
    assert page.url == f"{server}/{other}/02_positions.html"
    assert page.get_attribute("html", "lang").startswith(other)
    assert problems == []


@pytest.mark.parametrize("language,query", [("en", "RoPE"), ("zh", "旋转位置编码")])
def test_search_finds_lesson_02(visit, language, query):
    page, problems = visit(f"{language}/search.html?q={quote(query)}")
    page.wait_for_selector("#search-results ul li a", timeout=30_000)
    hits = page.eval_on_selector_all("#search-results ul li a",
                                     "els => els.map(e => e.getAttribute('href'))")
    assert any("02_positions" in href for href in hits), f"{query!r} found {hits}"
    assert problems == []


def test_the_front_page_links_each_language(visit):
    page, problems = visit("index.html")
    targets = page.eval_on_selector_all("a", "els => els.map(e => e.getAttribute('href'))")
    assert targets == [f"{code}/index.html" for code in site.LANGUAGES]
    assert problems == []


def test_no_page_names_another_host_for_what_it_loads(built):
    """The same rule read from the files: no script, stylesheet, image or font from outside."""
    import re

    outside = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", re.I)
    loaders = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*>", re.I)
    offenders = []
    for html in Path(built).rglob("*.html"):
        for tag in loaders.findall(html.read_text(encoding="utf-8")):
            if outside.search(tag) and not re.search(r"rel=[\"'](?:next|prev|canonical)", tag):
                offenders.append(f"{html.relative_to(built)}: {tag[:120]}")
    for css in Path(built).rglob("*.css"):
        offenders += [f"{css.relative_to(built)}: {m}" for m in
                      re.findall(r"url\(\s*['\"]?(?:https?:)?//[^)]*\)", css.read_text("utf-8"))]
    assert not offenders, "\n".join(offenders[:20])
