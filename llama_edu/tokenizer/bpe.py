"""Byte-level BPE from scratch: count pairs, merge the most frequent, repeat (lesson 01).

Byte-pair encoding (Gage, 1994; for subwords Sennrich et al., 2016; on bytes GPT-2,
Radford et al., 2019) starts from the 256 byte values and learns merges: the most frequent
adjacent pair (a, b) gets a new id 256 + k, and every (a, b) becomes that id.

    >>> bpe = ByteLevelBPE(pattern=None).train("aaabdaaabac", vocab_size=259, progress=False)
    >>> bpe.merges                          # aa -> 256, then ab -> 257, then (256, 257) -> 258
    [(97, 97), (97, 98), (256, 257)]
    >>> bpe.encode("aaabdaaabac")           # "aaab" d "aaab" a c
    [258, 100, 258, 97, 99]

Ties between equally frequent pairs go to the smaller pair (compared as id tuples), so the
two trainers below give the same merges:

- `train_plain` recounts every pair after every merge: easy to read, O(merges x text).
- `train_fast` keeps the pair counts and, for each pair, the set of words that hold it; a
  merge only revisits those words, and a heap gives the next most frequent pair.

Text is first cut into words with a GPT-2 style regex (`pattern=None` keeps it whole), and
training counts each distinct word once with its frequency. `LLAMA3_SPLIT` is Llama 3's
pattern; `ByteLevelBPE.from_tiktoken` loads Llama 3's real vocabulary (see tiktoken_bpe.py),
and `mergeable_ranks()` exports a trained tokenizer in that form.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

from .tiktoken_bpe import LLAMA3_SPECIAL_TOKENS, encode_by_rank, read_tiktoken

# Words: an optional leading space then letters, digits, or other symbols; runs of spaces.
# [^\W\d_] is "a letter" in Python's re (it has no \p{L}); "_" counts as a symbol.
GPT2_SPLIT = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
# Llama 3's words (Meta's llama3/tokenizer.py): contractions in any case, letters with one
# leading non-letter, digits in groups of one to three, symbols with their newlines, and
# whitespace as GPT-2. \p{L} and \p{N} need the `regex` package (Python's re lacks them).
# Its Unicode tables can be newer than tiktoken's: regex 2026.11.19 follows Unicode 18.0,
# and 336 numbers added in recent versions (such as U+11DE0-11DE9) are \p{N} for it but not
# for tiktoken 0.14, which then cuts them differently.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
FORMAT = "llama_edu byte-level BPE 1"

Pair = tuple[int, int]


def compile_pattern(pattern: str):
    """Python's re where it can; the `regex` package for what re lacks, such as \\p{L}."""
    try:
        return re.compile(pattern)
    except re.error as re_error:
        try:
            import regex
        except ImportError:
            raise ImportError(f"the split pattern needs the `regex` package ({re_error}): "
                              "pip install regex") from None
        try:
            return regex.compile(pattern)
        except regex.error as error:
            raise ValueError(f"the split pattern {pattern!r} does not compile: "
                             f"{error}") from None


@lru_cache(maxsize=8)
def _special_splitter(specials: tuple[str, ...]):
    """A regex whose split keeps each special token as its own part (longest tried first)."""
    return re.compile("(" + "|".join(map(re.escape, sorted(specials, key=len, reverse=True)))
                      + ")")


