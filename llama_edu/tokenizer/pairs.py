"""The merge loop both Llama tokenizers share: merge the best adjacent pair, again and again.

SentencePiece's BPE (Llama 2) merges the pair whose merged piece has the highest score;
tiktoken's (Llama 3) the pair whose merged bytes have the lowest rank. Either way, ties go
to the leftmost pair, and after a merge only the two pairs beside it change.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat
from operator import add


def merge_best_pairs(parts: list, value: Callable, missing, best: Callable = max) -> list:
    """Merge adjacent parts greedily, in place; returns `parts`.

    value(joined, missing): the priority of a joined pair, or `missing` when it is not in
    the vocabulary (dict.get fits); best: max for scores, min for ranks.
    """
    values = list(map(value, map(add, parts, parts[1:]), repeat(missing)))   # fast in C
    while values:
        top = best(values)
        if top == missing:
            break
        i = values.index(top)
        merged = parts[i] + parts[i + 1]
        parts[i:i + 2] = [merged]
        del values[i]      # values[i] is now the pair (merged, parts[i + 1])
        if i > 0:
            values[i - 1] = value(parts[i - 1] + merged, missing)
        if i < len(values):
            values[i] = value(merged + parts[i + 1], missing)
    return parts
