"""SentencePieceBPE gives sentencepiece's ids and text, id for id, on models trained here."""

import random
from pathlib import Path

import pytest
import sentencepiece as spm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_edu.data import pydoc_text
from llama_edu.tokenizer import SentencePieceBPE, parse_model, read_model
from llama_edu.tokenizer.sentencepiece import decode_bytes

LLAMA_LIKE = dict(model_type="bpe", normalization_rule_name="identity", byte_fallback=True,
                  split_digits=True, add_dummy_prefix=True, remove_extra_whitespaces=False,
                  allow_whitespace_only_pieces=True, character_coverage=1.0)
CONFIGS = {  # name: changes to the Llama-like settings
    "llama": {},
    "no_byte_fallback": dict(byte_fallback=False, character_coverage=0.9995),
    "remove_extra_whitespaces": dict(remove_extra_whitespaces=True),
    "no_dummy_prefix": dict(add_dummy_prefix=False),
    "whitespace_suffix": dict(treat_whitespace_as_suffix=True),
    "user_symbols": dict(user_defined_symbols=["<sep>", "def"], control_symbols=["<ctl>"],
                         bos_id=-1, split_digits=False),
}
SAMPLES = [
    "Who is the 45th President of the United States?", "", " ", "  two leading, two trailing  ",
    "使用字节来分解未知的 UTF-8 字符", "emoji 😀🎉 and a flag 🇫🇷", "naïve café, a\u0301 e\u0301",
    "def f(x):\n\treturn x ** 2  # comment\n", "12345 + 678.9 = 13023.9, 0x1F, 1e-3",
    "\x00\x01 control\x7f characters\x1b[0m", "▁ literal ▁▁ markers ▁", "\n\n\n", "\t\t",
    "<s> and </s> and <unk> and <sep> <ctl> defdef", "     five spaces", "x" * 300,
    "for i in range(10):\n    print(i)   \n", "Ünïcödé ΑΒΓ αβγ кириллица עברית العربية",
]


def _corpus() -> list[str]:
    lines = [line for line in pydoc_text().splitlines() if line.strip()]
    return lines[::3]  # a third of the corpus keeps training quick


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """name -> path of a SentencePiece BPE model trained on Python's help texts."""
    folder = tmp_path_factory.mktemp("spm")
    corpus = _corpus()
    paths = {}
    for name, changes in CONFIGS.items():
        options = {**LLAMA_LIKE, **changes}
        sentences = corpus + ["汉字 字符 使用"] * 5 if name == "user_symbols" else corpus
        spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences),
                                       model_prefix=str(folder / name), vocab_size=800,
                                       num_threads=1, minloglevel=2, **options)
        paths[name] = str(folder / f"{name}.model")
    return paths


def _pair(path):
    return SentencePieceBPE.from_file(path), spm.SentencePieceProcessor(model_file=path)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_ids_and_text_equal_sentencepiece(models, name):
    ours, ref = _pair(models[name])
    held_out = pydoc_text()[-3000:]  # also a long text with many words
    for text in SAMPLES + [held_out]:
        ids = ours.encode(text)
        assert ids == ref.encode(text), f"{name}: ids differ for {text[:40]!r}"
        assert ours.decode(ids) == ref.decode(ids), f"{name}: text differs for {text[:40]!r}"
        assert ours.encode_as_pieces(text) == ref.encode(text, out_type=str)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_vocabulary_matches_piece_for_piece(models, name):
    ours, ref = _pair(models[name])
    assert ours.vocab_size == ref.get_piece_size()
    for i in range(ours.vocab_size):
        piece = ours.id_to_piece(i)
        assert piece == ref.id_to_piece(i)
        assert ours.piece_to_id(piece) == ref.piece_to_id(piece) == i
        assert ours.scores[i] == pytest.approx(ref.get_score(i), abs=0)
    assert ours.piece_to_id("no such piece!") == ref.piece_to_id("no such piece!") == ours.unk_id
    assert (ours.unk_id, ours.bos_id, ours.eos_id, ours.pad_id) == (
        ref.unk_id(), ref.bos_id(), ref.eos_id(), ref.pad_id())


