"""ByteLevelBPE: the worked example, plain and fast trainers agree, codec and file round trips."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from llama_edu.data import pydoc_text
from llama_edu.tokenizer import ByteLevelBPE, get_pair_counts, merge, train_fast, train_plain


def test_wikipedia_example_three_merges():
    bpe = ByteLevelBPE(pattern=None).train("aaabdaaabac", vocab_size=259, progress=False)
    assert bpe.merges == [(97, 97), (97, 98), (256, 257)]
    assert bpe.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert bpe.vocab[258] == b"aaab" and bpe.decode([258, 100]) == "aaabd"


def test_pair_counts_overlap_and_merge_does_not():
    assert get_pair_counts([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert get_pair_counts([7, 7, 7]) == {(7, 7): 2}
    assert get_pair_counts([5]) == {} and get_pair_counts([]) == {}
    assert get_pair_counts([1, 2], {(1, 2): 3}, weight=2) == {(1, 2): 5}
    assert merge([7, 7, 7, 1], (7, 7), 256) == [256, 7, 1]
    assert merge([7, 7, 7, 7], (7, 7), 256) == [256, 256]
    assert merge([1, 2, 3, 1, 2], (1, 2), 300) == [300, 3, 300]
    assert merge([1], (1, 2), 300) == [1] and merge([], (1, 2), 300) == []


@pytest.mark.parametrize("text", [
    pydoc_text()[:20_000],
    "aaaa aaaa aaa aa a bbbb abab ababab " * 5,          # overlaps and ties everywhere
    "使用字节来分解未知的 UTF-8 字符 😀😀 " * 3 + "x1 x22 x333",
])
def test_plain_and_fast_trainers_learn_identical_merges(text):
    word_counts = ByteLevelBPE().word_counts(text)
    plain = train_plain(word_counts, 300)
    fast = train_fast(word_counts, 300)
    assert plain == fast and len(plain) > 10


def test_training_stops_when_nothing_is_left_to_merge():
    bpe = ByteLevelBPE(pattern=None).train("abab", vocab_size=1000, progress=False)
    assert bpe.merges == [(97, 98), (256, 256)] and bpe.vocab_size == 258


def test_encoding_by_earliest_merge_equals_applying_every_merge_in_order():
    text = pydoc_text()[:30_000]
    bpe = ByteLevelBPE().train(text, vocab_size=512, progress=False)
    for word in sorted(set(bpe.words(text)))[::7]:
        ids = list(word.encode("utf-8"))
        for k, pair in enumerate(bpe.merges):
            ids = merge(ids, pair, 256 + k)
        assert bpe.encode_word(word) == ids, word
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert len(text.encode("utf-8")) / len(ids) > 2.2  # bytes per token (1.0 before merges)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte (what HF byte-level BPE uses)."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + n) for n, b in enumerate(extra)}}


def test_encoding_matches_hugging_face_tokenizers_with_the_same_merges():
    text = pydoc_text()[:40_000]
    bpe = ByteLevelBPE().train(text, vocab_size=700, progress=False)
    to_char = _bytes_to_unicode()
    spell = {i: "".join(to_char[b] for b in piece) for i, piece in bpe.vocab.items()}
    hf = Tokenizer(models.BPE(vocab={s: i for i, s in spell.items()},
                              merges=[(spell[a], spell[b]) for a, b in bpe.merges]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    hf.decoder = decoders.ByteLevel()
    held_out = pydoc_text()[-5000:] + " 使用字节来分解未知的 UTF-8 字符 😀 aaaa"
    words = bpe.words(held_out)
    ours = bpe.encode(held_out)
    theirs = hf.encode(words, is_pretokenized=True).ids
    assert ours == theirs and hf.decode(theirs) == held_out == bpe.decode(ours)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_property_decode_inverts_encode(text):
    assert _SMALL.decode(_SMALL.encode(text)) == text


_SMALL = ByteLevelBPE(special_tokens=["<|endoftext|>"]).train(
    pydoc_text()[:10_000] + " 使用字节来分解 😀", vocab_size=400, progress=False)


def test_words_cover_the_text_exactly():
    text = "Hello, world!  It's 2024_05 x\t\ty  \n naïve 使用 😀  "
    assert "".join(ByteLevelBPE().words(text)) == text


def test_special_tokens_are_single_ids_and_can_be_turned_off():
    eot = _SMALL.special_ids["<|endoftext|>"]
    assert eot == _SMALL.vocab_size - 1 == 256 + len(_SMALL.merges)
    ids = _SMALL.encode("one<|endoftext|>two")
    assert eot in ids and _SMALL.decode(ids) == "one<|endoftext|>two"
    assert eot not in _SMALL.encode("one<|endoftext|>two", special=False)
    assert _SMALL.piece(eot) == "<|endoftext|>"


def test_save_and_load_round_trip(tmp_path):
    path = _SMALL.save(tmp_path / "bpe.txt")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("llama_edu byte-level BPE 1\n") and "<|endoftext|>" in text
    loaded = ByteLevelBPE.load(path)
    assert loaded.merges == _SMALL.merges and loaded.special_tokens == _SMALL.special_tokens
    assert loaded.pattern == _SMALL.pattern
    sample = "def f(x): return '使用' + x  # 😀<|endoftext|>"
    assert loaded.encode(sample) == _SMALL.encode(sample)


def test_file_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        ByteLevelBPE.load(tmp_path / "missing.txt")
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("hello\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a ByteLevelBPE file"):
        ByteLevelBPE.load(wrong)
    lines = _SMALL.save(tmp_path / "ok.txt").read_text(encoding="utf-8").splitlines()
    cut = tmp_path / "cut.txt"
    cut.write_text("\n".join(lines[:-3]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="truncated"):
        ByteLevelBPE.load(cut)
    garbled = tmp_path / "garbled.txt"
    garbled.write_text("\n".join(lines[:4] + ["97 x"] + lines[5:]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 5: expected two ids"):
        ByteLevelBPE.load(garbled)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="vocab_size \\(200\\) must be at least 256"):
        ByteLevelBPE().train("abc", vocab_size=200)
    with pytest.raises(ValueError, match="method must be 'plain' or 'fast'"):
        ByteLevelBPE().train("abc", vocab_size=300, method="quick")
    with pytest.raises(TypeError, match="expects text as a str"):
        ByteLevelBPE().train(b"abc", vocab_size=300)
    with pytest.raises(ValueError, match="uses an id that does not exist yet"):
        ByteLevelBPE(merges=[(97, 300)])
    with pytest.raises(ValueError, match="token id 5000 is outside the vocabulary"):
        _SMALL.decode([1, 5000])
    with pytest.raises(TypeError, match="must be integers"):
        _SMALL.decode(["a"])
    with pytest.raises(ValueError, match="distinct"):
        ByteLevelBPE(special_tokens=["<a>", "<a>"])
