"""The lesson 12 checks: references pass, stubs say 'not written yet', and each classic
mistake gets its own explanation."""

import pytest
import torch
import torch.nn.functional as F

from llama_edu.exercises import check_head_shards, check_parallel_style, check_tp_swiglu

# ---- references, written the way a learner would -------------------------------------


def style_ok(name):
    return "row" if name in ("o_proj", "down_proj") else "column"


def swiglu_ok(x, gate_shards, up_shards, down_shards, all_reduce):
    partials = [F.linear(F.silu(x @ g.T) * (x @ u.T), d)
                for g, u, d in zip(gate_shards, up_shards, down_shards, strict=True)]
    return all_reduce(partials)


def heads_ok(n_heads, n_kv_heads, world_size, rank):
    per_rank = n_heads // world_size
    q_heads = list(range(rank * per_rank, (rank + 1) * per_rank))
    group = n_heads // n_kv_heads
    return q_heads, sorted({h // group for h in q_heads})


def stub(*args):
    raise NotImplementedError()


def test_references_pass(capsys):
    check_parallel_style(style_ok)
    check_tp_swiglu(swiglu_ok)
    check_head_shards(heads_ok)
    out = capsys.readouterr()
    assert out.out.count("✔") == 3 and out.err == ""


@pytest.mark.parametrize("check", [check_parallel_style, check_tp_swiglu, check_head_shards])
def test_stubs_are_not_written_yet(check):
    with pytest.raises(AssertionError, match="not written yet"):
        check(stub)


# ---- parallel_style ---------------------------------------------------------------------


def test_everything_column_is_told_where_the_input_is_already_split():
    with pytest.raises(AssertionError, match="o_proj and down_proj receive"):
        check_parallel_style(lambda name: "column")


def test_swapped_styles_are_named_as_swapped():
    with pytest.raises(AssertionError, match="every answer is swapped"):
        check_parallel_style(lambda name: "column" if style_ok(name) == "row" else "row")


def test_row_parallel_keys_are_explained():
    with pytest.raises(AssertionError, match="k and v are made from the full input"):
        check_parallel_style(lambda name: "row" if name in ("k_proj", "v_proj", "o_proj",
                                                            "down_proj") else "column")


def test_a_style_that_is_not_a_word_is_refused():
    with pytest.raises(AssertionError, match="should return 'column' or 'row'"):
        check_parallel_style(lambda name: 0)


# ---- tp_swiglu --------------------------------------------------------------------------


def test_all_reducing_the_hidden_slices_is_caught():
    def early(x, gates, ups, downs, all_reduce):
        hidden = [all_reduce([F.silu(x @ g.T) for g in gates]) for _ in range(1)][0]
        return sum(F.linear(hidden * (x @ u.T), d) for u, d in zip(ups, downs, strict=True))

    with pytest.raises(AssertionError, match="all-reduce belongs after down_proj"):
        check_tp_swiglu(early)


def test_concatenated_partials_are_caught():
    def concat(x, gates, ups, downs, all_reduce):
        return torch.cat([F.linear(F.silu(x @ g.T) * (x @ u.T), d)
                          for g, u, d in zip(gates, ups, downs, strict=True)], dim=-1)

    with pytest.raises(AssertionError, match="you concatenated the ranks' outputs"):
        check_tp_swiglu(concat)


def test_averaged_partials_are_caught():
    def mean(x, gates, ups, downs, all_reduce):
        return swiglu_ok(x, gates, ups, downs, all_reduce) / len(gates)

    with pytest.raises(AssertionError, match="you averaged the partial outputs"):
        check_tp_swiglu(mean)


def test_summing_by_hand_is_told_to_use_the_all_reduce():
    def by_hand(x, gates, ups, downs, all_reduce):
        return sum(F.linear(F.silu(x @ g.T) * (x @ u.T), d)
                   for g, u, d in zip(gates, ups, downs, strict=True))

    with pytest.raises(AssertionError, match="all_reduce was never called"):
        check_tp_swiglu(by_hand)


def test_two_all_reduces_are_one_too_many():
    def twice(x, gates, ups, downs, all_reduce):
        out = swiglu_ok(x, gates, ups, downs, all_reduce)
        return all_reduce([out] + [torch.zeros_like(out)] * (len(gates) - 1))

    with pytest.raises(AssertionError, match="called 2 times"):
        check_tp_swiglu(twice)


# ---- head_shards ------------------------------------------------------------------------


def test_no_kv_head_when_ranks_outnumber_them_is_caught():
    def no_copy(n_heads, n_kv_heads, world_size, rank):
        q_heads, _ = heads_ok(n_heads, n_kv_heads, world_size, rank)
        per = n_kv_heads // world_size
        return q_heads, list(range(rank * per, (rank + 1) * per))

    with pytest.raises(AssertionError, match="copy \\(replicate\\) it"):
        check_head_shards(no_copy)


def test_strided_query_heads_are_caught():
    def strided(n_heads, n_kv_heads, world_size, rank):
        q_heads = list(range(rank, n_heads, world_size))
        return q_heads, heads_ok(n_heads, n_kv_heads, world_size, rank)[1]

    with pytest.raises(AssertionError, match="contiguous block"):
        check_head_shards(strided)


def test_kv_heads_that_do_not_follow_the_query_groups_are_caught():
    def wrong_group(n_heads, n_kv_heads, world_size, rank):
        q_heads, kv = heads_ok(n_heads, n_kv_heads, world_size, rank)
        return q_heads, [(h + 1) % n_kv_heads for h in kv]

    with pytest.raises(AssertionError, match="reads KV head h //"):
        check_head_shards(wrong_group)
