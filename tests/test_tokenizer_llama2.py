"""Llama 2's real tokenizer in assets/llama2: the file is Meta's, and SentencePieceBPE reads it
id for id as sentencepiece does. Also the .model writer that rebuilt it."""

import hashlib
import re
import struct
from pathlib import Path

import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st

from llama_edu.data import pydoc_text
from llama_edu.tokenizer import (
    LLAMA2_TOKENIZER,
    SentencePieceBPE,
    load_llama2_tokenizer,
    parse_model,
    pretrained,
    read_specs,
    serialize_model,
)
from llama_edu.tokenizer.spm_model import (
    NORMALIZER_SPEC_FIELDS,
    TRAINER_SPEC_FIELDS,
    decode_spec,
    encode_spec,
)

FOLDER = LLAMA2_TOKENIZER.parent
SOURCE_NOTES = "Who is the 45th President of the United States?"
SOURCE_NOTES_IDS = [1, 11644, 338, 278, 29871, 29946, 29945, 386, 7178, 310, 278, 3303, 3900,
                    29973]


@pytest.fixture(scope="module")
def pair():
    return load_llama2_tokenizer(), spm.SentencePieceProcessor(model_file=str(LLAMA2_TOKENIZER))


def float32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


# -- the file ---------------------------------------------------------------------------------
def test_the_shipped_file_is_the_recorded_one():
    digest = hashlib.sha256(LLAMA2_TOKENIZER.read_bytes()).hexdigest()
    assert digest == pretrained.LLAMA2_SHA256
    provenance = (FOLDER / "PROVENANCE.md").read_text(encoding="utf-8")
    assert re.search(rf"sha256\W+{digest}", provenance), "PROVENANCE.md records another sha256"
    script = (Path(__file__).parents[1] / "scripts" / "build_llama2_tokenizer.py").read_text(
        encoding="utf-8")
    assert f'EXPECTED_SHA256 = "{digest}"' in script
    assert LLAMA2_TOKENIZER.stat().st_size == 499_723


def test_the_license_notice_ships_beside_it():
    notice = "Llama 2 is licensed under the LLAMA 2 Community License, Copyright (c) Meta " \
             "Platforms, Inc. All Rights Reserved."
    assert notice in (FOLDER / "NOTICE").read_text(encoding="utf-8")
    assert notice in " ".join((FOLDER / "LICENSE").read_text(encoding="utf-8").split())


def test_the_trainer_spec_reads_as_llama_2s():
    specs = read_specs(LLAMA2_TOKENIZER)
    trainer, normalizer = specs["trainer_spec"], specs["normalizer_spec"]
    assert trainer["model_type"] == 2 and trainer["vocab_size"] == 32000          # BPE
    assert trainer["character_coverage"] == float32(0.99995)
    assert trainer["split_digits"] is True and trainer["byte_fallback"] is True
    assert trainer["pad_id"] == -1 and trainer["max_sentencepiece_length"] == 16
    assert (trainer["unk_id"], trainer["bos_id"], trainer["eos_id"]) == (0, 1, 2)
    assert trainer["allow_whitespace_only_pieces"] is True
    assert normalizer["name"] == "identity" and normalizer["add_dummy_prefix"] is True
    assert normalizer["remove_extra_whitespaces"] is False
    assert "denormalizer_spec" not in specs


def test_sentencepiece_sees_the_same_settings(pair):
    ours, ref = pair
    assert ours.vocab_size == ref.get_piece_size() == 32000
    assert (ours.unk_id, ours.bos_id, ours.eos_id, ours.pad_id) == (
        ref.unk_id(), ref.bos_id(), ref.eos_id(), ref.pad_id()) == (0, 1, 2, -1)
    for i in (0, 1, 3, 258, 259, 260, 13, 29871, 29872, 31999):
        assert ours.id_to_piece(i) == ref.id_to_piece(i)
        assert ours.scores[i] == ref.get_score(i)
    assert ref.get_score(259) == ref.get_score(29871) == -1e9    # ▁▁ and ▁: last to merge


