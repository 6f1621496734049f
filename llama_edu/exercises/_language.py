"""The language of exercise feedback, and its translation (the catalog: llama_edu.i18n).

Light on purpose: a check imports this on every run, and only a learner reading another
language pays for reading a catalog.
"""

from __future__ import annotations

import os

LANGUAGE = "zh_CN"


def language() -> str:
    """The language a learner reads: LLAMA_EDU_LANG (zh_CN, zh or en) if set, else zh_CN
    for a notebook opened from notebooks/zh/ in Jupyter (JPY_SESSION_NAME is its path),
    else English."""
    chosen = os.environ.get("LLAMA_EDU_LANG", "").strip()
    if chosen:
        return LANGUAGE if chosen.lower().replace("-", "_") in ("zh", "zh_cn") else "en"
    session = os.environ.get("JPY_SESSION_NAME", "").replace("\\", "/")
    return LANGUAGE if "/zh/" in f"/{session}" else "en"


_FEEDBACK: dict[str, list[tuple[str, str]]] = {}


def localize(message: str, lang: str | None = None) -> str:
    """`message` in the learner's language: each English piece with a current translation
    replaced, longest first (values and code stay as they are)."""
    lang = lang or language()
    if lang == "en":
        return message
    if lang not in _FEEDBACK:
        from .. import i18n

        path = i18n.catalog_path(i18n.FEEDBACK_DOMAIN, lang)
        table = i18n.translations(i18n.read_catalog(path)) if path.exists() else {}
        _FEEDBACK[lang] = sorted(table.items(), key=lambda item: -len(item[0]))
    for english, translated in _FEEDBACK[lang]:
        if english in message:
            message = message.replace(english, translated)
    return message
