"""Rebuild Llama 3's tokenizer.model (tiktoken format), byte for byte, from llama3-tokenizer-js.

Development only: the course reads the result, assets/llama3/tokenizer.model, and never runs
this. From the repository root, with npm installed:

    python scripts/build_llama3_tokenizer.py            # npm pack llama3-tokenizer-js@1.2.0
                                                        # into a temporary folder, unpack it,
                                                        # write the file, check its sha256
    python scripts/build_llama3_tokenizer.py --tarball llama3-tokenizer-js-1.2.0.tgz
    python scripts/build_llama3_tokenizer.py --check    # rebuild in memory, compare with assets

What the package holds (src/data-converted.js, MIT): `llama_vocab_base64`, Llama 3's 128,000
BPE pieces in id order, joined by newlines, each written in GPT-2's byte-to-unicode form
(every byte shown as one printable character: "Ġ" is the space byte 0x20); and
`llama_merges_binary`, Hugging Face's merge list as pairs of 17-bit piece ids. Mapping each
character back to its byte gives the pieces' bytes, and a piece's id is its tiktoken rank:
Meta's file is one line per piece, `base64(bytes) rank`, in rank order. The merge list is
checked to agree: it comes in the order of the ranks of the pieces it makes, and it makes
every piece from 256 on. The result must have the sha256 of Meta's file (recorded below and
in assets/llama3/PROVENANCE.md).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from npm_data import fetch_package, js_string, sha256_of  # noqa: E402

from llama_edu.tokenizer.tiktoken_bpe import check_ranks, format_tiktoken  # noqa: E402

PACKAGE, VERSION = "llama3-tokenizer-js", "1.2.0"
TARBALL_SHA256 = "51084690c7239708a3eb6adead1173bfd61b1f4d31cb0b8487e12ba466346ff0"
EXPECTED_SHA256 = "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"
OUTPUT = ROOT / "assets" / "llama3" / "tokenizer.model"
N_PIECES = 128_000


def gpt2_byte_characters() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte (Radford et al., 2019, encoder.py), reversed.

    Bytes that are printable and not a space keep their own character ("!".."~", "¡".."¬",
    "®".."ÿ"); the other 68 take the characters from U+0100 on, in byte order.
    """
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in kept]
    table = {chr(b): b for b in kept}
    table.update({chr(256 + k): b for k, b in enumerate(moved)})
    return table


def read_package(package: Path) -> tuple[list[bytes], list[tuple[int, int]]]:
    """(piece bytes in id order, merges as (left id, right id)) from data-converted.js."""
    source = (package / "src" / "data-converted.js").read_text(encoding="utf-8")
    shown = base64.b64decode(js_string(source, "llama_vocab_base64")).decode("utf-8")
    to_byte = gpt2_byte_characters()
    try:
        pieces = [bytes(to_byte[ch] for ch in piece) for piece in shown.split("\n")]
    except KeyError as error:
        raise SystemExit(f"a piece holds {error}, which is no byte's GPT-2 character") from None
    packed = base64.b64decode(js_string(source, "llama_merges_binary"))
    bits = "".join(f"{byte:08b}" for byte in packed)   # 17 bits an id, most significant first
    n_ids = len(bits) // 17 // 2 * 2                    # the tail is zero padding
    ids = [int(bits[17 * k:17 * k + 17], 2) for k in range(n_ids)]
    return pieces, list(zip(ids[0::2], ids[1::2], strict=True))


def check_against_merges(pieces: list[bytes], merges: list[tuple[int, int]]) -> None:
    ranks = {piece: i for i, piece in enumerate(pieces)}
    if len(pieces) != N_PIECES or len(ranks) != N_PIECES:
        raise SystemExit(f"expected {N_PIECES:,} distinct pieces, got {len(ranks):,} of "
                         f"{len(pieces):,}")
    check_ranks(ranks, f"{PACKAGE}@{VERSION}")
    made = [ranks.get(pieces[a] + pieces[b]) for a, b in merges]
    if None in made or made != sorted(made) or set(made) != set(range(256, N_PIECES)):
        raise SystemExit("the merge list does not make pieces 256.. in rank order: the ids "
                         "are not tiktoken ranks")


def build(tarball: Path | None = None) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        package = fetch_package(PACKAGE, VERSION, TARBALL_SHA256, Path(folder), tarball)
        pieces, merges = read_package(package)
    check_against_merges(pieces, merges)
    print(f"{PACKAGE}@{VERSION}: {len(pieces):,} pieces, {len(merges):,} merges in rank order")
    return format_tiktoken({piece: rank for rank, piece in enumerate(pieces)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, help=f"a downloaded {PACKAGE}-{VERSION}.tgz")
    parser.add_argument("--check", action="store_true",
                        help=f"compare with {OUTPUT.relative_to(ROOT)} instead of writing it")
    args = parser.parse_args()
    data = build(args.tarball)
    digest = hashlib.sha256(data).hexdigest()
    if digest != EXPECTED_SHA256:
        raise SystemExit(f"the rebuilt file has sha256 {digest}, not Meta's {EXPECTED_SHA256}")
    if args.check:
        same = OUTPUT.is_file() and sha256_of(OUTPUT) == digest
        print(f"{OUTPUT.relative_to(ROOT)} {'matches' if same else 'DIFFERS from'} the rebuild")
        raise SystemExit(0 if same else 1)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_bytes(data)
    print(f"wrote {OUTPUT.relative_to(ROOT)}: {len(data):,} bytes, sha256 {digest} (Meta's)")


if __name__ == "__main__":
    main()