# -- the source notes' example ------------------------------------------------------------------
def test_the_source_notes_example(pair):
    ours, ref = pair
    assert ref.encode(SOURCE_NOTES, add_bos=True) == SOURCE_NOTES_IDS
    assert ours.encode(SOURCE_NOTES, bos=True) == SOURCE_NOTES_IDS
    pieces = [ours.id_to_piece(i) for i in SOURCE_NOTES_IDS]
    assert pieces[:7] == ["<s>", "▁Who", "▁is", "▁the", "▁", "4", "5"]   # 4 and 5 split
    assert ours.decode(SOURCE_NOTES_IDS) == ref.decode(SOURCE_NOTES_IDS) == SOURCE_NOTES


# -- ours equals sentencepiece --------------------------------------------------------------
SAMPLES = [
    "", " ", "Hello world!", "  two leading, two trailing  ", "def f(x):\n\treturn x ** 2\n",
    "12345 + 678.9 = 13023.9, 0x1F, 1e-3, 2024-07-18", "使用字节来分解未知的 UTF-8 字符",
    "鑫 龘 𠮷 — byte fallback", "emoji 😀🎉👍🏽 and a flag 🇫🇷", "naïve café, a\u0301",
    "\n\n\n", "\t\t  \u3000 \u00a0", "<s> </s> <unk> <0x41>", "▁ literal ▁▁ markers",
    "Ünïcödé ΑΒΓ кириллица עברית العربية हिन्दी", "x" * 500, " " * 37 + "end",
]
FRAGMENTS = st.sampled_from([
    "the", " quick", "brown", "Who", " is", "President", "import torch", "for i in range(10):",
    "    return", "{}", "[]", "()", "==", "->", "0", "42", "3.14159", "2024", "1,000,000",
    "汉字", "中文", "你好，世界", "東京", "한국어", "😀", "👍🏽", "🇫🇷", "\u200d", "\u0301",
    " ", "  ", "    ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "▁", "<s>", "<0x0A>", "ſ", "ﬁ",
])
TEXTS = st.one_of(
    st.lists(FRAGMENTS, max_size=12).map("".join),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
    st.lists(st.one_of(FRAGMENTS, st.text(max_size=3)), max_size=10).map("".join),
)


def test_samples_and_a_long_text_equal_sentencepiece(pair):
    ours, ref = pair
    for text in SAMPLES + [pydoc_text()[:20_000]]:
        ids = ours.encode(text)
        assert ids == ref.encode(text), f"ids differ for {text[:40]!r}"
        assert ours.encode_as_pieces(text) == ref.encode(text, out_type=str)
        assert ours.decode(ids) == ref.decode(ids)


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_property_ours_equals_sentencepiece(text):
    ours, ref = _pair()
    ids = ours.encode(text, bos=True)
    assert ids == ref.encode(text, add_bos=True)
    assert ours.decode(ids) == ref.decode(ids)


_PAIR = []


def _pair():
    if not _PAIR:
        _PAIR.append((load_llama2_tokenizer(),
                      spm.SentencePieceProcessor(model_file=str(LLAMA2_TOKENIZER))))
    return _PAIR[0]


# -- the writer ---------------------------------------------------------------------------------
def test_the_file_read_and_written_again_is_byte_identical():
    """Independent of the npm data: parse Meta's file, serialize it, get the same bytes."""
    data = LLAMA2_TOKENIZER.read_bytes()
    model, specs = parse_model(data), read_specs(data)
    assert serialize_model(model.pieces, specs["trainer_spec"], specs["normalizer_spec"]) == data


def test_a_sentencepiece_trained_model_round_trips(tmp_path):
    lines = [line for line in pydoc_text().splitlines()[:3000] if line.strip()]
    for options in ({}, dict(user_defined_symbols=["<sep>"], treat_whitespace_as_suffix=True)):
        prefix = tmp_path / f"m{len(options)}"
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_prefix=str(prefix), vocab_size=400,
            model_type="bpe", byte_fallback=True, num_threads=1, minloglevel=2, **options)
        data = prefix.with_suffix(".model").read_bytes()
        model, specs = parse_model(data), read_specs(data)
        rebuilt = serialize_model(model.pieces, specs["trainer_spec"], specs["normalizer_spec"],
                                  specs.get("denormalizer_spec"))
        assert rebuilt == data


