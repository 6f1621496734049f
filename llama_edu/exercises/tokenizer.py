"""Checks for lesson 01: counting pairs, applying one merge, encoding with a merge list,
and the build exercise: the BPE training loop, held equal to `ByteLevelBPE.train`."""

from __future__ import annotations

import torch

from ..tokenizer.bpe import ByteLevelBPE, get_pair_counts, merge
from ._common import call, expect, passed, rng

__all__ = ["check_count_pairs", "check_merge", "check_encode_with_merges", "check_train_bpe"]

WIKI_MERGES = [(97, 97), (97, 98), (256, 257)]  # aa -> 256, ab -> 257, (256, 257) -> 258


def _reference_encode(text: str, merges) -> list[int]:
    ids = list(text.encode("utf-8"))
    for k, pair in enumerate(merges):
        ids = merge(ids, tuple(pair), 256 + k)
    return ids


def check_count_pairs(fn) -> None:
    """fn(ids) -> {(a, b): how many times b follows a}."""
    cases = [[1, 2, 3], [1, 2, 3, 1, 2], [7, 7, 7], [5], [],
             [97, 97, 97, 98, 100, 97, 97, 97, 98, 97, 99],
             [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6, 4, 3, 3]]
    for ids in cases:
        what = f"count_pairs({ids})"
        before = list(ids)
        out = call(fn, ids, what=what)
        expect(ids == before, f"{what} changed its input list; count without modifying it")
        expected = get_pair_counts(ids)
        if not isinstance(out, dict):
            raise AssertionError(f"{what} should return a dict {{(a, b): count}}, got "
                                 f"{type(out).__name__}")
        out = {(tuple(k) if isinstance(k, list) else k): v for k, v in out.items()}
        if out == expected:
            continue
        if ids == [7, 7, 7] and out == {(7, 7): 1}:
            raise AssertionError(f"{what}: expected {expected}, got {out}. Pairs overlap: in "
                                 "7 7 7 the pair (7, 7) starts at position 0 and at position 1")
        if out == get_pair_counts(ids[:-1]) and tuple(ids[-2:]) not in out:
            raise AssertionError(f"{what}: the last pair {tuple(ids[-2:])} is missing, expected "
                                 f"{expected}. Loop over i in range(len(ids) - 1)")
        if out and set(out) == set(expected) and set(out.values()) == {1}:
            raise AssertionError(f"{what}: every count is 1, expected {expected}. Add 1 each "
                                 "time a pair occurs, not once per distinct pair")
        if out and all(isinstance(k, tuple) and len(k) == 2 for k in out) and \
                {(b, a): v for (a, b), v in out.items()} == expected:
            raise AssertionError(f"{what}: the pairs are reversed, expected {expected}. Key "
                                 "each pair as (ids[i], ids[i + 1])")
        raise AssertionError(f"{what}: expected {expected}, got {out}")
    passed("count_pairs counts every adjacent pair, overlapping ones included")


def check_merge(fn) -> None:
    """fn(ids, pair, new_id) -> a new list with each occurrence of pair replaced."""
    cases = [([1, 2, 3, 1, 2], (1, 2), 99), ([7, 7, 7, 1], (7, 7), 256),
             ([7, 7, 7, 7], (7, 7), 256), ([4, 5, 6], (6, 4), 300), ([1, 2], (1, 2), 256),
             ([3, 1, 2], (1, 2), 256), ([], (1, 2), 256), ([1], (1, 2), 256),
             ([97, 97, 97, 98, 100, 97, 97, 97, 98, 97, 99], (97, 97), 256)]
    for ids, pair, new_id in cases:
        what = f"merge({ids}, {pair}, {new_id})"
        before = list(ids)
        out = call(fn, ids, pair, new_id, what=what)
        expect(ids == before, f"{what} changed its input list to {ids}; build and return a "
               "new list instead")
        expected = merge(ids, pair, new_id)
        if not isinstance(out, list):
            raise AssertionError(f"{what} should return a list, got {type(out).__name__}")
        if out == expected:
            continue
        if len(out) == len(expected) - 1 and out == expected[:-1]:
            raise AssertionError(f"{what}: expected {expected}, got {out}: the last id was "
                                 "dropped. When no pair starts at the last position, still "
                                 "copy that id")
        if ids.count(pair[0]) > 1 and out == _first_only(ids, pair, new_id):
            raise AssertionError(f"{what}: expected {expected}, got {out}: only the first "
                                 "occurrence was replaced. Keep scanning to the end")
        if out == _without_skip(ids, pair, new_id):
            raise AssertionError(f"{what}: expected {expected}, got {out}: the second id of "
                                 "each merged pair is still there. After a merge, jump two "
                                 "positions ahead")
        raise AssertionError(f"{what}: expected {expected}, got {out}")
    passed("merge replaces every occurrence, left to right, without overlaps")


