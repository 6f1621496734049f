"""Lesson 01's checks: counting pairs, one merge, encoding with a merge list."""

from collections import Counter
from itertools import pairwise

from ._contract import Contract

# ---- count_pairs ------------------------------------------------------------------------


def count_ok(ids):
    counts = {}
    for pair in pairwise(ids):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def count_without_overlap(ids):
    counts, i = {}, 0
    while i < len(ids) - 1:
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
        i += 2 if ids[i] == ids[i + 1] else 1
    return counts


def count_distinct(ids):
    return {pair: 1 for pair in pairwise(ids)}


def count_missing_last(ids):
    return count_ok(ids[:-1])


def count_reversed(ids):
    return count_ok(ids[::-1])


# ---- merge ------------------------------------------------------------------------------


def merge_ok(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_drops_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return ids[:i] + [new_id] + ids[i + 2:]
    return list(ids)


def merge_without_skip(ids, pair, new_id):
    out = []
    for i in range(len(ids)):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)  # but the pair's second id is copied on the next step
        else:
            out.append(ids[i])
    return out


def merge_in_place(ids, pair, new_id):
    ids[:] = merge_ok(ids, pair, new_id)
    return ids


# ---- encode -----------------------------------------------------------------------------


def encode_ok(text, merges):
    ids = list(text.encode("utf-8"))
    for k, pair in enumerate(merges):
        ids = merge_ok(ids, pair, 256 + k)
    return ids


def encode_characters(text, merges):
    ids = [ord(c) for c in text]
    for k, pair in enumerate(merges):
        ids = merge_ok(ids, pair, 256 + k)
    return ids


def encode_ids_from_zero(text, merges):
    ids = list(text.encode("utf-8"))
    for k, pair in enumerate(merges):
        ids = merge_ok(ids, pair, k)
    return ids


def encode_reversed(text, merges):
    ids = list(text.encode("utf-8"))
    for k, pair in reversed(list(enumerate(merges))):
        ids = merge_ok(ids, pair, 256 + k)
    return ids


CONTRACTS = {
    "check_count_pairs": Contract(references=[count_ok], mistakes=[
        (count_without_overlap, "Pairs overlap"),
        (count_distinct, "every count is 1"),
        (count_missing_last, "the last pair .* is missing"),
        (count_reversed, "the pairs are reversed"),
        (lambda ids: list(pairwise(ids)), "should return a dict"),
    ]),
    "check_merge": Contract(references=[merge_ok], mistakes=[
        (merge_drops_last, "the last id was dropped"),
        (merge_first_only, "only the first occurrence"),
        (merge_in_place, "changed its input list"),
        (merge_without_skip, "second id of each merged pair is still there"),
        (lambda ids, pair, new_id: tuple(merge_ok(ids, pair, new_id)), "should return a list"),
    ]),
    "check_encode_with_merges": Contract(references=[encode_ok], mistakes=[
        (encode_characters, "character codes.*text.encode"),
        (encode_ids_from_zero, "creates id 256 \\+ k"),
        (encode_reversed, "in the order they were learned"),
    ]),
}


# ---- train_bpe (the build exercise) -----------------------------------------------------


def train_ok(text, vocab_size):
    ids, merges = list(text.encode("utf-8")), []
    for k in range(vocab_size - 256):
        counts = count_ok(ids)
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        ids = merge_ok(ids, pair, 256 + k)
    return merges


def train_first_seen(text, vocab_size):
    ids, merges = list(text.encode("utf-8")), []
    for k in range(vocab_size - 256):
        counts = Counter(pairwise(ids))
        if not counts:
            break
        pair = counts.most_common(1)[0][0]
        merges.append(pair)
        ids = merge_ok(ids, pair, 256 + k)
    return merges


def train_ids_from_zero(text, vocab_size):
    ids, merges = list(text.encode("utf-8")), []
    for k in range(vocab_size - 256):
        counts = count_ok(ids)
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        ids = merge_ok(ids, pair, k)
    return merges


def train_counted_once(text, vocab_size):
    ids = list(text.encode("utf-8"))
    counts = count_ok(ids)
    ranked = sorted(counts, key=lambda p: (-counts[p], p))
    return ranked[:vocab_size - 256]


def train_characters(text, vocab_size):
    ids, merges = [ord(c) for c in text], []
    for k in range(vocab_size - 256):
        counts = count_ok(ids)
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        ids = merge_ok(ids, pair, 256 + k)
    return merges


def train_too_many(text, vocab_size):
    return train_ok(text, vocab_size + 256)


def train_never_stops(text, vocab_size):
    ids, merges = list(text.encode("utf-8")), []
    for k in range(vocab_size - 256):
        counts = count_ok(ids)
        pair = min(counts, key=lambda p: (-counts[p], p))   # fails once no pair is left
        merges.append(pair)
        ids = merge_ok(ids, pair, 256 + k)
    return merges


def train_merged_bytes(text, vocab_size):
    vocab = {i: bytes([i]) for i in range(256)}
    for k, (a, b) in enumerate(train_ok(text, vocab_size)):
        vocab[256 + k] = vocab[a] + vocab[b]
    return [vocab[i] for i in range(256, len(vocab))]   # the pieces, not the id pairs


CONTRACTS["check_train_bpe"] = Contract(references=[train_ok], mistakes=[
    (train_first_seen, "the first one seen"),
    (train_ids_from_zero, "merge k creates id 256 \\+ k"),
    (train_counted_once, "recount them after every merge"),
    (train_characters, "character codes \\(ord\\)"),
    (train_too_many, "vocab_size counts the 256 bytes"),
    (train_never_stops, "nothing left to merge: stop early"),
    (train_merged_bytes, "list of \\(id, id\\) pairs"),
])