def test_specs_encode_and_decode_every_kind_of_field():
    values = {"input": ["a.txt", "b.txt"], "model_type": 2, "vocab_size": 32000,
              "character_coverage": float32(0.99995), "pad_id": -1, "split_digits": True,
              "use_all_vocab": False, "unk_surface": " \u2047 ", "input_sentence_size": 2**40}
    data = encode_spec(values, TRAINER_SPEC_FIELDS, "trainer_spec")
    assert decode_spec(data, TRAINER_SPEC_FIELDS) == values
    assert decode_spec(encode_spec({"precompiled_charsmap": b"\x00\xff"},
                                   NORMALIZER_SPEC_FIELDS), NORMALIZER_SPEC_FIELDS) == {
        "precompiled_charsmap": b"\x00\xff"}
    # a negative int32 takes ten bytes, as protobuf writes it
    assert encode_spec({"pad_id": -1}, TRAINER_SPEC_FIELDS) == b"\xd8\x02" + b"\xff" * 9 + b"\x01"


def test_a_written_model_loads_in_sentencepiece(tmp_path):
    """A tiny hand-made model: the pieces and scores decide the merges in both codecs."""
    from llama_edu.tokenizer.spm_model import BYTE, CONTROL, UNKNOWN, Piece

    pieces = [Piece("<unk>", 0.0, UNKNOWN), Piece("<s>", 0.0, CONTROL),
              Piece("</s>", 0.0, CONTROL)] + [Piece(f"<0x{b:02X}>", 0.0, BYTE)
                                              for b in range(256)]
    for k, text in enumerate(["▁a", "ab", "▁ab", "b", "a", "▁"]):
        pieces.append(Piece(text, -float(k)))
    trainer = {"model_type": 2, "vocab_size": len(pieces), "byte_fallback": True}
    normalizer = {"name": "identity", "add_dummy_prefix": True,
                  "remove_extra_whitespaces": False}
    path = tmp_path / "tiny.model"
    path.write_bytes(serialize_model(pieces, trainer, normalizer))
    ref, ours = spm.SentencePieceProcessor(model_file=str(path)), SentencePieceBPE.from_file(path)
    for text in ["ab", "a b", "bab", "abc", "字"]:
        assert ours.encode(text) == ref.encode(text)
    assert ref.encode("ab", out_type=str) == ["▁ab"]


# -- errors ---------------------------------------------------------------------------------
def test_writer_errors_say_what_to_fix():
    with pytest.raises(ValueError, match="no field named 'vocab'"):
        encode_spec({"vocab": 3}, TRAINER_SPEC_FIELDS, "trainer_spec")
    with pytest.raises(TypeError, match="split_digits must be an integer or bool"):
        encode_spec({"split_digits": "yes"}, TRAINER_SPEC_FIELDS, "trainer_spec")
    with pytest.raises(TypeError, match="input is a repeated field"):
        encode_spec({"input": "a.txt"}, TRAINER_SPEC_FIELDS, "trainer_spec")
    with pytest.raises(ValueError, match="at least one piece"):
        serialize_model([], {}, {})


def test_a_changed_file_is_refused(tmp_path, monkeypatch):
    changed = tmp_path / "tokenizer.model"
    data = LLAMA2_TOKENIZER.read_bytes()   # one letter of the stored model_prefix changed:
    changed.write_bytes(data.replace(b"spm_model_32k", b"spm_model_64k"))  # still readable
    assert SentencePieceBPE.from_file(changed).vocab_size == 32000
    monkeypatch.setattr(pretrained, "LLAMA2_TOKENIZER", changed)
    with pytest.raises(ValueError, match="was changed; restore it"):
        load_llama2_tokenizer()
    monkeypatch.setattr(pretrained, "LLAMA2_TOKENIZER", tmp_path / "missing.model")
    with pytest.raises(FileNotFoundError, match="build_llama2_tokenizer.py"):
        load_llama2_tokenizer()