def _without_skip(ids, pair, new_id):
    return [new_id if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair) else x
            for i, x in enumerate(ids)]


def _first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return ids[:i] + [new_id] + ids[i + 2:]
    return list(ids)


def check_encode_with_merges(fn) -> None:
    """fn(text, merges) -> ids: UTF-8 bytes, then merge k (a pair) becomes id 256 + k."""
    chained = [(104, 101), (256, 108), (257, 108), (258, 111)]  # he, hel, hell, hello
    cases = [("aaabdaaabac", WIKI_MERGES), ("", WIKI_MERGES), ("abc", []),
             ("hello, hello!", chained), ("é café", [(195, 169), (99, 97), (257, 102)]),
             ("使用字节", [(228, 189), (256, 191)])]
    for text, merges in cases:
        what = f"encode({text!r}, merges={merges})"
        out = call(fn, text, list(merges), what=what)
        expected = _reference_encode(text, merges)
        if not isinstance(out, list):
            raise AssertionError(f"{what} should return a list of ints, got "
                                 f"{type(out).__name__}")
        if out == expected:
            continue
        if out == [ord(c) for c in text] or (merges and out == _chars_then_merge(text, merges)):
            raise AssertionError(f"{what}: expected {expected}, got {out}: those are character "
                                 "codes. Start from the UTF-8 bytes: list(text.encode('utf-8'))")
        if out == _shifted(text, merges):
            raise AssertionError(f"{what}: expected {expected}, got {out}: merge number k "
                                 "creates id 256 + k (ids 0-255 are the bytes)")
        if out == _reference_encode_reversed(text, merges):
            raise AssertionError(f"{what}: expected {expected}, got {out}: apply the merges in "
                                 "the order they were learned, first to last")
        raise AssertionError(f"{what}: expected {expected}, got {out}")
    passed("encode turns text into bytes and applies the merges in the order they were learned")


def _chars_then_merge(text, merges):
    ids = [ord(c) for c in text]
    for k, pair in enumerate(merges):
        ids = merge(ids, tuple(pair), 256 + k)
    return ids


def _shifted(text, merges):
    ids = list(text.encode("utf-8"))
    for k, pair in enumerate(merges):
        ids = merge(ids, tuple(pair), k)
    return ids


def _reference_encode_reversed(text, merges):
    ids = list(text.encode("utf-8"))
    for k, pair in reversed(list(enumerate(merges))):
        ids = merge(ids, tuple(pair), 256 + k)
    return ids


# ---- the build exercise: BPE training ---------------------------------------------------


