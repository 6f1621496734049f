"""Llama's tokenizer in plain Python: a SentencePiece BPE `.model` file, id for id (lesson 01).

SentencePiece BPE (Kudo & Richardson, 2018) does not store merge rules. It stores pieces
with scores, and encoding repeatedly merges the adjacent pair whose concatenation is the
piece with the highest score (ties: the leftmost pair), until no adjacent pair is a piece:

    text "Hi 45"  -> normalize: "▁Hi▁45"  (dummy prefix, spaces as ▁, never collapsed
                     when remove_extra_whitespaces is off, as in Llama)
                  -> characters ▁ H i ▁ 4 5 -> merges by score: ▁H i, ▁Hi, ... -> pieces
                  -> unknown characters become their UTF-8 bytes <0xE4><0xBD>... (byte
                     fallback); digits stay single because the trainer split them.

Decoding maps pieces back, ▁ to a space, drops the first ▁ (the dummy prefix), and joins
runs of byte pieces into UTF-8 (a byte that starts no valid character becomes U+FFFD).

    >>> sp = SentencePieceBPE.from_file("assets/tokenizer.model")     # doctest: +SKIP
    >>> sp.decode(sp.encode("使用字节来分解未知的 UTF-8 字符"))           # doctest: +SKIP
    '使用字节来分解未知的 UTF-8 字符'

This follows sentencepiece's own code (bpe_model.cc, normalizer.cc and
sentencepiece_processor.cc); the tests hold it equal to `sentencepiece.SentencePieceProcessor`.
"""

from __future__ import annotations

import heapq
import re
from pathlib import Path

from .pairs import merge_best_pairs
from .spm_model import (
    BPE,
    BYTE,
    CONTROL,
    PIECE_TYPES,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
    SpmModel,
    read_model,
)

SPACE = "\u2581"  # ▁ LOWER ONE EIGHTH BLOCK: a space inside a piece
_SURROGATE = re.compile("[\ud800-\udfff]")
_CACHE_LIMIT = 200_000  # chunks remembered by one codec before the cache is cleared
_CACHE_CHUNK = 64       # longest chunk (in characters) that is remembered
_SHORT = 32             # chunks up to this many characters merge by rescanning, longer by heap


def _utf8_length(lead: int) -> int:
    """How many bytes the UTF-8 character starting with this byte should have."""
    if lead < 0x80:
        return 1
    if 0xC0 <= lead < 0xE0:
        return 2
    if 0xE0 <= lead < 0xF0:
        return 3
    if 0xF0 <= lead < 0xF8:
        return 4
    return 0  # a continuation byte or 0xF8-0xFF: never starts a character


