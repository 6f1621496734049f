"""Corpora, datasets and batches."""

import pytest
import torch

from llama_edu.checkpoint import COURSE_TOKENIZER
from llama_edu.data import (
    TokenDataset,
    byte_tokens,
    cjk_share,
    course_text,
    encode_text,
    held_out_stories,
    load_corpus,
    pydoc_text,
    random_batch,
    read_text_file,
)
from llama_edu.stories import story_text
from llama_edu.stories_zh import story_text_zh
from llama_edu.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(COURSE_TOKENIZER)


def test_course_text_joins_pydoc_and_both_languages_stories():
    text = course_text(n_stories=10, n_stories_zh=5)
    assert text.startswith(pydoc_text())
    stories = set(text[len(pydoc_text()) + 2:].split("\n\n"))
    assert stories == set(story_text(10).split("\n\n")) | set(story_text_zh(5).split("\n\n"))
    assert course_text(n_stories=10, n_stories_zh=5) == text          # seeded
    with pytest.raises(ValueError, match="n_stories"):
        story_text(0)
    with pytest.raises(ValueError, match="n_stories"):
        story_text_zh(0)


def test_the_course_corpus_is_about_a_third_chinese():
    share = cjk_share(course_text())
    assert 0.30 <= share <= 0.40, share


def test_held_out_stories_share_no_story_with_training():
    training = set(course_text().split("\n\n"))
    for language in ("en", "zh"):
        held = held_out_stories(language, 200).split("\n\n")
        assert len(held) == 200 and not training & set(held)
    assert cjk_share(held_out_stories("zh")) > 0.8 and cjk_share(held_out_stories("en")) < 0.01
    with pytest.raises(ValueError, match="'en' or 'zh'"):
        held_out_stories("fr")


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
