"""The Chinese edition: translations kept as gettext catalogs, notebooks generated from them.

The English notebooks are the one source of truth. Every piece of text a reader sees is a
message in a catalog (`locales/zh_CN/LC_MESSAGES/<lesson>.po`, the format Python's own
documentation is translated in):

- each block of a markdown cell (paragraphs, headings, lists, tables: split at blank lines);
- each comment in a code cell;
- each string literal in a code cell that reads as prose (it holds a space between words):
  printed sentences, titles, axis labels, control labels.

`python -m llama_edu.i18n` refreshes the catalogs from the English notebooks (a message
whose English changed keeps its old translation, marked *fuzzy*: stale, as `msgmerge` does)
and writes `notebooks/zh/<lesson>.ipynb`, the English notebook with each translated message
put in place, and its learner's edition in `notebooks/zh/learner/`. A message without a
translation, or with a stale one, stays in English, and `stale_messages()` lists it. Code
is never translated: `code_skeleton` of a Chinese cell equals that of its English cell
(tests/test_i18n.py holds them equal).
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import sys
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
LOCALES = ROOT / "locales"
LANGUAGE = "zh_CN"
OUTPUT = {"zh_CN": NOTEBOOKS / "zh"}
_PROSE = re.compile(r"[^\W\d_]{2,}\s+\S*[^\W\d_]{2,}")   # two words, whitespace between
_MARKERS = re.compile(r"(BEGIN|END) (SOLUTION|HIDDEN TESTS)")       # nbgrader's, never translated


@dataclass(frozen=True)
class Message:
    """One translatable piece of one cell: `kind` is markdown, comment or string."""
    cell: str     # the cell's id
    kind: str
    text: str


# ---------------------------------------------------------------------------------------
# what a reader sees, cell by cell

def markdown_blocks(source: str) -> list[str]:
    """A markdown cell split at blank lines, fenced code and $$ math kept in one block."""
    blocks, current, fenced = [], [], None
    for line in source.split("\n"):
        stripped = line.strip()
        if fenced is None and stripped.startswith("```"):
            fenced = "```"
        elif fenced == "```" and stripped.startswith("```"):
            fenced = None
        elif fenced is None and stripped.startswith("$$") and stripped.count("$$") == 1:
            fenced = "$$"
        elif fenced == "$$" and "$$" in stripped:
            fenced = None
        if not stripped and fenced is None:
            if current:
                blocks.append("\n".join(current))
            current = []
        else:
            current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


def _prose_strings(source: str) -> list[ast.Constant | ast.JoinedStr]:
    """String literals (plain or f-strings) whose text reads as prose, outermost only,
    excluding docstrings' neighbours such as dict keys and subscripts."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            skip |= {id(k) for k in node.keys if k is not None}
        elif isinstance(node, ast.Subscript):        # d["key"] and d["a", "b"] alike
            skip |= {id(v) for v in ast.walk(node.slice)}
        elif isinstance(node, ast.JoinedStr):
            skip |= {id(v) for v in ast.walk(node) if v is not node}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
        else:
            continue
        if _PROSE.search(text):
            found.append(node)
    return found


def _line_offsets(source: str) -> list[int]:
    offsets, total = [0], 0
    for line in source.splitlines(keepends=True):
        total += len(line)
        offsets.append(total)
    return offsets


def _spans(source: str) -> list[tuple[int, int, str, str]]:
    """(start, end, kind, text) of each comment and prose string in a code cell's source,
    as character offsets, in order."""
    offsets = _line_offsets(source)
    spans = []
    for node in _prose_strings(source):
        start = offsets[node.lineno - 1] + _char_col(source, offsets, node.lineno, node.col_offset)
        end = offsets[node.end_lineno - 1] + _char_col(source, offsets, node.end_lineno,
                                                       node.end_col_offset)
        spans.append((start, end, "string", source[start:end]))
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if (token.type == tokenize.COMMENT and _PROSE.search(token.string)
                    and not _MARKERS.search(token.string)):
                start = offsets[token.start[0] - 1] + token.start[1]
                spans.append((start, start + len(token.string), "comment", token.string))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return sorted(spans)


