"""Build assets/fonts/LlamaEduCJK-Regular.otf: the Chinese glyphs the course draws.

A development-time script, run once; the course only reads its output. It subsets Noto Sans
CJK SC Regular (SIL Open Font License 1.1, Adobe and Google) to

- the 3,755 characters of GB 2312 level 1 (the common simplified characters),
- every CJK character that appears in the course's own text (notebooks, package, assets),
- CJK punctuation (U+3000-U+303F) and the full-width forms (U+FF00-U+FFEF),

and renames it "Llama Edu CJK": a Modified Version under the OFL does not take the
original's name (and "Noto" is Google's trademark). The copyright and license name records
stay in the font; assets/fonts/OFL.txt and PROVENANCE.md sit beside it.

    apt-get install fonts-noto-cjk        # Debian's package of googlefonts/noto-cjk
    python scripts/build_cjk_font.py   # --source PATH for another copy of NotoSansCJK-Regular.ttc
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTCollection, TTFont

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "assets" / "fonts" / "LlamaEduCJK-Regular.otf"
FAMILY = "Llama Edu CJK"
SOURCE = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
TEXT_FILES = ("*.ipynb", "*.py", "*.md", "*.json", "*.po", "*.txt")


def gb2312_level1() -> set[str]:
    """GB 2312 rows 16-55 (bytes 0xB0-0xD7 by 0xA1-0xFE): 3,755 characters by frequency of
    use; row 55 ends at 0xF9."""
    chars = set()
    for high in range(0xB0, 0xD8):
        for low in range(0xA1, 0xFF):
            with contextlib.suppress(UnicodeDecodeError):   # the unused end of row 55
                chars.add(bytes([high, low]).decode("gb2312"))
    return chars


def is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (0x2E80 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or 0xFF00 <= code <= 0xFFEF
            or 0x20000 <= code <= 0x2FFFF)


def course_characters() -> set[str]:
    chars: set[str] = set()
    for pattern in TEXT_FILES:
        for path in ROOT.rglob(pattern):
            if any(part.startswith(".") for part in path.relative_to(ROOT).parts):
                continue
            chars |= {ch for ch in path.read_text(encoding="utf-8", errors="ignore")
                      if is_cjk(ch)}
    return chars


def load_sc(source: Path) -> TTFont:
    if source.suffix.lower() == ".ttc":
        for font in TTCollection(str(source)).fonts:
            if font["name"].getDebugName(1) == "Noto Sans CJK SC":
                return font
        raise SystemExit(f"{source} holds no 'Noto Sans CJK SC' face")
    return TTFont(str(source))


def rename(font: TTFont) -> None:
    names = font["name"]
    for record in list(names.names):
        if record.nameID in (1, 3, 4, 6, 16, 17):
            names.removeNames(nameID=record.nameID)
    for name_id, value in ((1, FAMILY), (2, "Regular"), (3, f"{FAMILY} Regular (subset)"),
                           (4, f"{FAMILY} Regular"), (6, "LlamaEduCJK-Regular")):
        names.setName(value, name_id, 3, 1, 0x409)
        names.setName(value, name_id, 1, 0, 0)
    font["CFF "].cff.fontNames = ["LlamaEduCJK-Regular"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    args = parser.parse_args()
    wanted = gb2312_level1() | course_characters()
    wanted |= {chr(c) for c in range(0x3000, 0x3040)} | {chr(c) for c in range(0xFF01, 0xFF5F)}
    font = load_sc(args.source)
    options = subset.Options()
    options.layout_features = ["kern", "vert", "vrt2"]   # no CJK shaping is needed beyond these
    options.name_IDs = ["*"]
    options.name_languages = [0x409, 0]
    options.hinting = False
    options.desubroutinize = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=[ord(ch) for ch in sorted(wanted)])
    subsetter.subset(font)
    rename(font)
    font.recalcTimestamp = False          # the same input gives the same bytes
    OUT.parent.mkdir(parents=True, exist_ok=True)
    font.save(str(OUT))
    covered = set(chr(c) for c in font.getBestCmap())
    missing = sorted(ch for ch in wanted if ch not in covered)
    digest = hashlib.sha256(OUT.read_bytes()).hexdigest()
    print(f"{OUT.relative_to(ROOT)}: {len(covered):,} characters, {OUT.stat().st_size:,} bytes, "
          f"sha256 {digest}")
    if missing:
        print(f"not in the source font ({len(missing)}): {''.join(missing)}")


if __name__ == "__main__":
    main()
