"""Llama 3's real tokenizer in assets/llama3 and ByteLevelBPE's tiktoken side: the file is
Meta's, from_tiktoken gives tiktoken's ids for any text, and a trained ByteLevelBPE exports
ranks that tiktoken encodes the same way."""

import base64
import hashlib
import re
import unicodedata
from pathlib import Path

import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiktoken.load import load_tiktoken_bpe

from llama_edu.data import course_text, pydoc_text
from llama_edu.tokenizer import (
    LLAMA3_SPECIAL_TOKENS,
    LLAMA3_SPLIT,
    LLAMA3_TOKENIZER,
    ByteLevelBPE,
    load_llama3_tokenizer,
    pretrained,
    read_tiktoken,
    write_tiktoken,
)
from llama_edu.tokenizer.tiktoken_bpe import encode_by_rank

FOLDER = LLAMA3_TOKENIZER.parent
WHO = "Who is the 45th President of the United States?"
WHO_IDS = [15546, 374, 279, 220, 1774, 339, 4900, 315, 279, 3723, 4273, 30]

_LOADED = []


def loaded():
    """(ours, tiktoken's Encoding) on the shipped file, built once."""
    if not _LOADED:
        ours = load_llama3_tokenizer()
        ranks = load_tiktoken_bpe(str(LLAMA3_TOKENIZER))   # tiktoken's own reader
        ref = tiktoken.Encoding("llama3", pat_str=LLAMA3_SPLIT, mergeable_ranks=ranks,
                                special_tokens=ours.special_ids)
        _LOADED.append((ours, ref))
    return _LOADED[0]


# -- the file -------------------------------------------------------------------------------
def test_the_shipped_file_is_the_recorded_one():
    digest = hashlib.sha256(LLAMA3_TOKENIZER.read_bytes()).hexdigest()
    assert digest == pretrained.LLAMA3_SHA256
    provenance = (FOLDER / "PROVENANCE.md").read_text(encoding="utf-8")
    assert re.search(rf"sha256\W+{digest}", provenance), "PROVENANCE.md records another sha256"
    script = (Path(__file__).parents[1] / "scripts" / "build_llama3_tokenizer.py").read_text(
        encoding="utf-8")
    assert f'EXPECTED_SHA256 = "{digest}"' in script
    notice = ("Meta Llama 3 is licensed under the Meta Llama 3 Community License, Copyright © "
              "Meta Platforms, Inc. All Rights Reserved.")
    assert notice in (FOLDER / "NOTICE").read_text(encoding="utf-8")
    assert notice in " ".join((FOLDER / "LICENSE").read_text(encoding="utf-8").split())


def test_our_reader_agrees_with_tiktokens():
    ours, ref = loaded()
    ranks = read_tiktoken(LLAMA3_TOKENIZER)
    assert ranks == load_tiktoken_bpe(str(LLAMA3_TOKENIZER)) and len(ranks) == 128_000
    assert ours.mergeable_ranks() == ranks
    assert ours.vocab_size == ref.n_vocab == 128_256


def test_special_tokens_are_metas():
    ours, _ = loaded()
    ids = ours.special_ids
    assert len(LLAMA3_SPECIAL_TOKENS) == 256 and sorted(ids.values()) == list(range(128000,
                                                                                     128256))
    assert ids["<|begin_of_text|>"] == 128000 and ids["<|end_of_text|>"] == 128001
    assert ids["<|start_header_id|>"] == 128006 and ids["<|end_header_id|>"] == 128007
    assert ids["<|eot_id|>"] == 128009
    reserved = [ids[f"<|reserved_special_token_{k}|>"] for k in range(251)]
    assert reserved[:6] == [128002, 128003, 128004, 128005, 128008, 128010]
    assert reserved[-1] == 128255


# -- the examples -------------------------------------------------------------------
def test_the_two_sentences():
    ours, ref = loaded()
    assert ours.encode("Hello world") == ref.encode("Hello world") == [9906, 1917]
    assert ours.encode(WHO) == ref.encode(WHO) == WHO_IDS
    assert ours.vocab[1774] == b"45"                                  # one piece
    assert ours.decode(WHO_IDS) == WHO


def test_digits_go_in_groups_of_three():
    ours, ref = loaded()
    assert ours.words("1234567 x12") == ["123", "456", "7", " x", "12"]
    assert ours.encode("1234567") == ref.encode("1234567")


def test_special_tokens_in_text():
    ours, ref = loaded()
    chat = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
            "<|reserved_special_token_250|>")
    ids = ours.encode(chat)
    assert ids == ref.encode(chat, allowed_special="all")
    assert ids[:2] == [128000, 128006] and ids[-2:] == [128009, 128255]
    assert ours.decode(ids) == ref.decode(ids) == chat
    plain = ours.encode(chat, special=False)                      # spelled out as text
    assert plain == ref.encode_ordinary(chat) and max(plain) < 128000


