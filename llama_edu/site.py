"""The course as a website: every lesson executed, with its figures, in English and Chinese.

    python -m llama_edu site build            # -> build/site/index.html, en/, zh/
    python -m llama_edu site serve            # http://localhost:8000 on the built site

Sphinx renders the notebooks through myst-nb (configuration: `website/conf.py`). Each
lesson page is the instructor's notebook with its outputs, plus a box that says how to run
it and links the notebook and its learner's edition; solution cells are folded. Execution
goes through a jupyter-cache (`build/site-cache`): a lesson whose code cells have not
changed is not run again. pytest fills that cache with the runs nbval makes when
`LLAMA_EDU_SITE_CACHE` names it, so the site costs no second execution. The
cache is emptied when the package or the assets change, since a lesson's outputs depend on
them and not only on its own code.

Everything the pages load (MathJax, fonts, scripts, the search index) is inside the built
site: it reads offline, through a local server (`site serve`).
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CONFIG = ROOT / "website"
BUILD = ROOT / "build"
CACHE = BUILD / "site-cache"
OUT = BUILD / "site"

# language code -> (the notebooks, their learner's edition, the README with the lesson map,
# the Sphinx language, the name shown in the switch, LLAMA_EDU_LANG for the checks' feedback)
LANGUAGES = {
    "en": dict(notebooks=NOTEBOOKS, learner=NOTEBOOKS / "learner", readme=ROOT / "README.md",
               sphinx="en", name="English", feedback="en"),
    "zh": dict(notebooks=NOTEBOOKS / "zh", learner=NOTEBOOKS / "zh" / "learner",
               readme=ROOT / "README.zh-CN.md", sphinx="zh_CN", name="中文", feedback="zh_CN"),
}

TEXT = {
    "en": dict(
        run_title="Run this lesson",
        run=("On your own machine, with Python 3.11, from a checkout of the repository: the "
             "first command opens the learner's edition (exercises blank, checks in place), "
             "the second runs the tests, every lesson included."),
        files="This page shows the instructor's notebook, executed, solutions folded:",
        source="the notebook (with solutions)", learner="its learner's edition",
        landing_title="llama-edu: rebuild Llama 2, one idea at a time",
        landing=("An interactive Jupyter course that rebuilds Llama 2 step by step in "
                 "PyTorch. Every lesson below is shown executed, with its figures and "
                 "printed results; run it yourself with the two commands:"),
        map_title="Lessons", lesson="lesson", idea="the idea", checked="checked against"),
    "zh": dict(
        run_title="运行这一课",
        run=("在你自己的电脑上（Python 3.11），在仓库的根目录下：第一条命令打开学习者版本"
             "（练习留空、检查就位），第二条命令运行全部测试，包括每一课。"),
        files="本页展示的是已执行的教师版 notebook，答案已折叠：",
        source="notebook（含答案）", learner="学习者版本",
        landing_title="llama-edu：一次一个概念，重建 Llama 2",
        landing=("一门交互式 Jupyter 课程，用 PyTorch 一步步重建 Llama 2。下面每一课都以执行后的"
                 "形式展示，带图表和打印结果；用这两条命令亲自运行："),
        map_title="课程目录", lesson="课程", idea="内容", checked="对照的参考实现"),
}


def lessons(language: str) -> list[str]:
    """The lesson stems this language has, e.g. ["00_overview", ...]."""
    return sorted(p.stem for p in LANGUAGES[language]["notebooks"].glob("[0-9][0-9]_*.ipynb"))


def commands(language: str, lesson: str) -> str:
    learner = LANGUAGES[language]["learner"].relative_to(ROOT) / f"{lesson}.ipynb"
    return (f"pip install -r requirements.txt && jupyter lab {learner.as_posix()}\n"
            "pip install -r requirements.txt && pytest")


# ---------------------------------------------------------------------------------------
# the pages' sources

def title(notebook) -> str:
    """The lesson's title: its first markdown heading, without the '#'."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    raise ValueError("a lesson notebook must start with a '# ' heading (its title)")


def page(notebook, language: str, lesson: str):
    """The lesson as its page shows it: a 'run this lesson' box after the title, solution
    cells folded. (An explorer's output carries a PNG beside its widget view; the page shows
    the PNG, see nb_mime_priority_overrides in website/conf.py.)"""
    text = TEXT[language]
    notebook = copy.deepcopy(notebook)
    source = f"_notebooks/{lesson}.ipynb"
    learner = f"_notebooks/learner/{lesson}.ipynb"
    box = (f"```{{admonition}} {text['run_title']}\n:class: tip\n{text['run']}\n\n"
           f"    {commands(language, lesson).replace(chr(10), chr(10) + '    ')}\n\n"
           f"{text['files']} {{download}}`{text['source']} <{source}>`, "
           f"{{download}}`{text['learner']} <{learner}>`.\n```")
    cell = nbformat.v4.new_markdown_cell(box)
    cell.id = "llama-edu-site-run"
    notebook.cells.insert(1, cell)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        if "### BEGIN SOLUTION" in cell.source:
            tags = cell.metadata.setdefault("tags", [])
            if "hide-input" not in tags:
                tags.append("hide-input")
    return notebook


