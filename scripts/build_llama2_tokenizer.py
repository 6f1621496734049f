"""Rebuild Llama 2's tokenizer.model, byte for byte, from the npm package llama-tokenizer-js.

Development only: the course reads the result, assets/llama2/tokenizer.model, and never runs
this. From the repository root, with npm installed:

    python scripts/build_llama2_tokenizer.py            # npm pack llama-tokenizer-js@1.2.2
                                                        # into a temporary folder, unpack it,
                                                        # write the file, check its sha256
    python scripts/build_llama2_tokenizer.py --tarball llama-tokenizer-js-1.2.2.tgz
    python scripts/build_llama2_tokenizer.py --check    # rebuild in memory, compare with assets

What the package holds (llama-tokenizer.js, MIT): `llama_vocab_base64`, Meta's 32,000 pieces
in id order joined by newlines, and `llama_merges_binary`, Hugging Face's merge list for the
same vocabulary as pairs of little-endian uint16 piece ids. It has no scores and no settings;
they are rebuilt here:

- scores: sentencepiece's BPE trainer gives the k-th piece it adds the score -k, so piece id
  i (after <unk>, <s>, </s> and the 256 byte pieces) scores -(i - 259); Meta's file gives the
  16 pieces made only of ▁ (▁ itself, ▁▁, ▁▁▁▁, ...) the score -1e9 instead. The merge list
  checks both: it is ordered by the score of the piece each merge makes, and the merged
  pieces come in id order except the whitespace-only ones, which come last. The single
  characters at the end of the vocabulary (from id 29871, "▁") are never made by a merge.
- types: <unk> UNKNOWN, <s> and </s> CONTROL, <0x00>..<0xFF> BYTE, the rest NORMAL; the
  meta pieces have score 0.
- trainer_spec and normalizer_spec: the values Meta's file prints (character_coverage
  0.99995, split_digits, byte_fallback, no pad id, max_sentencepiece_length 16, identity
  normalization without removing extra whitespace...), with exactly the fields it stores.

The file is written with llama_edu.tokenizer.spm_model.serialize_model and must have the
sha256 of Meta's tokenizer.model (recorded below and in assets/llama2/PROVENANCE.md).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import struct
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from npm_data import fetch_package, js_string, sha256_of  # noqa: E402

from llama_edu.tokenizer.spm_model import (  # noqa: E402
    BPE,
    BYTE,
    CONTROL,
    NORMAL,
    UNKNOWN,
    Piece,
    serialize_model,
)

PACKAGE, VERSION = "llama-tokenizer-js", "1.2.2"
TARBALL_SHA256 = "ee83014ac8b379b16cf8d81e99ffcdb23dfade8c0d2e751bd06e7dc0b8476e72"
EXPECTED_SHA256 = "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347"
OUTPUT = ROOT / "assets" / "llama2" / "tokenizer.model"
N_META = 3 + 256           # <unk>, <s>, </s>, then the byte pieces
WHITESPACE_SCORE = -1e9    # the score of the pieces made only of ▁ in Meta's file

# The settings stored in Meta's file, field for field (sentencepiece_model.proto names).
TRAINER_SPEC = {
    "input": ["/large_experiments/theorem/datasets/MERGED/all.test1.merged"],
    "model_prefix": "spm_model_32k_200M_charcov099995_allowWSO__v2",
    "model_type": BPE, "vocab_size": 32000, "self_test_sample_size": 0,
    "input_format": "text", "character_coverage": 0.99995,
    "input_sentence_size": 200000000, "seed_sentencepiece_size": 1000000,
    "shrinking_factor": 0.75, "num_threads": 80, "num_sub_iterations": 2,
    "max_sentence_length": 4192, "shuffle_input_sentence": True,
    "max_sentencepiece_length": 16, "split_by_unicode_script": True,
    "split_by_whitespace": True, "split_by_number": True,
    "treat_whitespace_as_suffix": False, "split_digits": True,
    "allow_whitespace_only_pieces": True, "vocabulary_output_piece_score": True,
    "hard_vocab_limit": True, "use_all_vocab": False, "byte_fallback": True,
    "required_chars": "", "unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1,
    "unk_surface": " \u2047 ", "unk_piece": "<unk>", "bos_piece": "<s>",
    "eos_piece": "</s>", "pad_piece": "<pad>", "train_extremely_large_corpus": False,
    "enable_differential_privacy": False, "differential_privacy_noise_level": 0.0,
    "differential_privacy_clipping_threshold": 0,
}
NORMALIZER_SPEC = {
    "name": "identity", "precompiled_charsmap": b"", "add_dummy_prefix": True,
    "remove_extra_whitespaces": False, "normalization_rule_tsv": "",
}


def read_package(package: Path) -> tuple[list[str], list[tuple[int, int]]]:
    """(pieces in id order, merges as (left id, right id)) from llama-tokenizer.js."""
    source = (package / "llama-tokenizer.js").read_text(encoding="utf-8")
    pieces = base64.b64decode(js_string(source, "llama_vocab_base64")).decode("utf-8")
    pieces = pieces.split("\n")
    packed = base64.b64decode(js_string(source, "llama_merges_binary"))
    ids = struct.unpack(f"<{len(packed) // 2}H", packed)
    return pieces, list(zip(ids[0::2], ids[1::2], strict=True))


def whitespace_only(piece: str) -> bool:
    return set(piece) == {"\u2581"}


def check_against_merges(pieces: list[str], merges: list[tuple[int, int]]) -> int:
    """Check the score rule on the merge list; returns the id of the first single character."""
    if len(pieces) != 32000 or pieces[:3] != ["<unk>", "<s>", "</s>"]:
        raise SystemExit(f"expected 32,000 pieces starting <unk> <s> </s>, got {len(pieces)}")
    if pieces[3:N_META] != [f"<0x{b:02X}>" for b in range(256)]:
        raise SystemExit("pieces 3-258 should be the byte pieces <0x00>..<0xFF>")
    to_id = {piece: i for i, piece in enumerate(pieces)}
    made = [to_id.get(pieces[a] + pieces[b]) for a, b in merges]
    if None in made:
        raise SystemExit("a merge makes a piece that is not in the vocabulary")
    order = [i for i in made if not whitespace_only(pieces[i])]
    if order != sorted(order):
        raise SystemExit("the merges are not in id order: the score rule -(id - 259) fails")
    spaces = [k for k, i in enumerate(made) if whitespace_only(pieces[i])]
    if spaces != list(range(len(order), len(made))):
        raise SystemExit("the whitespace-only pieces are not merged last: their score is not "
                         "below all others")
    first_char = min(set(range(N_META, len(pieces))) - set(made))
    if set(made) != set(range(N_META, first_char)) or any(
            len(p) != 1 for p in pieces[first_char:]):
        raise SystemExit("expected merged pieces, then single characters only")
    return first_char


def llama2_pieces(pieces: list[str]) -> list[Piece]:
    out = []
    for i, text in enumerate(pieces):
        if i < N_META:
            kind = UNKNOWN if i == 0 else CONTROL if i < 3 else BYTE
            out.append(Piece(text, 0.0, kind))
        else:
            score = WHITESPACE_SCORE if whitespace_only(text) else -float(i - N_META)
            out.append(Piece(text, score, NORMAL))
    return out


def build(tarball: Path | None = None) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        package = fetch_package(PACKAGE, VERSION, TARBALL_SHA256, Path(folder), tarball)
        pieces, merges = read_package(package)
    first_char = check_against_merges(pieces, merges)
    print(f"{PACKAGE}@{VERSION}: {len(pieces):,} pieces, {len(merges):,} merges; merged "
          f"pieces 259-{first_char - 1}, single characters {first_char}-{len(pieces) - 1}")
    return serialize_model(llama2_pieces(pieces), TRAINER_SPEC, NORMALIZER_SPEC)


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