def test_bos_and_eos_are_added_like_sentencepiece(models):
    ours, ref = _pair(models["llama"])
    text = "Who is the 45th President of the United States?"
    for bos, eos in [(True, False), (False, True), (True, True)]:
        assert ours.encode(text, bos=bos, eos=eos) == ref.encode(text, add_bos=bos, add_eos=eos)
    ids = ours.encode(text, bos=True, eos=True)
    assert ids[0] == 1 and ids[-1] == 2 and ours.decode(ids) == text


def test_the_llama_example_splits_digits_and_starts_with_bos(models):
    sp = SentencePieceBPE.from_file(models["llama"])
    ids = sp.encode("Who is the 45th President of the United States?", bos=True)
    pieces = [sp.id_to_piece(i) for i in ids]
    assert pieces[0] == "<s>"
    assert "4" in pieces and "5" in pieces and pieces.index("5") == pieces.index("4") + 1


def test_byte_fallback_spells_unknown_characters_in_utf8_bytes(models):
    sp = SentencePieceBPE.from_file(models["llama"])
    pieces = sp.encode_as_pieces("字")  # not in the English training text
    assert pieces == ["▁", "<0xE5>", "<0xAD>", "<0x97>"]
    assert sp.decode(sp.encode("字")) == "字"


def test_without_byte_fallback_a_run_of_unknowns_is_one_unk(models):
    ours, ref = _pair(models["no_byte_fallback"])
    ids = ours.encode("a 字字字 b")
    assert ids.count(ours.unk_id) == 1 and ids == ref.encode("a 字字字 b")
    assert ours.decode(ids) == ref.decode(ids) == "a  \u2047  b"  # " ⁇ " stands for <unk>


def test_decoding_arbitrary_ids_matches_sentencepiece(models):
    """Random id sequences: bytes that are not valid UTF-8, pieces with ▁ first, controls."""
    rng = random.Random(0)
    for name in ("llama", "remove_extra_whitespaces", "no_dummy_prefix"):
        ours, ref = _pair(models[name])
        for _ in range(300):
            ids = [rng.randrange(ours.vocab_size) for _ in range(rng.randrange(0, 12))]
            assert ours.decode(ids) == ref.decode(ids), (name, ids)
    ours, ref = _pair(models["llama"])
    by = ours.piece_to_id
    bad_utf8 = [by("<0xE5>"), by("<0xAD>"), by("▁a"), by("<0xFF>"), by("<0x41>")]
    assert ours.decode(bad_utf8) == ref.decode(bad_utf8)


def test_decode_bytes_replaces_each_bad_byte():
    assert decode_bytes("字".encode()) == "字"
    assert decode_bytes(b"\xe5\xad") == "\ufffd\ufffd"        # Python would give one U+FFFD
    assert decode_bytes(b"\xed\xa0\x80A") == "\ufffd\ufffd\ufffdA"  # a surrogate's bytes
    assert decode_bytes(b"\xf0\x9f\x98\x80") == "😀"


# -- properties -----------------------------------------------------------------------------
TEXT_ALPHABET = st.one_of(
    st.sampled_from(list("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789.,:;()[]{}'\"_-+=*/\\#")),
    st.sampled_from([" ", "\t", "\n", "\r", "\x00", "\x1f", "\u00a0", "\u3000"]),
    st.sampled_from(list("使用字节来分解未知的字符汉😀🎉👍") + ["\U0001f3fd", "\u0301", "\u200d"]),
    st.characters(exclude_categories=("Cs",), exclude_characters="\u2581"),
)
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.text(st.one_of(TEXT_ALPHABET, st.just("\u2581")), max_size=40))
def test_property_encode_equals_sentencepiece(models, text):
    for name in ("llama", "remove_extra_whitespaces", "whitespace_suffix"):
        ours, ref = _pair_cached(models[name])
        assert ours.encode(text) == ref.encode(text), name


