"""Lesson 01's checks: counting pairs, one merge, encoding with a merge list."""

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
