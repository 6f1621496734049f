"""Sphinx configuration of the course website; `python -m llama_edu site build` runs it once
per language (LLAMA_EDU_SITE_LANGUAGE), on the page sources it writes to build/site-src/."""

import os
from pathlib import Path

from llama_edu import i18n, site

language_code = os.environ.get("LLAMA_EDU_SITE_LANGUAGE", "en")
spec = site.LANGUAGES[language_code]

project = "llama-edu"
author = "the llama-edu authors"
language = spec["sphinx"]
html_title = site.TEXT[language_code]["landing_title"]
html_short_title = "llama-edu"

extensions = ["myst_nb", "sphinx-mathjax-offline"]   # MathJax 3 served from the site itself
exclude_patterns = ["_notebooks/**", "jupyter_execute/**"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# Execution: through the site's jupyter-cache; a failing lesson fails the build.
nb_execution_mode = "cache"
nb_execution_cache_path = os.environ.get("LLAMA_EDU_SITE_CACHE", str(site.CACHE))
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_ipywidgets_js = {}        # no widget manager from a CDN: explorers show their static PNG
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
nb_merge_streams = True

html_theme = "furo"
templates_path = [str(Path(__file__).parent / "_templates")]
html_static_path = [str(Path(__file__).parent / "_static")]
html_css_files = ["llama-edu.css"]
html_sidebars = {"**": ["sidebar/brand.html", "sidebar/language.html", "sidebar/search.html",
                        "sidebar/scroll-start.html", "sidebar/navigation.html",
                        "sidebar/scroll-end.html"]}
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None

# The other languages' pages, for the switch: the twin page where it exists.
others = []
for code in site.LANGUAGES:
    if code != language_code:
        pages = {"index", "search", "genindex"} | set(site.lessons(code))
        others.append({"code": code, "name": site.LANGUAGES[code]["name"], "pages": pages})
html_context = {"llama_edu_languages": others}

# Search: Sphinx's Chinese index cuts words with jieba; the glossary's terms are taught to it
# so that a search for 旋转位置编码 finds the pages that use the term.
if language_code == "zh":
    words = Path(nb_execution_cache_path).parent / "site-jieba-words.txt"
    words.parent.mkdir(parents=True, exist_ok=True)
    words.write_text("".join(f"{term} 100000 n\n" for term in i18n.glossary().values()),
                     encoding="utf-8")
    html_search_options = {"dict": str(words)}

    import sphinx.search
    from sphinx.search.zh import SearchChinese

    class _SearchChinese(SearchChinese):
        """Sphinx 9.0's Chinese search ships the English stemmer (for the Latin words) but
        names it `ChineseStemmer` in language_data.js, a ReferenceError in the browser: name
        the stemmer it ships."""
        language_name = "English"

    sphinx.search.languages["zh"] = _SearchChinese