def _char_col(source: str, offsets: list[int], lineno: int, byte_col: int) -> int:
    """ast's columns count UTF-8 bytes; turn one into a character column."""
    line = source[offsets[lineno - 1]:offsets[lineno]]
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def messages(notebook) -> Iterator[Message]:
    """Every translatable message of a notebook, in reading order."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for block in markdown_blocks(cell.source):
                yield Message(cell.id, "markdown", block)
        elif cell.cell_type == "code":
            for _, _, kind, text in _spans(cell.source):
                yield Message(cell.id, kind, text)


class _Blank(ast.NodeTransformer):
    """Every string literal blanked; an f-string keeps its expressions and their formats."""

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.Constant:
        kept = sorted(f"{ast.unparse(v.value)}!{v.conversion}:"
                      f"{ast.unparse(v.format_spec) if v.format_spec else ''}"
                      for v in node.values if isinstance(v, ast.FormattedValue))
        return ast.Constant(f"<text {kept}>")

    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        return ast.Constant("<text>") if isinstance(node.value, str) else node


def code_skeleton(source: str) -> str:
    """A code cell without its comments and with its string literals blanked: what must
    not differ between the editions. An f-string keeps its expressions, so a translation
    that drops or changes one shows. (A cell Python cannot parse, e.g. one with IPython
    magics, is compared token by token.)"""
    try:
        return ast.unparse(_Blank().visit(ast.parse(source)))
    except SyntaxError:
        tokens = []
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                continue
            tokens.append("<text>" if token.type == tokenize.STRING else token.string)
        return " ".join(t for t in tokens if t.strip())


# ---------------------------------------------------------------------------------------
# catalogs

def catalog_path(lesson: str, language: str = LANGUAGE) -> Path:
    return LOCALES / language / "LC_MESSAGES" / f"{lesson}.po"


def template(notebook, lesson: str) -> Catalog:
    """The catalog of a notebook's messages, with no translations (a .pot)."""
    catalog = Catalog(project="llama-edu", domain=lesson, charset="utf-8")
    for message in messages(notebook):
        if message.text in catalog:
            catalog[message.text].locations.append((f"{lesson}.ipynb#{message.cell}", 0))
        else:
            catalog.add(message.text, locations=[(f"{lesson}.ipynb#{message.cell}", 0)],
                        auto_comments=[message.kind])
    return catalog


def read_catalog(path: Path) -> Catalog:
    with open(path, "rb") as handle:
        return read_po(handle, locale=path.parent.parent.name)


def write_catalog(catalog: Catalog, path: Path) -> None:
    """Write `catalog`; an unchanged one keeps its file (and its dates) as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        before = read_catalog(path)
        catalog.creation_date = before.creation_date     # no churn from a rerun
        catalog.revision_date = before.revision_date
    buffer = io.BytesIO()
    write_po(buffer, catalog, width=100, omit_header=False, sort_output=False,
             include_previous=True, ignore_obsolete=True)
    path.write_bytes(buffer.getvalue())


def update_catalog(lesson: str, language: str = LANGUAGE) -> Catalog:
    """The lesson's catalog refreshed from its English notebook: new messages added,
    vanished ones dropped, changed ones kept with their old translation marked fuzzy."""
    notebook = nbformat.read(NOTEBOOKS / f"{lesson}.ipynb", as_version=4)
    fresh = template(notebook, lesson)
    path = catalog_path(lesson, language)
    if path.exists():
        catalog = read_catalog(path)
        catalog.update(fresh, no_fuzzy_matching=False, update_header_comment=False)
    else:
        catalog = Catalog(locale=language, project="llama-edu", domain=lesson,
                          charset="utf-8")
        catalog.update(fresh)
    write_catalog(catalog, path)
    return catalog


def translations(catalog: Catalog) -> dict[str, str]:
    """English -> translation for each message with a current (not fuzzy) translation."""
    return {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy}


def stale_messages(catalog: Catalog) -> list[str]:
    """The English of each message with no translation or a fuzzy (stale) one."""
    return [m.id for m in catalog if m.id and (not m.string or m.fuzzy)]


# ---------------------------------------------------------------------------------------
# the glossary: one Chinese term per English term, the English in parentheses at first use

def glossary(language: str = LANGUAGE) -> dict[str, str]:
    """English term -> the course's Chinese term, from `locales/<language>/glossary.tsv`."""
    rows = {}
    path = LOCALES / language / "glossary.tsv"
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#") or line.startswith("english\t"):
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise ValueError(f"{path}: each line is english<TAB>chinese<TAB>note, got {line!r}")
        rows[fields[0]] = fields[1]
    return rows


def first_use_problems(prose: str, terms: dict[str, str]) -> list[str]:
    """Each glossary term whose first use in `prose` (a lesson's text in reading order) is
    not followed by its English in parentheses, e.g. 词元（token） or 词元 (token)."""
    problems = []
    for english, chinese in terms.items():
        # an occurrence inside a longer term (注意力 in 多头注意力) is that term's use
        inside = [(m.start(), m.end()) for longer in terms.values()
                  if len(longer) > len(chinese) and chinese in longer
                  for m in re.finditer(re.escape(longer), prose)]
        at = next((m.start() for m in re.finditer(re.escape(chinese), prose)
                   if not any(a <= m.start() < b for a, b in inside)), -1)
        if at < 0:
            continue
        after = prose[at + len(chinese):at + len(chinese) + len(english) + 4].lstrip()
        if not re.match(r"[（(]\s*" + re.escape(english) + r"\b", after, re.IGNORECASE):
            problems.append(f"{chinese} at its first use should read {chinese}（{english}）")
    return problems


# ---------------------------------------------------------------------------------------
# the translated notebook

