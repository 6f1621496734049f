"""Corpora, the course tokenizer, datasets and batches."""

import pytest
import sentencepiece as spm
import torch

from llama_edu.data import (
    TokenDataset,
    byte_tokens,
    course_text,
    encode_text,
    load_corpus,
    load_tokenizer,
    pydoc_text,
    random_batch,
    read_text_file,
    story_text,
    train_tokenizer,
)
from llama_edu.train import COURSE_TOKENIZER


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(COURSE_TOKENIZER)


def test_stories_are_seeded_varied_and_include_chinese():
    assert story_text(50, seed=3) == story_text(50, seed=3)
    assert story_text(50, seed=3) != story_text(50, seed=4)
    stories = story_text(2000).split("\n\n")
    assert len(stories) == 2000
    assert len(set(stories)) == 2000                      # no two stories alike
    openings = {s.split(",")[0] for s in stories}
    assert len(openings) >= 5
    assert sum("。" in s for s in stories) > 50           # some Chinese sentences
    words = set(" ".join(stories).split())
    assert len(words) > 800                               # a varied vocabulary
    assert any(ch.isdigit() for ch in stories[0] + stories[1] + stories[2] + stories[3])


def test_course_text_joins_pydoc_and_stories():
    text = course_text(n_stories=10)
    assert text.startswith(pydoc_text()[:1000])
    assert text.endswith(story_text(10))
    with pytest.raises(ValueError, match="n_stories"):
        story_text(0)


def test_read_text_file_utf8_and_clear_errors(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("小猫 sat on the mat.\n", encoding="utf-8")
    assert read_text_file(good) == "小猫 sat on the mat.\n"
    assert load_corpus(str(good)) == "小猫 sat on the mat.\n"
    with pytest.raises(FileNotFoundError, match="no text file"):
        read_text_file(tmp_path / "missing.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_text_file(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        read_text_file(empty)


def test_shipped_tokenizer_behaves_like_llamas(tokenizer):
    pieces = [tokenizer.id_to_piece(i) for i in tokenizer.encode("in 1984 the 齉")]
    assert pieces[pieces.index("1"):pieces.index("1") + 4] == ["1", "9", "8", "4"]  # split digits
    assert pieces[-3:] == ["<0xE9>", "<0xBD>", "<0x89>"]          # byte fallback, no <unk>
    assert tokenizer.decode(tokenizer.encode("ＡＢＣ ﬁ")) == "ＡＢＣ ﬁ"  # identity: no NFKC
    assert pieces[0].startswith("\u2581")                        # the dummy-prefix space
    assert [tokenizer.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.vocab_size) == (1, 2, 4096)


def test_train_tokenizer_reproduces_the_shipped_model(tmp_path):
    path = train_tokenizer(tmp_path / "again.model")
    assert path.read_bytes() == COURSE_TOKENIZER.read_bytes()


def test_tokenizer_round_trips_text_and_matches_sentencepiece(tokenizer):
    reference = spm.SentencePieceProcessor(model_file=str(COURSE_TOKENIZER))
    for text in ["Once upon a time, in 2023, 12 foxes", "def f(x):\n    return x",
                 "小猫和小狗找到了钥匙。", "emoji 🦙 and tabs\tok"]:
        ids = tokenizer.encode(text)
        assert ids == reference.encode(text)
        assert tokenizer.decode(ids) == text
    ids = tokenizer.encode("Year 2024", bos=True, eos=True)
    assert ids[0] == 1 and ids[-1] == 2
    assert [tokenizer.id_to_piece(i) for i in tokenizer.encode("2024")][-4:] == list("2024")
    assert tokenizer.vocab_size == 4096


def test_load_tokenizer_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_tokenizer"):
        load_tokenizer(tmp_path / "nope.model")


def test_encode_text_puts_bos_before_each_paragraph(tokenizer):
    ids = encode_text(tokenizer, "first part\n\nsecond part\n\n\n\nthird")
    assert int((ids == 1).sum()) == 3 and ids[0] == 1 and ids.dtype == torch.long


def test_dataset_holds_out_every_kth_paragraph(tokenizer):
    text = "\n\n".join(f"Story number {i} is here." for i in range(40))
    data = TokenDataset.from_text(text, tokenizer, val_fraction=0.1)
    val_text = tokenizer.decode(data.val.tolist())
    assert "number 9 " in val_text and "number 19 " in val_text
    assert "number 8 " not in val_text
    assert "number 9 " not in tokenizer.decode(data.train.tolist())
    with pytest.raises(ValueError, match="val_fraction"):
        TokenDataset.from_text(text, tokenizer, val_fraction=1.5)
    with pytest.raises(ValueError, match="split"):
        data.batch("test", 2, 4)


def test_random_batch_targets_are_inputs_shifted_by_one():
    tokens = torch.arange(100)
    x, y = random_batch(tokens, 8, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 10)
    assert torch.equal(y, x + 1)
    x2, _ = random_batch(tokens, 8, 10, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="too few"):
        random_batch(torch.arange(5), 2, 10)
    with pytest.raises(ValueError, match="1-D"):
        random_batch(torch.zeros(2, 50, dtype=torch.long), 2, 4)


def test_byte_tokens():
    assert byte_tokens("猫").tolist() == list("猫".encode())