def _reference_train(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """The package's trainer on the text as one sequence of bytes (no regex split)."""
    return ByteLevelBPE(pattern=None).train(text, vocab_size, progress=False).merges


def _train_variant(ids: list[int], n_merges: int, first_id: int = 256, recount: bool = True,
                   tie: str = "smallest") -> list[tuple[int, int]]:
    """What a slipped trainer returns: other first id, counts kept from the start, other ties."""
    merges, counts = [], None
    for k in range(n_merges):
        if recount or counts is None:
            counts = get_pair_counts(ids)
        if not counts:
            break
        if tie == "smallest":
            pair = min(counts, key=lambda p: (-counts[p], p))
        else:                                   # max / most_common: the first pair seen
            pair = max(counts, key=counts.get)
        if not recount:
            del counts[pair]
        merges.append(pair)
        ids = merge(ids, pair, first_id + k)
    return merges


def _train_mistakes(text: str, vocab_size: int):
    data = list(text.encode("utf-8"))
    n = vocab_size - 256
    yield (_train_variant(data, n, tie="first"),
           "among pairs with the same count you took the first one seen (max or "
           "Counter.most_common keep the first); take the smallest pair: "
           "min(counts, key=lambda p: (-counts[p], p))")
    yield (_train_variant(data, n, first_id=0),
           "merge k creates id 256 + k: ids 0-255 are the bytes, so the first new id is 256")
    yield (_train_variant(data, n, recount=False),
           "you counted the pairs once, before any merge; recount them after every merge, "
           "since each merge makes new pairs (with the new id) and removes old ones")
    yield (_train_variant([ord(c) for c in text], n),
           "you started from character codes (ord); start from the UTF-8 bytes, "
           "list(text.encode('utf-8')), so every character is made of ids 0-255")
    yield (_train_variant(data, vocab_size),
           "you learned vocab_size merges; vocab_size counts the 256 bytes too, so learn "
           "vocab_size - 256 merges")


def _train_cases():
    from ..data import held_out_stories, pydoc_text

    generator = rng(11)
    english, chinese = pydoc_text(), held_out_stories("zh", 20)
    start = int(torch.randint(0, len(english) - 3000, (1,), generator=generator))
    yield "3,000 characters of the Python help pages", english[start:start + 3000], 256 + 60
    start = int(torch.randint(0, len(chinese) - 400, (1,), generator=generator))
    yield "400 characters of a Chinese story", chinese[start:start + 400], 256 + 40
    letters = torch.randint(0, 3, (300,), generator=generator).tolist()
    yield ("300 random letters from 'ab ' (many ties)", "".join("ab "[i] for i in letters),
           256 + 30)
    yield "'aaabdaaabac' (three merges)", "aaabdaaabac", 259
    yield "'hello' with room for 10 merges (it runs out after 4)", "hello", 266
    yield "an empty text", "", 300
    yield "vocab_size 256 (no merges)", "some text", 256


def check_train_bpe(fn) -> None:
    """fn(text, vocab_size) -> the merges [(a, b), ...] that BPE learns from text's bytes."""
    for label, text, vocab_size in _train_cases():
        what = f"train_bpe on {label}, vocab_size={vocab_size}"
        try:
            out = call(fn, text, vocab_size, what=what)
        except AssertionError as error:
            runs_out = len(_reference_train(text, vocab_size)) < vocab_size - 256
            if runs_out and "not written yet" not in str(error):
                raise AssertionError(f"{error}. When the text has become one token there is "
                                     "nothing left to merge: stop early (break when there "
                                     "are no pairs)") from None
            raise
        expected = _reference_train(text, vocab_size)
        if not isinstance(out, list) or not all(
                isinstance(p, tuple | list) and len(p) == 2 and all(isinstance(i, int) for i in p)
                for p in out):
            raise AssertionError(f"{what} should return a list of (id, id) pairs, got "
                                 f"{str(out)[:80]}")
        out = [tuple(p) for p in out]
        if out == expected:
            continue
        for wrong, message in _train_mistakes(text, vocab_size):
            if out == wrong:
                raise AssertionError(f"{what}: {message}")
        n = min(len(out), len(expected))
        first = next((k for k in range(n) if out[k] != expected[k]), n)
        raise AssertionError(f"{what}: {len(out)} merges, expected {len(expected)}; they "
                             f"differ from merge {first} on (expected "
                             f"{expected[first:first + 2]}, got {out[first:first + 2]})")
    passed("train_bpe learns the same merges as llama_edu's ByteLevelBPE, ties and all")
