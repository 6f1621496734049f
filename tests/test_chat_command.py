"""`python -m llama_edu chat`: multi-turn on encode_dialog, one user message per line when
stdin is not a terminal, /exit and the end of input end it, old turns dropped to fit."""

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llama_edu.chat import chat_session, encode_dialog, fit_dialog
from llama_edu.checkpoint import COURSE_MODEL, save_model
from llama_edu.generate import generate, text_pieces
from llama_edu.model import Llama, LlamaConfig
from llama_edu.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = COURSE_MODEL / "tokenizer.model"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TOKENIZER)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Llama(LlamaConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=4096,
                             max_seq_len=256)).eval()


def test_each_answer_is_the_greedy_continuation_of_the_whole_dialog(model, tokenizer):
    out = io.StringIO()
    dialog = chat_session(model, tokenizer, io.StringIO("What is 2 + 3?\n\n小猫在哪里？\n"), out,
                          system="Answer in one word.", max_new_tokens=6)
    assert [m["role"] for m in dialog] == ["system", "user", "assistant", "user", "assistant"]
    lines = out.getvalue().split("\n")
    assert len(lines) == 3 and lines[-1] == ""                 # one line per answer
    for turn in (2, 4):
        ids = encode_dialog(tokenizer, dialog[:turn])
        expected = generate(model, ids, 6, eos_id=tokenizer.eos_id)
        text = "".join(text_pieces(tokenizer, ids, expected))     # what the stream showed
        assert dialog[turn]["content"] == text.strip()


def test_old_exchanges_are_dropped_to_fit_and_the_system_message_stays(tokenizer):
    dialog = [{"role": "system", "content": "Be brief."}]
    for i in range(30):
        dialog += [{"role": "user", "content": f"Question {i}, rather long and wordy."},
                   {"role": "assistant", "content": f"Answer {i}."}]
    dialog.append({"role": "user", "content": "The last one?"})
    kept, ids = fit_dialog(tokenizer, dialog, 120)
    assert len(ids) <= 120 and kept[0] == dialog[0] and kept[-1] == dialog[-1]
    assert ids == encode_dialog(tokenizer, kept) and len(kept) < len(dialog)


def test_the_command_reads_one_message_per_line_and_stops_at_exit(tmp_path, model):
    checkpoint = save_model(model, tmp_path / "chat", tokenizer_model=TOKENIZER)
    result = subprocess.run(
        [sys.executable, "-m", "llama_edu", "chat", "--checkpoint", str(checkpoint),
         "--max-new-tokens", "4", "--system", "Answer in one word.", "--device", "cpu"],
        input="Who lived there?\n谁住在那里？\n/exit\nnever read\n", capture_output=True,
        text=True, encoding="utf-8", cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 2 and "\ufffd" not in result.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "llama_edu", "chat", "--checkpoint", str(tmp_path / "none")],
        input="", capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert missing.returncode == 2 and "no model directory" in missing.stderr