def test_the_course_corpus_gives_tiktokens_ids():
    ours, ref = loaded()
    text = course_text()
    assert ours.encode(text, special=False) == ref.encode_ordinary(text)


# -- properties: any text -------------------------------------------------------------------
# tiktoken's regex tables follow an older Unicode than the regex package's (18.0): 336
# recently added numbers are \p{N} only for the regex package, and there the two cut words
# differently. They are left out here, with the characters Python's own (older) Unicode
# database does not know, which is where later additions will come from.
UNICODE_GAP = {chr(c) for lo, hi in [(0x11DE0, 0x11DE9), (0x1246F, 0x1246F), (0x12475, 0x1247F),
                                     (0x12550, 0x12686), (0x16FF4, 0x16FF6)]
               for c in range(lo, hi + 1)}
assert len(UNICODE_GAP) == 336
ASSIGNED = st.characters(exclude_categories=("Cs", "Cn"),
                         exclude_characters="".join(sorted(UNICODE_GAP)))
FRAGMENTS = st.sampled_from([
    "Hello", " world", "'s", "'LL", "'Ve", "ſ", "K", " 45th", "1234567", "3.14", "汉字",
    "你好，世界", "😀", "👍🏽", "\u200d", "\u0301", " ", "   ", "\t", "\n", "\r\n", "\n\n  ",
    "\u00a0", "\u3000", "\x1c", "\x85", "def f(x):", "    return", "{}", "->", "<|", "|>",
    "<|eot_id|>", "<|begin_of_text|>", "<|reserved_special_token_7|>",
    "aaaaaaa", "=========", "-------", "ababab", "~~~~~", "ーーーー", "ℓℓℓℓℓ", "zzzzzz",
])  # the runs of one character make ties: equal pairs, the leftmost merges first
TEXTS = st.one_of(
    st.lists(FRAGMENTS, max_size=12).map("".join),
    st.text(ASSIGNED, max_size=40),
    st.lists(st.one_of(FRAGMENTS, st.text(ASSIGNED, max_size=4)), max_size=10).map("".join),
)


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_property_from_tiktoken_equals_tiktoken(text):
    ours, ref = loaded()
    ids = ours.encode(text, special=False)
    assert ids == ref.encode_ordinary(text)
    assert ours.decode(ids) == ref.decode(ids)
    with_specials = ours.encode(text)
    assert with_specials == ref.encode(text, allowed_special="all")


def test_every_assigned_character_gives_tiktokens_ids():
    """Each assigned code point in a few contexts (after a letter, a space, a quote, a newline,
    doubled, before digits); one long text per block of 4096 code points."""
    ours, ref = loaded()
    chars = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) not in (
        "Cs", "Cn", "Co") and chr(c) not in UNICODE_GAP]
    for start in range(0, len(chars), 4096):
        text = "".join(f"a{c}{c} '{c}\n{c}1" for c in chars[start:start + 4096])
        assert ours.encode(text, special=False) == ref.encode_ordinary(text), (
            f"ids differ in the block starting at U+{ord(chars[start]):04X}")


def test_every_tokens_own_text_gives_tiktokens_ids():
    """588 of Llama 3's tokens are not reached by merging pairs from their own bytes; a word
    that is such a token is still that one token (the whole-word rule)."""
    ours, ref = loaded()
    texts = [text for text in map(_utf8, ours.vocab.values()) if text is not None]
    assert len(texts) > 120_000          # the others are parts of a character's bytes
    assert [ours.encode(t, special=False) for t in texts] == [ref.encode_ordinary(t)
                                                              for t in texts]


def _utf8(piece: bytes) -> str | None:
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_the_unicode_gap_is_where_the_two_tables_differ():
    """The left-out numbers: a number after a lone space for regex, " " + symbol for tiktoken
    (whose space then merges with the character's first byte)."""
    ours, ref = loaded()
    for c in sorted(UNICODE_GAP)[::37]:
        text = f"x {c}"
        assert ours.words(text) == ["x", " ", c]
        assert ours.encode(text, special=False) != ref.encode_ordinary(text), hex(ord(c))


def test_encode_by_rank_takes_the_lowest_rank_leftmost_first(tmp_path):
    ranks = {b"a": 0, b"b": 1, b"c": 2, b"ab": 3, b"bc": 4, b"abc": 5}
    assert encode_by_rank(b"abcab", ranks) == [5, 3]
    assert encode_by_rank(b"bcab", ranks) == [4, 3]            # ab (3) merges before bc (4)
    assert encode_by_rank(b"abc", ranks) == [5]                # a whole word that is a token
    assert encode_by_rank(b"aaa", {b"a": 0, b"aa": 1}) == [1, 0]   # leftmost pair first
    ranks = {**{bytes([b]): b for b in range(256)}, b"aa": 256, b"aaa": 257, b"ba": 258}
    ref = tiktoken.Encoding("tiny", pat_str=r"\S+|\s+", mergeable_ranks=ranks,
                            special_tokens={})
    bpe = ByteLevelBPE.from_tiktoken(write_tiktoken(ranks, tmp_path / "tiny.tiktoken"),
                                     special_tokens=[], pattern=r"\S+|\s+")
    for word in ["aaaa", "aaaaa", "baaab", "aaaaaaa", "bababaa aab"]:
        assert bpe.encode(word) == ref.encode_ordinary(word), word