def lesson_map(language: str, shown: list[str] | None = None) -> str:
    """The README's lesson table with each lesson titled by its notebook and linked to its
    page (when the page is `shown`, default: all)."""
    text, rows = TEXT[language], []
    readme = LANGUAGES[language]["readme"].read_text(encoding="utf-8")
    cells_of = {}
    for line in readme.splitlines():
        match = re.match(r"\|\s*(\d\d)\s*\|(.*)\|\s*$", line)
        if match:
            cells = [c.strip() for c in match.group(2).split("|")]
            cells_of[match.group(1)] = cells[1:]          # the idea, checked against
    for lesson in lessons(language):
        number = lesson[:2]
        if number not in cells_of:
            raise ValueError(f"{LANGUAGES[language]['readme'].name} has no row for lesson "
                             f"{number} in its lesson table: add one")
        notebook = nbformat.read(LANGUAGES[language]["notebooks"] / f"{lesson}.ipynb", 4)
        idea, checked = (cells_of[number] + ["", ""])[:2]
        name = title(notebook)
        link = f"[{name}]({lesson}.ipynb)" if shown is None or lesson in shown else name
        rows.append(f"| {number} | {link} | {idea} | {checked} |")
    return "\n".join([f"| # | {text['lesson']} | {text['idea']} | {text['checked']} |",
                      "|---|---|---|---|", *rows])


def landing(language: str, shown: list[str]) -> str:
    text = TEXT[language]
    stems = "\n".join(shown)
    first = commands(language, lessons(language)[0])
    return (f"# {text['landing_title']}\n\n{text['landing']}\n\n```bash\n{first}\n```\n\n"
            f"## {text['map_title']}\n\n{lesson_map(language, shown)}\n\n"
            f"```{{toctree}}\n:hidden:\n:maxdepth: 1\n\n{stems}\n```\n")


def _write(path: Path, text: str) -> None:
    """Write only when the text changed, so Sphinx rebuilds only what changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def sources(language: str, folder: Path, only: list[str] | None = None) -> list[str]:
    """Write the language's page sources into `folder`; the lessons written."""
    spec = LANGUAGES[language]
    chosen = [lesson for lesson in lessons(language) if not only or lesson[:2] in only
              or lesson in only]
    if not chosen:
        raise ValueError(f"no {language} lesson matches {only}; try e.g. 02 or 02_positions")
    for stale in folder.glob("[0-9][0-9]_*.ipynb"):
        if stale.stem not in chosen:
            stale.unlink()
    for lesson in chosen:
        notebook = nbformat.read(spec["notebooks"] / f"{lesson}.ipynb", as_version=4)
        _write(folder / f"{lesson}.ipynb", nbformat.writes(page(notebook, language, lesson)))
        for kind, where in (("", spec["notebooks"]), ("learner/", spec["learner"])):
            _write(folder / "_notebooks" / kind / f"{lesson}.ipynb",
                   (where / f"{lesson}.ipynb").read_text(encoding="utf-8"))
    _write(folder / "index.md", landing(language, chosen))
    return chosen


# ---------------------------------------------------------------------------------------
# execution: a jupyter-cache, emptied when the package or the assets change

