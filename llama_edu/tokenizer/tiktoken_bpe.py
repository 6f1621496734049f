"""Llama 3's tokenizer: byte-level BPE by rank, tiktoken's scheme, in plain Python (lesson 01).

Llama 3 (Meta, 2024) keeps no merge list. Its `tokenizer.model` lists 128,000 byte strings,
one a line as `base64(bytes) rank`, and the rank is the token id. A word (a piece of text cut
by `LLAMA3_SPLIT`) is encoded as tiktoken does:

    if the word's bytes are a token:  that one token (588 of Llama 3's tokens are reached
                                      only this way, not by merging pairs)
    else:  start from single bytes; while some adjacent pair (a, b) has a + b in the ranks,
           merge the pair whose a + b has the lowest rank (the leftmost among equals)

    >>> ranks = {b"a": 0, b"b": 1, b"c": 2, b"ab": 3, b"bc": 4, b"abc": 5}
    >>> encode_by_rank(b"abcab", ranks)   # ab (3) first, both times; then ab c -> abc (5)
    [5, 3]

For a BPE trained by merging pairs (GPT-2's, or `ByteLevelBPE.train`), "lowest rank of the
concatenation" picks the same merges as "earliest merge rule" (the tests hold ByteLevelBPE's
trained merges equal to tiktoken on its exported ranks), which is why ranks alone can stand
for a merge list. The 256 special tokens follow the 128,000 ranks (ids 128000-128255)
with the names Meta's tokenizer gives them.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from .pairs import merge_best_pairs

N_RESERVED_SPECIAL = 256
# Meta's names (llama3/tokenizer.py): ten named or reserved slots, then reserved 5 to 250.
LLAMA3_SPECIAL_TOKENS = [
    "<|begin_of_text|>", "<|end_of_text|>",
    "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>", "<|reserved_special_token_3|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>",
] + [f"<|reserved_special_token_{i}|>" for i in range(5, N_RESERVED_SPECIAL - 5)]

_NO_RANK = 1 << 62  # larger than any rank: "this pair is not a token"


def encode_by_rank(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Token ids of one word's bytes by the rank rule above (tiktoken's byte_pair_merge).

    pair_ranks[i] is the rank of parts[i] + parts[i + 1]; min() finds the lowest and index()
    its leftmost place; after a merge only the two neighbouring pairs change. Every single
    byte must have a rank.
    """
    whole = ranks.get(piece)
    if whole is not None:
        return [whole]
    parts = [piece[i:i + 1] for i in range(len(piece))]
    merge_best_pairs(parts, ranks.get, _NO_RANK, min)
    return [ranks[part] for part in parts]


def check_ranks(ranks: dict[bytes, int], source: str = "the ranks") -> None:
    """Ranks must be the ids 0..n-1, one per distinct byte string, with all 256 bytes."""
    n, values = len(ranks), set(ranks.values())
    if values != set(range(n)):  # n distinct byte strings: then no rank is repeated either
        missing = min(set(range(n)) - values)
        outside = sorted(values - set(range(n)))
        why = f"{outside[0]} is outside 0..{n - 1}" if outside else "another is repeated"
        raise ValueError(f"{source}: ranks must be the ids 0 to {n - 1}, each once; rank "
                         f"{missing} is missing and {why}")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"{source} has no rank for the single byte 0x{missing[0]:02X} "
                         f"({len(missing)} of the 256 bytes are missing); every byte needs one "
                         "so that any text can be encoded")


def read_tiktoken(path: str | Path) -> dict[bytes, int]:
    """Read a tiktoken BPE file (`base64 rank` lines, as Meta's Llama 3 tokenizer.model)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tiktoken BPE file at {str(path)!r}: check the path "
                                "(the course's is assets/llama3/tokenizer.model)")
    ranks: dict[bytes, int] = {}
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                piece = base64.b64decode(token, validate=True)
                rank_id = int(rank)
            except (ValueError, binascii.Error):
                raise ValueError(f"{str(path)!r} line {number}: expected 'base64 rank', got "
                                 f"{line[:60]!r}; is this a tiktoken BPE file?") from None
            if piece in ranks:
                raise ValueError(f"{str(path)!r} line {number}: the bytes {piece!r} already "
                                 f"have rank {ranks[piece]}")
            ranks[piece] = rank_id
    if not ranks:
        raise ValueError(f"{str(path)!r} is empty; expected a tiktoken BPE file")
    check_ranks(ranks, repr(str(path)))
    return ranks


def format_tiktoken(ranks: dict[bytes, int]) -> bytes:
    """The bytes of a tiktoken BPE file: one `base64 rank` line per token, in rank order."""
    check_ranks(ranks)
    return b"".join(base64.b64encode(piece) + b" %d\n" % rank
                    for piece, rank in sorted(ranks.items(), key=lambda item: item[1]))


def write_tiktoken(ranks: dict[bytes, int], path: str | Path) -> Path:
    """Write ranks as a tiktoken BPE file (format_tiktoken), which tiktoken's loader reads."""
    path = Path(path)
    path.write_bytes(format_tiktoken(ranks))
    return path