# -- a trained ByteLevelBPE as tiktoken ranks -----------------------------------------------
CORPUS = st.text(st.sampled_from(list("ab c\n1'") + ["字", "é", "😀"]), min_size=1,
                 max_size=300)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CORPUS, st.integers(0, 60), st.lists(TEXTS, max_size=3))
def test_property_trained_ranks_encode_as_tiktoken(corpus, n_merges, others):
    bpe = ByteLevelBPE(pattern=LLAMA3_SPLIT).train(corpus, 256 + n_merges, progress=False)
    ref = tiktoken.Encoding("trained", pat_str=LLAMA3_SPLIT,
                            mergeable_ranks=bpe.mergeable_ranks(), special_tokens={})
    for text in [corpus, *others]:
        assert bpe.encode(text) == ref.encode_ordinary(text)


def test_a_trained_tokenizer_round_trips_through_a_tiktoken_file(tmp_path):
    text = pydoc_text()[:100_000]
    bpe = ByteLevelBPE(pattern=LLAMA3_SPLIT).train(text, 1024, progress=False)
    path = write_tiktoken(bpe.mergeable_ranks(), tmp_path / "trained.tiktoken")
    assert load_tiktoken_bpe(str(path)) == bpe.mergeable_ranks() == read_tiktoken(path)
    again = ByteLevelBPE.from_tiktoken(path, special_tokens=[])
    ref = tiktoken.Encoding("trained", pat_str=LLAMA3_SPLIT,
                            mergeable_ranks=load_tiktoken_bpe(str(path)), special_tokens={})
    sample = pydoc_text()[100_000:130_000]
    assert again.encode(sample) == bpe.encode(sample) == ref.encode_ordinary(sample)


def test_llama3_split_works_with_save_and_load(tmp_path):
    bpe = ByteLevelBPE(pattern=LLAMA3_SPLIT).train("hello world 12345 " * 20, 270,
                                                   progress=False)
    again = ByteLevelBPE.load(bpe.save(tmp_path / "bpe.txt"))
    assert again.pattern == LLAMA3_SPLIT and again.merges == bpe.merges
    assert again.encode("hello 12345") == bpe.encode("hello 12345")


# -- errors ---------------------------------------------------------------------------------
def _write(tmp_path, lines: list[bytes]) -> Path:
    path = tmp_path / "bad.tiktoken"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_bad_tiktoken_files_say_what_is_wrong(tmp_path):
    all_bytes = [base64.b64encode(bytes([b])) + b" %d" % b for b in range(256)]
    with pytest.raises(FileNotFoundError, match="no tiktoken BPE file"):
        read_tiktoken(tmp_path / "missing")
    with pytest.raises(ValueError, match="line 1: expected 'base64 rank'"):
        read_tiktoken(_write(tmp_path, [b"not a tiktoken file at all"]))
    with pytest.raises(ValueError, match="rank 256 is missing and 300 is outside"):
        read_tiktoken(_write(tmp_path, all_bytes + [b"YWI= 300"]))
    with pytest.raises(ValueError, match="already have rank 0"):
        read_tiktoken(_write(tmp_path, all_bytes + [b"AA== 256"]))
    with pytest.raises(ValueError, match="no rank for the single byte 0xFF"):
        read_tiktoken(_write(tmp_path, all_bytes[:255]))
    with pytest.raises(ValueError, match="is empty"):
        read_tiktoken(_write(tmp_path, []))


def test_a_tiktoken_tokenizer_cannot_be_saved_as_merges(tmp_path):
    ours, _ = loaded()
    with pytest.raises(ValueError, match="write_tiktoken"):
        ours.save(tmp_path / "x.txt")


def test_a_changed_file_is_refused(tmp_path, monkeypatch):
    changed = tmp_path / "tokenizer.model"
    changed.write_bytes(LLAMA3_TOKENIZER.read_bytes().replace(b"IQ== 0\n", b"IQ== 0\n\n"))
    assert read_tiktoken(changed) == read_tiktoken(LLAMA3_TOKENIZER)   # same ranks, new bytes
    monkeypatch.setattr(pretrained, "LLAMA3_TOKENIZER", changed)
    with pytest.raises(ValueError, match="was changed; restore it"):
        load_llama3_tokenizer()


def test_a_pattern_that_does_not_compile_says_so():
    with pytest.raises(ValueError, match="does not compile"):
        ByteLevelBPE(pattern=r"\p{L}+(")