@SETTINGS
@given(st.text(TEXT_ALPHABET, max_size=40))
def test_property_decode_inverts_encode(models, text):
    """Exact for Llama's settings, for any text without the ▁ character itself."""
    sp, ref = _pair_cached(models["llama"])
    ids = sp.encode(text)
    assert sp.decode(ids) == text == ref.decode(ids)


_CACHE = {}


def _pair_cached(path):
    if path not in _CACHE:
        _CACHE[path] = _pair(path)
    return _CACHE[path]


# -- errors ---------------------------------------------------------------------------------
def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SentencePiece model"):
        SentencePieceBPE.from_file(tmp_path / "nope.model")


def test_truncated_files_are_reported_as_truncated(models, tmp_path):
    data = Path(models["llama"]).read_bytes()
    for keep in (0.13, 0.5, 0.9, 0.999):
        path = tmp_path / f"cut{keep}.model"
        path.write_bytes(data[:int(len(data) * keep)])
        with pytest.raises(ValueError, match="truncated"):
            SentencePieceBPE.from_file(path)
    # cut exactly between two pieces: well-formed protobuf, but the settings are missing
    model = read_model(models["llama"])
    assert len(model.pieces) == 800 and model.trainer_spec.byte_fallback
    with pytest.raises(ValueError, match="has no trainer_spec: the file looks truncated"):
        parse_model(data[:_end_of_first_pieces(data, 10)])


def _end_of_first_pieces(data: bytes, n: int) -> int:
    from llama_edu.tokenizer.spm_model import _varint
    pos = 0
    for _ in range(n):
        _, pos = _varint(data, pos)
        size, pos = _varint(data, pos)
        pos += size
    return pos


def test_empty_and_foreign_files_are_rejected(tmp_path):
    empty = tmp_path / "empty.model"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        SentencePieceBPE.from_file(empty)
    text = tmp_path / "notes.model"
    text.write_text("this is a text file, not a model\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a readable SentencePiece model"):
        SentencePieceBPE.from_file(text)


def test_unigram_and_nfkc_models_are_rejected_with_the_fix(tmp_path):
    corpus = _corpus()[:400]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=str(
        tmp_path / "uni"), vocab_size=300, model_type="unigram", minloglevel=2, num_threads=1)
    with pytest.raises(ValueError, match="is a UNIGRAM model.*model_type='bpe'"):
        SentencePieceBPE.from_file(tmp_path / "uni.model")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=str(
        tmp_path / "nfkc"), vocab_size=300, model_type="bpe", minloglevel=2, num_threads=1)
    with pytest.raises(ValueError, match="'nmt_nfkc'.*normalization_rule_name='identity'"):
        SentencePieceBPE.from_file(tmp_path / "nfkc.model")


def test_bad_ids_and_inputs_raise_clear_errors(models):
    sp = SentencePieceBPE.from_file(models["llama"])
    with pytest.raises(ValueError, match="token id 800 is outside the vocabulary"):
        sp.decode([5, 800])
    with pytest.raises(ValueError, match="token id -1 is outside"):
        sp.decode([-1])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        sp.id_to_piece(10**6)
    with pytest.raises(TypeError, match="must be integers"):
        sp.decode([1.5])
    with pytest.raises(TypeError, match="not a string"):
        sp.decode("hello")
    with pytest.raises(TypeError, match="expects a str"):
        sp.encode(b"bytes")
    with pytest.raises(ValueError, match="lone surrogate"):
        sp.encode("a\ud800b")
    no_bos = SentencePieceBPE.from_file(models["user_symbols"])
    with pytest.raises(ValueError, match="no <s> control piece"):
        no_bos.encode("hi", bos=True)


@SETTINGS
@given(st.text(st.sampled_from(list("▁▁▁etaoinshrdlu.,()0123")), max_size=80))
def test_property_rescanning_and_heap_merge_alike(models, chunk):
    """Short chunks merge by rescanning a list, long ones with a heap: the same merges."""
    sp, _ = _pair_cached(models["llama"])
    heap = [piece for piece in sp._merge_heap(list(chunk), None, None) if piece]
    assert sp._merge_short(list(chunk)) == heap