def decode_bytes(data: bytes) -> str:
    """UTF-8 bytes to text, each byte that starts no valid character becoming U+FFFD.

    This is sentencepiece's rule, one U+FFFD per bad byte; Python's errors="replace"
    may use one U+FFFD for several bytes (b"\\xe4\\xbd" gives one there, two here).
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    out, pos = [], 0
    while pos < len(data):
        size = _utf8_length(data[pos])
        try:
            if size == 0 or pos + size > len(data):
                raise UnicodeDecodeError("utf-8", data, pos, pos + 1, "incomplete")
            out.append(data[pos:pos + size].decode("utf-8"))
            pos += size
        except UnicodeDecodeError:
            out.append("\ufffd")
            pos += 1
    return "".join(out)


class SentencePieceBPE:
    """Encode and decode with a SentencePiece model of type BPE, exactly as sentencepiece does.

    `SentencePieceBPE.from_file(path)` reads the `.model` file; `encode(text, bos, eos)`
    gives ids, `decode(ids)` gives text back.
    """

    def __init__(self, model: SpmModel, source: str = "the model"):
        self.model = model
        self._check_supported(model, source)
        trainer, norm = model.trainer_spec, model.normalizer_spec
        self.pieces = [p.text for p in model.pieces]           # id -> piece
        self.types = [p.type for p in model.pieces]            # id -> piece type
        self.scores = [p.score for p in model.pieces]          # id -> score
        normal, reserved = {}, {}
        for i, piece in enumerate(model.pieces):
            table = reserved if piece.type in (CONTROL, UNKNOWN, BYTE) else normal
            if piece.text in table:
                raise ValueError(f"{source}: piece {piece.text!r} appears twice (ids "
                                 f"{table[piece.text]} and {i}); the model file is corrupt")
            table[piece.text] = i
        unknown = [i for i, t in enumerate(self.types) if t == UNKNOWN]
        if len(unknown) != 1:
            raise ValueError(f"{source} must have exactly one piece of type UNKNOWN, found "
                             f"{len(unknown)}")
        self.unk_id = unknown[0]
        self._mergeable = normal                                # what a merge may produce
        self._score = {piece: self.scores[i] for piece, i in normal.items()}
        self._to_id = {**normal, **reserved}                    # reserved pieces win
        self.byte_fallback = trainer.byte_fallback
        self._byte_ids = []
        if self.byte_fallback:
            self._byte_ids = [reserved.get(f"<0x{b:02X}>", -1) for b in range(256)]
            if -1 in self._byte_ids:
                raise ValueError(f"{source} sets byte_fallback but lacks byte piece "
                                 f"<0x{self._byte_ids.index(-1):02X}>")
        self._byte_value = {i: int(self.pieces[i][3:5], 16) for i in range(len(self.pieces))
                            if self.types[i] == BYTE}
        self.add_dummy_prefix = norm.add_dummy_prefix
        self.remove_extra_whitespaces = norm.remove_extra_whitespaces
        self.escape_whitespaces = norm.escape_whitespaces
        self.suffix = trainer.treat_whitespace_as_suffix
        self.unk_surface = trainer.unk_surface
        self.bos_id = self._control_id(trainer.bos_piece)
        self.eos_id = self._control_id(trainer.eos_piece)
        self.pad_id = self._control_id(trainer.pad_piece)
        user_defined = sorted((p for p, i in normal.items() if self.types[i] == USER_DEFINED),
                              key=len, reverse=True)
        self._user_defined_set = set(user_defined)
        self._user_defined = (re.compile("|".join(map(re.escape, user_defined)) + "|.", re.S)
                              if user_defined else None)
        self._has_unused = any(t == UNUSED for t in self.types)
        self._chunker = self._make_chunker(self._has_unused)
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> SentencePieceBPE:
        """Load a SentencePiece `.model` file of type BPE."""
        return cls(read_model(path), source=repr(str(path)))

    @staticmethod
    def _check_supported(model: SpmModel, source: str) -> None:
        if model.trainer_spec.model_type != BPE:
            raise ValueError(f"{source} is a {model.model_type} model; SentencePieceBPE reads "
                             "BPE models only (train with model_type='bpe')")
        if model.normalizer_spec.precompiled_charsmap:
            name = model.normalizer_spec.name or "a custom rule"
            raise ValueError(f"{source} normalizes text with {name!r}, which SentencePieceBPE "
                             "does not implement; train with normalization_rule_name='identity' "
                             "(as Llama's tokenizer is)")
        if model.denormalizer_spec is not None and model.denormalizer_spec.precompiled_charsmap:
            raise ValueError(f"{source} has a denormalization rule, which SentencePieceBPE "
                             "does not implement; train without denormalization_rule_tsv")
        for piece in model.pieces:
            if piece.type == USER_DEFINED and " " in piece.text:
                raise ValueError(f"{source}: user-defined symbol {piece.text!r} contains a "
                                 "space, which SentencePieceBPE does not support")
            if piece.type not in PIECE_TYPES:
                raise ValueError(f"{source}: piece {piece.text!r} has unknown type "
                                 f"{piece.type}")
            if not piece.text:
                raise ValueError(f"{source} contains an empty piece; the model file is corrupt")

    def _control_id(self, piece: str) -> int:
        """Id of a control piece such as <s>, or -1 when the model has none."""
        i = self._to_id.get(piece, self.unk_id)
        return i if self.types[i] == CONTROL else -1

    def _make_chunker(self, has_unused: bool):
        """A regex that cuts normalized text where no piece can span the cut, or None.

        Without treat_whitespace_as_suffix, pieces start with ▁ and never hold ▁ after another
        character, so the text can be cut before each run of ▁ and each chunk encoded (and
        cached) on its own with the same result. Models whose pieces break that rule, or that
        have UNUSED pieces (their re-splitting looks at the whole text), are encoded whole.
        """
        ws = SPACE if self.escape_whitespaces else " "
        if has_unused:
            return None
        crossing = re.compile(f"{ws}[^{ws}]" if self.suffix else f"[^{ws}]{ws}")
        if any(crossing.search(p) for p in self._mergeable):
            return None
        if self.suffix:
            return re.compile(f"[^{ws}]+{ws}*|{ws}+")
        return re.compile(f"{ws}+[^{ws}]*|[^{ws}]+")

    # -- properties learners and other modules use ----------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def id_to_piece(self, id: int) -> str:
        self._check_id(id)
        return self.pieces[id]

    def id_to_bytes(self, id: int) -> bytes:
        """The UTF-8 bytes a piece stands for in running text (▁ as a space, a byte piece
        as its byte, control pieces as nothing); joining them gives decode's text, less
        the dummy prefix's leading space."""
        self._check_id(id)
        i = self._to_id[self.pieces[int(id)]]
        if self.types[i] == BYTE:
            return bytes([self._byte_value[i]])
        if self.types[i] == CONTROL:
            return b""
        if self.types[i] == UNKNOWN:
            return (self.unk_surface or "").encode("utf-8")
        return self.pieces[i].replace(SPACE, " ").encode("utf-8")

    def piece_to_id(self, piece: str) -> int:
        """The piece's id, or unk_id when the vocabulary has no such piece (as sentencepiece)."""
        return self._to_id.get(piece, self.unk_id)

    def _check_id(self, id) -> None:
        if isinstance(id, bool) or not isinstance(id, int):
            try:
                id = id.__index__()
            except (AttributeError, TypeError):
                raise TypeError(f"token ids must be integers, got {id!r}") from None
        if not 0 <= id < len(self.pieces):
            raise ValueError(f"token id {id} is outside the vocabulary (0 to "
                             f"{len(self.pieces) - 1})")

    # -- encoding ---------------------------------------------------------------------------
    def normalize(self, text: str) -> str:
        """The text the pieces are cut from: spaces as ▁, plus the dummy prefix ▁."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        if not text:
            return ""
        if self.remove_extra_whitespaces:
            text = re.sub(" +", " ", text.lstrip(" "))
            if not text:
                return ""
        ws = SPACE if self.escape_whitespaces else " "
        if self.escape_whitespaces:
            text = text.replace(" ", SPACE)
        if self.add_dummy_prefix and not self.suffix:
            text = ws + text
        if self.remove_extra_whitespaces:
            text = text.rstrip(ws)
        if self.add_dummy_prefix and self.suffix:
            text = text + ws
        return text

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of `text`, with <s> in front and </s> at the end if asked."""
        normalized = self.normalize(text)
        if _SURROGATE.search(normalized):
            raise ValueError("the text contains a lone surrogate character, which UTF-8 "
                             "cannot encode; clean the text first")
        ids: list[int] = []
        if self._chunker is None:
            ids = self._encode_chunk(normalized)
        else:
            cache = self._cache
            if len(cache) > _CACHE_LIMIT:
                cache.clear()
            for chunk in self._chunker.findall(normalized):
                piece_ids = cache.get(chunk)
                if piece_ids is None:
                    piece_ids = self._encode_chunk(chunk)
                    if len(chunk) <= _CACHE_CHUNK:  # words, not pages of text without spaces
                        cache[chunk] = piece_ids
                ids += piece_ids
        if not self.byte_fallback and self.unk_id in ids:
            ids = self._merge_unknown_runs(ids)
        for wanted, special, name in ((bos, self.bos_id, "<s>"), (eos, self.eos_id, "</s>")):
            if wanted and special < 0:
                raise ValueError(f"this model has no {name} control piece; encode with "
                                 f"{'bos' if name == '<s>' else 'eos'}=False")
        if bos:
            ids.insert(0, self.bos_id)
        if eos:
            ids.append(self.eos_id)
        return ids

    def encode_as_pieces(self, text: str) -> list[str]:
        """The pieces of `text` as strings, as sentencepiece shows them: an unknown run is
        shown as its own text (it is encoded as one <unk>), byte pieces as <0x..>."""
        normalized = self.normalize(text)
        if _SURROGATE.search(normalized):
            raise ValueError("the text contains a lone surrogate character, which UTF-8 "
                             "cannot encode; clean the text first")
        chunks = [normalized] if self._chunker is None else self._chunker.findall(normalized)
        pieces: list[str] = []
        previous_unknown = False
        for chunk in chunks:
            for piece, i in self._encode_chunk(chunk, with_pieces=True):
                unknown = i == self.unk_id and not self.byte_fallback
                if unknown and previous_unknown:
                    pieces[-1] += piece
                else:
                    pieces.append(piece)
                previous_unknown = unknown
        return pieces

    def _merge_unknown_runs(self, ids: list[int]) -> list[int]:
        """sentencepiece writes a run of unknown characters as one <unk>."""
        out: list[int] = []
        for i in ids:
            if not (i == self.unk_id and out and out[-1] == self.unk_id):
                out.append(i)
        return out

    def _encode_chunk(self, text: str, with_pieces: bool = False) -> list:
        """Ids of one chunk (or (piece, id) pairs): cut into symbols, merge, look up."""
        if not text:
            return []
        rev_merge: dict[str, tuple[str, str]] = {}
        if self._user_defined is not None:  # a user-defined symbol never merges
            symbols = self._user_defined.findall(text)
            frozen = [s in self._user_defined_set for s in symbols]
            symbols = self._merge_heap(symbols, frozen, rev_merge)
        elif self._has_unused:
            symbols = self._merge_heap(list(text), None, rev_merge)
        elif len(text) <= _SHORT:
            symbols = self._merge_short(list(text))
        else:
            symbols = self._merge_heap(list(text), None, None)
        out: list = []
        if rev_merge or with_pieces or self._has_unused:
            for piece in symbols:
                if piece:
                    self._emit(piece, out, rev_merge, with_pieces)
            return out
        to_id, unk = self._to_id, self.unk_id
        for piece in symbols:
            if piece:
                i = to_id.get(piece, unk)
                if i == unk and self.byte_fallback:
                    out += [self._byte_ids[b] for b in piece.encode("utf-8")]
                else:
                    out.append(i)
        return out

    def _merge_heap(self, symbols: list[str], frozen: list[bool] | None,
                    rev_merge: dict | None) -> list[str]:
        """BPE by score with a linked list of symbols and a heap of candidate pairs.

        Heap entries are (-score, left, right, length of the merged piece): the best score
        comes first, then the leftmost pair. An entry is stale once either side has changed,
        which shows as an empty side or a different total length. Merged-away symbols are
        left as empty strings. `frozen` marks user-defined symbols; `rev_merge` records how
        UNUSED pieces were made, to split them again (as sentencepiece does).
        """
        score, types, mergeable = self._score, self.types, self._mergeable
        n = len(symbols)

        def candidate(left: int, right: int):
            if frozen is not None and (frozen[left] or frozen[right]):
                return None
            merged = symbols[left] + symbols[right]
            s = score.get(merged)
            if s is None:
                return None
            if rev_merge is not None and types[mergeable[merged]] == UNUSED:
                rev_merge[merged] = (symbols[left], symbols[right])
            return (-s, left, right, len(merged))

        heap = [c for c in map(candidate, range(n - 1), range(1, n)) if c is not None]
        heapq.heapify(heap)
        prev, nxt = list(range(-1, n - 1)), list(range(1, n + 1))
        while heap:
            _, left, right, size = heapq.heappop(heap)
            a, b = symbols[left], symbols[right]
            if not a or not b or len(a) + len(b) != size:
                continue  # stale: a side has merged since this pair was pushed
            symbols[left], symbols[right] = a + b, ""
            after = nxt[right]
            nxt[left] = after
            if after < n:
                prev[after] = left
                c = candidate(left, after)
                if c is not None:
                    heapq.heappush(heap, c)
            if prev[left] >= 0:
                c = candidate(prev[left], left)
                if c is not None:
                    heapq.heappush(heap, c)
        return symbols

    def _merge_short(self, symbols: list[str]) -> list[str]:
        """The same merges for a short chunk, by rescanning: a list holds each adjacent
        pair's score, max() finds the best and index() the leftmost of equals."""
        return merge_best_pairs(symbols, self._score.get, float("-inf"), max)

    def _emit(self, piece: str, ids: list, rev_merge: dict, with_pieces: bool) -> None:
        """Append the id of a final symbol: UNUSED pieces split again, unknowns as bytes."""
        i = self._to_id.get(piece, self.unk_id)
        if self.types[i] == UNUSED and piece in rev_merge:
            left, right = rev_merge[piece]
            self._emit(left, ids, rev_merge, with_pieces)
            self._emit(right, ids, rev_merge, with_pieces)
        elif i == self.unk_id and self.byte_fallback:
            byte_ids = [self._byte_ids[b] for b in piece.encode("utf-8")]
            ids += [(self.pieces[b], b) for b in byte_ids] if with_pieces else byte_ids
        else:
            ids.append((piece, i) if with_pieces else i)

    # -- decoding ---------------------------------------------------------------------------
    def decode(self, ids) -> str:
        """Text of the ids: ▁ becomes a space, the dummy prefix goes, byte runs become UTF-8."""
        if isinstance(ids, (str, bytes)):
            raise TypeError("decode expects a list of token ids, not a string")
        ids = list(ids)
        for i in ids:
            self._check_id(i)
        ids = [self._to_id[self.pieces[int(i)]] for i in ids]  # as sentencepiece: id->piece->id
        strip_prefix = self.add_dummy_prefix or self.remove_extra_whitespaces
        text: list[str] = []
        pending: list[int] = []           # a run of byte pieces, decoded together
        is_bos_ws, bos_ws_seen = True, False
        for i in ids:
            kind = self.types[i]
            if kind == BYTE:
                pending.append(self._byte_value[i])
                continue
            if pending:
                text.append(decode_bytes(bytes(pending)))
                pending = []
            if bos_ws_seen or text:
                is_bos_ws = False
            piece, bos_ws_seen = self.pieces[i], False
            if kind == CONTROL:
                continue
            if kind == UNKNOWN:
                if self.unk_surface:
                    text.append(self.unk_surface)
                continue
            if is_bos_ws and strip_prefix and piece.startswith(SPACE):
                piece = piece[1:]
                bos_ws_seen = not self.remove_extra_whitespaces
            piece = piece.replace(SPACE, " ")
            if piece:
                text.append(piece)
        if pending:
            text.append(decode_bytes(bytes(pending)))
        return "".join(text)

    def __repr__(self) -> str:
        return (f"SentencePieceBPE(vocab_size={self.vocab_size}, byte_fallback="
                f"{self.byte_fallback}, add_dummy_prefix={self.add_dummy_prefix}, "
                f"remove_extra_whitespaces={self.remove_extra_whitespaces})")