def get_pair_counts(ids: list[int], counts: dict | None = None, weight: int = 1) -> dict:
    """How often each adjacent pair occurs: [1, 2, 3, 1, 2] -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}.

    Pairs overlap: [7, 7, 7] has the pair (7, 7) twice. `counts` is updated in place, each
    occurrence adding `weight` (the number of times the word occurs).
    """
    counts = {} if counts is None else counts
    for pair in pairwise(ids):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace each occurrence of `pair`, left to right, by `new_id`.

    merge([7, 7, 7, 1], (7, 7), 256) -> [256, 7, 1]   (occurrences never overlap)
    """
    out, i, n = [], 0, len(ids)
    first, second = pair
    while i < n:
        if ids[i] == first and i + 1 < n and ids[i + 1] == second:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _best(counts: dict) -> Pair:
    """The most frequent pair; among equals, the smallest."""
    return min(counts, key=lambda pair: (-counts[pair], pair))


def _bar(total: int, progress: bool, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="merge")


def train_plain(word_counts: dict[tuple[int, ...], int], n_merges: int,
                progress: bool = False) -> list[Pair]:
    """Learn up to n_merges merges by recounting all pairs after each merge."""
    words = [list(word) for word in word_counts]
    freqs = list(word_counts.values())
    merges: list[Pair] = []
    bar = _bar(n_merges, progress, "BPE (plain)")
    for k in range(n_merges):
        counts: dict = {}
        for ids, freq in zip(words, freqs, strict=True):
            get_pair_counts(ids, counts, freq)
        if not counts:
            break  # every word is a single token: nothing left to merge
        pair = _best(counts)
        merges.append(pair)
        words = [merge(ids, pair, 256 + k) for ids in words]
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return merges


def train_fast(word_counts: dict[tuple[int, ...], int], n_merges: int,
               progress: bool = False) -> list[Pair]:
    """The same merges as train_plain, updating counts only in the words a merge touches.

    counts[pair] is the weighted number of occurrences, where[pair] the words holding it;
    the heap holds (-count, pair) entries, and an entry whose count is out of date is
    skipped when it comes to the top (a newer entry was pushed when the count changed).
    """
    words = [list(word) for word in word_counts]
    freqs = list(word_counts.values())
    counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)
    for w, ids in enumerate(words):
        for pair in pairwise(ids):
            counts[pair] += freqs[w]
            where[pair].add(w)
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)
    merges: list[Pair] = []
    bar = _bar(n_merges, progress, "BPE (fast)")
    for k in range(n_merges):
        while heap:  # the top entry, skipping those whose count has changed since
            neg_count, pair = heapq.heappop(heap)
            if counts.get(pair, 0) == -neg_count:
                break
        else:
            break  # no pairs left
        new_id = 256 + k
        merges.append(pair)
        changed = set()
        for w in where.pop(pair):
            old, freq = words[w], freqs[w]
            new = words[w] = merge(old, pair, new_id)
            old_pairs, new_pairs = list(pairwise(old)), list(pairwise(new))
            for p in old_pairs:
                counts[p] -= freq
            for p in new_pairs:
                counts[p] += freq
            for p in set(old_pairs).difference(new_pairs):
                if p != pair:
                    where[p].discard(w)
            for p in new_pairs:
                where[p].add(w)
            changed.update(old_pairs)
            changed.update(new_pairs)
        for p in changed:
            count = counts[p]
            if count > 0:
                heapq.heappush(heap, (-count, p))
            else:
                del counts[p]
                where.pop(p, None)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return merges


class ByteLevelBPE:
    """A byte-level BPE tokenizer: 256 byte ids, then one id per merge, then special tokens.

    `train(text, vocab_size)` learns merges, `encode(text)` gives ids, `decode(ids)` text;
    `save(path)` / `ByteLevelBPE.load(path)` use a readable UTF-8 text file.
    `ByteLevelBPE.from_tiktoken(path)` instead takes its tokens from a tiktoken file of ranks
    (Llama 3's): then `vocab` holds those, `merges` is empty and words merge by rank.
    """

    def __init__(self, merges: Iterable[Pair] = (), special_tokens: Iterable[str] = (),
                 pattern: str | None = GPT2_SPLIT):
        self.pattern = pattern
        self._split = compile_pattern(pattern) if pattern is not None else None
        self._set_merges(list(merges))
        specials = list(special_tokens)
        for token in specials:
            if not isinstance(token, str) or not token:
                raise ValueError(f"special tokens must be non-empty strings, got {token!r}")
        if len(set(specials)) != len(specials):
            raise ValueError(f"special tokens must be distinct, got {specials}")
        self.special_tokens = specials

    def _set_merges(self, merges: list[Pair]) -> None:
        self.merges = []
        self.vocab = {i: bytes([i]) for i in range(256)}   # id -> the bytes it stands for
        self.ranks: dict[Pair, int] = {}                    # pair -> id it merges into
        for pair in merges:
            a, b = (int(x) for x in pair)
            new_id = 256 + len(self.merges)
            if not (0 <= a < new_id and 0 <= b < new_id):
                raise ValueError(f"merge {len(self.merges)} ({a}, {b}) uses an id that does "
                                 f"not exist yet; ids below {new_id} are allowed")
            if (a, b) in self.ranks:
                raise ValueError(f"merge ({a}, {b}) appears twice")
            self.merges.append((a, b))
            self.ranks[(a, b)] = new_id
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        self._by_rank: dict[bytes, int] | None = None       # bytes -> id, from_tiktoken only
        self._cache: dict[str, list[int]] = {}

    # -- sizes and special tokens ----------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + len(self.special_tokens)

    @property
    def special_ids(self) -> dict[str, int]:
        """Special tokens take the ids after the merges (or ranks), in the order given."""
        start = len(self.vocab)
        return {token: start + i for i, token in enumerate(self.special_tokens)}

    # -- training ---------------------------------------------------------------------------
    def words(self, text: str) -> list[str]:
        """The text cut into the pieces that BPE works inside (no merge crosses a cut)."""
        return self._split.findall(text) if self._split is not None else [text]

    def word_counts(self, text: str) -> dict[tuple[int, ...], int]:
        """Each distinct word as a tuple of byte ids, with how often it occurs."""
        counts = Counter(self.words(text))
        return {tuple(word.encode("utf-8")): n for word, n in counts.items() if word}

    def train(self, text: str, vocab_size: int, method: str = "fast",
              progress: bool = True) -> ByteLevelBPE:
        """Learn vocab_size - 256 - len(special_tokens) merges from text; returns self.

        method="plain" recounts all pairs after each merge, "fast" updates them
        incrementally; both give the same merges. Stops early if nothing is left to merge.
        """
        if not isinstance(text, str):
            raise TypeError(f"train expects text as a str, got {type(text).__name__}")
        n_merges = vocab_size - 256 - len(self.special_tokens)
        if n_merges < 0:
            raise ValueError(f"vocab_size ({vocab_size}) must be at least 256 (the bytes) + "
                             f"{len(self.special_tokens)} (special tokens)")
        trainers = {"plain": train_plain, "fast": train_fast}
        if method not in trainers:
            raise ValueError(f"method must be 'plain' or 'fast', got {method!r}")
        self._set_merges(trainers[method](self.word_counts(text), n_merges, progress))
        return self

    # -- encoding and decoding --------------------------------------------------------------
    def encode_word(self, word: str) -> list[int]:
        """BPE on one word: merge the pair with the earliest merge, until none applies.

        A tokenizer from from_tiktoken merges by rank instead (tiktoken_bpe.encode_by_rank).
        """
        if self._by_rank is not None:
            return encode_by_rank(word.encode("utf-8"), self._by_rank) if word else []
        ids = list(word.encode("utf-8"))
        while len(ids) >= 2:
            ranked = [(self.ranks[p], p) for p in pairwise(ids) if p in self.ranks]
            if not ranked:
                break
            new_id, pair = min(ranked)
            ids = merge(ids, pair, new_id)
        return ids

    def encode(self, text: str, special: bool = True) -> list[int]:
        """Token ids; with special=True a special token's text becomes its id."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        ids: list[int] = []
        specials = self.special_ids if special else {}
        parts = _special_splitter(tuple(specials)).split(text) if specials else [text]
        cache = self._cache
        if len(cache) > 100_000:
            cache.clear()
        for part in parts:
            if part in specials:
                ids.append(specials[part])
                continue
            for word in self.words(part):
                word_ids = cache.get(word)
                if word_ids is None:
                    word_ids = cache[word] = self.encode_word(word)
                ids += word_ids
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids; bytes that are not valid UTF-8 become U+FFFD."""
        if isinstance(ids, (str, bytes)):
            raise TypeError("decode expects a list of token ids, not a string")
        specials = {i: token.encode("utf-8") for token, i in self.special_ids.items()}
        chunks = []
        for i in ids:
            if isinstance(i, bool) or not hasattr(i, "__index__"):
                raise TypeError(f"token ids must be integers, got {i!r}")
            i = int(i)
            piece = self.vocab.get(i) or specials.get(i)
            if piece is None:
                raise ValueError(f"token id {i} is outside the vocabulary (0 to "
                                 f"{self.vocab_size - 1})")
            chunks.append(piece)
        return b"".join(chunks).decode("utf-8", errors="replace")

    def piece(self, id: int) -> str:
        """A readable form of one token: its text, with undecodable bytes escaped."""
        if id in self.vocab:
            return self.vocab[id].decode("utf-8", errors="backslashreplace")
        for token, special_id in self.special_ids.items():
            if special_id == id:
                return token
        raise ValueError(f"token id {id} is outside the vocabulary (0 to "
                         f"{self.vocab_size - 1})")

    # -- ranks: tiktoken's form -------------------------------------------------------------
    def mergeable_ranks(self) -> dict[bytes, int]:
        """Each token's bytes -> its id, as tiktoken.Encoding(mergeable_ranks=...) takes them."""
        ranks = {piece: i for i, piece in self.vocab.items()}
        if len(ranks) != len(self.vocab):
            twice = Counter(self.vocab.values()).most_common(1)[0][0]
            raise ValueError(f"two tokens stand for the same bytes {twice!r}; ranks need "
                             "each token's bytes to be distinct")
        return ranks

    @classmethod
    def from_tiktoken(cls, path: str | Path, special_tokens: Iterable[str] | None = None,
                      pattern: str | None = LLAMA3_SPLIT) -> ByteLevelBPE:
        """Load a tiktoken BPE file of ranks; by default Llama 3's pattern and special tokens.

        Token ids are the ranks, and the special tokens follow them (Llama 3: 128000-128255).
        """
        ranks = read_tiktoken(path)
        specials = LLAMA3_SPECIAL_TOKENS if special_tokens is None else list(special_tokens)
        bpe = cls((), specials, pattern)
        bpe.vocab = {rank: piece for piece, rank in ranks.items()}
        bpe._by_rank = ranks
        return bpe

    # -- files ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write a UTF-8 text file: a header, then one merge per line ("a b<TAB>text")."""
        if self._by_rank is not None:
            raise ValueError("this tokenizer was loaded from tiktoken ranks and has no merge "
                             "list; write it with tiktoken_bpe.write_tiktoken("
                             "bpe.mergeable_ranks(), path)")
        path = Path(path)
        lines = [FORMAT, f"pattern {json.dumps(self.pattern, ensure_ascii=False)}",
                 f"special {json.dumps(self.special_tokens, ensure_ascii=False)}",
                 f"merges {len(self.merges)}"]
        for k, (a, b) in enumerate(self.merges):
            lines.append(f"{a} {b}\t{json.dumps(self.piece(256 + k), ensure_ascii=False)}")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ByteLevelBPE:
        """Read a file written by save()."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {str(path)!r}")
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) < 4 or lines[0] != FORMAT:
            raise ValueError(f"{str(path)!r} is not a ByteLevelBPE file: its first line should "
                             f"be {FORMAT!r}")
        try:
            fields = dict(line.split(" ", 1) for line in lines[1:4])
            pattern = json.loads(fields["pattern"])
            specials = json.loads(fields["special"])
            n_merges = int(fields["merges"])
        except (ValueError, KeyError) as error:
            raise ValueError(f"{str(path)!r}: the header (lines 2-4) is malformed: "
                             f"{error}") from None
        body = lines[4:]
        if len(body) != n_merges:
            raise ValueError(f"{str(path)!r} announces {n_merges} merges but has "
                             f"{len(body)} merge lines; the file is truncated or edited")
        merges = []
        for number, line in enumerate(body, start=5):
            try:
                a, b = line.split("\t", 1)[0].split()
                merges.append((int(a), int(b)))
            except ValueError:
                raise ValueError(f"{str(path)!r} line {number}: expected two ids "
                                 f"'a b', got {line!r}") from None
        return cls(merges, specials, pattern)

    def __repr__(self) -> str:
        if self._by_rank is not None:
            return (f"ByteLevelBPE(vocab_size={self.vocab_size}, ranks={len(self.vocab)}, "
                    f"special_tokens={len(self.special_tokens)})")
        return (f"ByteLevelBPE(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={self.special_tokens})")