def code_stamp() -> str:
    """A hash of everything a lesson's outputs depend on besides its own cells."""
    digest = hashlib.sha256()
    for pattern in ("llama_edu/**/*.py", "assets/**/*", "requirements.txt"):
        for path in sorted(ROOT.glob(pattern)):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(path.relative_to(ROOT).as_posix().encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def open_cache(path: Path = CACHE):
    """The site's jupyter-cache, emptied first if it was filled under other code."""
    from jupyter_cache import get_cache

    stamp = code_stamp()
    marker = path / "llama_edu_stamp"
    if path.exists() and (not marker.exists() or marker.read_text() != stamp):
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    marker.write_text(stamp)
    return get_cache(str(path))


def cache_executed(runs: dict[Path, object], path: Path | None = None) -> int:
    """Put notebooks executed elsewhere (nbval's runs under pytest) into the site's cache;
    `runs` maps each lesson's path to its executed notebook. Returns how many were cached."""
    from jupyter_cache.base import CacheBundleIn

    cache = open_cache(path or CACHE)
    cached = 0
    for source, notebook in runs.items():
        source = Path(source)
        # jupyter-cache matches code cells with their metadata: cache the page's version
        shown = page(notebook, _language_of(source), source.stem)
        cache.cache_notebook_bundle(CacheBundleIn(shown, str(source)),
                                    check_validity=False, overwrite=True)
        cached += 1
    return cached


def _language_of(path: Path) -> str | None:
    """The language whose lessons' folder holds `path`, or None (e.g. a learner's edition)."""
    folder = Path(path).resolve().parent
    return next((code for code, spec in LANGUAGES.items()
                 if spec["notebooks"].resolve() == folder), None)


def site_lessons(paths) -> list[Path]:
    """Of these notebook paths, the ones the site shows: the lessons in each language, not
    their learner's editions."""
    return [Path(p) for p in paths if _language_of(p) and re.match(r"\d\d_", Path(p).name)]


# ---------------------------------------------------------------------------------------
# the build

@contextmanager
def _environment(**values):
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def build(out: Path = OUT, languages: list[str] | None = None, only: list[str] | None = None,
          cache: Path = CACHE, quiet: bool = True) -> Path:
    """Build the site into `out`; returns the path of its front page."""
    from sphinx.cmd.build import build_main

    languages = languages or list(LANGUAGES)
    unknown = sorted(set(languages) - set(LANGUAGES))
    if unknown:
        raise ValueError(f"no such language: {', '.join(unknown)} (the site has "
                         f"{', '.join(LANGUAGES)})")
    open_cache(cache)
    for language in languages:
        folder = BUILD / "site-src" / language
        sources(language, folder, only)
        with _environment(LLAMA_EDU_SITE_LANGUAGE=language, LLAMA_EDU_SITE_CACHE=str(cache),
                          LLAMA_EDU_LANG=LANGUAGES[language]["feedback"]):
            status = build_main(["-b", "html", "-c", str(CONFIG), "-j", "1",
                                 *(["-q"] if quiet else []), str(folder), str(out / language)])
        if status:
            raise RuntimeError(f"sphinx-build failed for the {language} site (status "
                               f"{status}); its messages are above")
    front = out / "index.html"
    front.write_text(_front_page(list(LANGUAGES)), encoding="utf-8")
    return front


def _front_page(languages: list[str]) -> str:
    links = "\n".join(f'<li><a href="{code}/index.html" lang="{code}">{LANGUAGES[code]["name"]}'
                      f"</a></li>" for code in languages)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            "<title>llama-edu</title></head>\n<body><h1>llama-edu</h1>\n"
            f"<p>Rebuild Llama 2, one idea at a time / 一次一个概念，重建 Llama 2</p>\n"
            f"<ul>\n{links}\n</ul>\n</body></html>\n")


def serve(folder: Path = OUT, port: int = 8000) -> None:
    import functools
    import http.server

    if not (folder / "index.html").exists():
        raise FileNotFoundError(f"{folder} holds no built site: run `python -m llama_edu site "
                                "build` first")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        print(f"serving {folder} at http://127.0.0.1:{port}/ (Ctrl-C stops)")
        server.serve_forever()


def add_commands(commands) -> None:
    """`python -m llama_edu site build|serve`, under the package's command line."""
    site = commands.add_parser("site", help="build the course website (executed lessons, "
                                            "English and Chinese) or serve it locally",
                               description=__doc__.split("\n\n")[0])
    actions = site.add_subparsers(dest="action", required=True, metavar="{build,serve}",
                                   help="build: execute and render the lessons; "
                                        "serve: show the built site on localhost")
    b = actions.add_parser("build", help="build the site (default: build/site)")
    b.add_argument("--out", type=Path, default=OUT, help="where the site goes")
    b.add_argument("--language", nargs="+", default=None, choices=sorted(LANGUAGES),
                   help="only these languages (default: all)")
    b.add_argument("--lessons", nargs="+", default=None,
                   help="only these lessons, e.g. 02 05 (default: all)")
    b.add_argument("--verbose", action="store_true", help="Sphinx's full log")
    s = actions.add_parser("serve", help="serve the built site on localhost")
    s.add_argument("--out", type=Path, default=OUT, help="the built site")
    s.add_argument("--port", type=int, default=8000, help="the local port (default: 8000)")


def run(args) -> None:
    if args.action == "build":
        front = build(args.out, args.language, args.lessons, quiet=not args.verbose)
        print(f"site built: {front} (serve it with `python -m llama_edu site serve`)")
    else:
        serve(args.out, args.port)