def translate_code(source: str, table: dict[str, str]) -> str:
    out, last = [], 0
    for start, end, _, text in _spans(source):
        out.append(source[last:start])
        out.append(table.get(text, text))
        last = end
    out.append(source[last:])
    return "".join(out)


def translate_markdown(source: str, table: dict[str, str]) -> str:
    return "\n\n".join(table.get(block, block) for block in markdown_blocks(source))


def translate_notebook(notebook, table: dict[str, str], language: str = LANGUAGE):
    """A copy of `notebook` with every message found in `table` translated."""
    translated = nbformat.from_dict(notebook)
    for cell in translated.cells:
        if cell.cell_type == "markdown":
            cell.source = translate_markdown(cell.source, table)
        elif cell.cell_type == "code":
            cell.source = translate_code(cell.source, table)
    translated.metadata["language_info"] = dict(translated.metadata.get("language_info", {}))
    translated.metadata["llama_edu"] = {"language": language}
    return translated


# ---------------------------------------------------------------------------------------
# exercise feedback: each English piece of a check's messages, translated where it is read

EXERCISES = Path(__file__).resolve().parent / "exercises"
FEEDBACK_DOMAIN = "exercises"


def feedback_pieces(path: Path) -> list[str]:
    """The English pieces of one exercises module's messages: every string literal, and
    every literal part of an f-string, that holds a word and a space (docstrings aside).
    A message is put together from them and from values, so translating each piece
    translates the message."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    pieces: list[str] = []
    for node in ast.walk(tree):
        if id(node) in docstrings or not isinstance(node, ast.Constant):
            continue
        text = node.value
        if isinstance(text, str) and " " in text.strip() and re.search(r"[A-Za-z]{2}", text) \
                and text not in pieces:
            pieces.append(text)
    return pieces


def feedback_template() -> Catalog:
    catalog = Catalog(project="llama-edu", domain=FEEDBACK_DOMAIN, charset="utf-8")
    for path in sorted(EXERCISES.glob("*.py")):
        if path.name == "__init__.py":
            continue
        for piece in feedback_pieces(path):
            location = (f"llama_edu/exercises/{path.name}", 0)
            if piece in catalog:
                catalog[piece].locations.append(location)
            else:
                catalog.add(piece, locations=[location])
    return catalog


def update_feedback_catalog(language: str = LANGUAGE) -> Catalog:
    path = catalog_path(FEEDBACK_DOMAIN, language)
    if path.exists():
        catalog = read_catalog(path)
        catalog.update(feedback_template(), update_header_comment=False)
    else:
        catalog = Catalog(locale=language, project="llama-edu", domain=FEEDBACK_DOMAIN,
                          charset="utf-8")
        catalog.update(feedback_template())
    write_catalog(catalog, path)
    return catalog


def lessons() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def translated_lessons(language: str = LANGUAGE) -> list[str]:
    """The lessons whose translation has begun: those with a catalog."""
    folder = LOCALES / language / "LC_MESSAGES"
    return sorted(p.stem for p in folder.glob("[0-9][0-9]_*.po"))


def build(language: str = LANGUAGE, only: list[str] | None = None) -> list[tuple[str, int, int]]:
    """Refresh each catalog and write each translated notebook; (lesson, messages, stale).
    `only`: these lessons (a new one gets its catalog); else every lesson with a catalog."""
    out_dir = OUTPUT[language]
    out_dir.mkdir(parents=True, exist_ok=True)
    report = []
    for lesson in only or translated_lessons(language):
        catalog = update_catalog(lesson, language)
        notebook = nbformat.read(NOTEBOOKS / f"{lesson}.ipynb", as_version=4)
        translated = translate_notebook(notebook, translations(catalog), language)
        text = nbformat.writes(translated) + "\n"
        (out_dir / f"{lesson}.ipynb").write_text(text, encoding="utf-8")
        report.append((lesson, len([m for m in catalog if m.id]), len(stale_messages(catalog))))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Refresh the translation catalogs and regenerate the translated notebooks.")
    parser.add_argument("lessons", nargs="*",
                        help="lesson stems, e.g. 02_positions; naming a lesson without a "
                             "catalog starts its translation (default: every lesson that has "
                             "a catalog)")
    parser.add_argument("--language", default=LANGUAGE, choices=sorted(OUTPUT))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.lessons) - set(lessons()))
    if unknown:
        parser.error(f"no such lesson: {', '.join(unknown)} (try one of {', '.join(lessons())})")
    for lesson, total, stale in build(args.language, args.lessons or None):
        state = "up to date" if not stale else f"{stale} untranslated or stale"
        print(f"{lesson}: {total} messages, {state}")
    from .learner import write_learner_edition

    write_learner_edition(OUTPUT[args.language], OUTPUT[args.language] / "learner")
    feedback = update_feedback_catalog(args.language)
    print(f"exercise feedback: {len([m for m in feedback if m.id])} pieces, "
          f"{len(stale_messages(feedback))} untranslated or stale")
    return 0


if __name__ == "__main__":
    sys.exit(main())
