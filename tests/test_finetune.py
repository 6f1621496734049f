"""SFT, the reward model and DPO: their data in Meta's chat format, their losses at the
start, resume, saving and loading, and the commands' conventions (on a one-layer model)."""

import json
import shutil

import pytest
import sentencepiece as spm
import torch

from llama_edu import finetune as ft
from llama_edu.align import IGNORE
from llama_edu.checkpoint import COURSE_MODEL, load_model, save_model
from llama_edu.cli import main
from llama_edu.instructions import make_examples
from llama_edu.model import Llama, LlamaConfig
from llama_edu.reward import RewardModel, load_reward_model, save_reward_model, score
from llama_edu.tokenizer import load_tokenizer

TOKENIZER = COURSE_MODEL / "tokenizer.model"
QUICK = ["--steps", "2", "--batch-size", "2", "--examples", "8", "--heldout", "4",
         "--warmup", "1", "--quiet", "--threads", "1"]


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TOKENIZER)


def one_layer() -> Llama:
    torch.manual_seed(0)
    return Llama(LlamaConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=4096,
                             max_seq_len=256))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "base"
    return save_model(one_layer(), path, tokenizer_model=TOKENIZER)


def test_an_exchange_is_metas_finished_exchange_with_the_prompt_masked(tokenizer):
    processor = spm.SentencePieceProcessor(model_file=str(TOKENIZER))
    for e in make_examples(40, "train"):
        ids, labels = ft.encode_example(tokenizer, e, e.chosen)
        user = e.user if e.system is None else f"<<SYS>>\n{e.system}\n<</SYS>>\n\n{e.user}"
        text = f"[INST] {user.strip()} [/INST] {e.chosen.strip()} "
        assert ids == [processor.bos_id()] + processor.encode(text) + [processor.eos_id()]
        answer = [t for t in labels if t != IGNORE]
        assert answer == ids[len(ids) - len(answer):] and answer[-1] == processor.eos_id()
        assert labels[:len(ids) - len(answer)] == [IGNORE] * (len(ids) - len(answer))


def test_pairs_put_chosen_rows_first_and_pad_with_ignored_labels(tokenizer):
    examples = make_examples(3, "train")
    ids, labels = ft.pair_batch(tokenizer, examples)
    assert ids.shape[0] == 6
    lengths = ft._lengths(tokenizer, examples)
    for row, e in enumerate(examples + examples):
        answer = e.chosen if row < 3 else e.rejected
        expected, _ = ft.encode_example(tokenizer, e, answer)
        assert ids[row, :lengths[row]].tolist() == expected
        assert (labels[row, lengths[row]:] == IGNORE).all()


def test_the_reward_is_read_at_the_last_real_token_whatever_the_padding(tokenizer):
    model = RewardModel(one_layer()).eval()
    examples = make_examples(4, "train")
    together = score(model, tokenizer, examples, [e.chosen for e in examples])
    alone = torch.cat([score(model, tokenizer, [e], [e.chosen]) for e in examples])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_dpo_starts_at_log_2_when_the_policy_is_the_reference(tokenizer):
    from llama_edu.align import dpo_loss, sequence_logprobs

    policy, reference = one_layer(), one_layer()
    ids, labels = ft.pair_batch(tokenizer, make_examples(4, "train"))
    p, r = sequence_logprobs(policy(ids), labels), sequence_logprobs(reference(ids), labels)
    loss = dpo_loss(p[:4], p[4:], r[:4], r[4:], beta=0.1)
    torch.testing.assert_close(loss, torch.log(torch.tensor(2.0)))


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, tokenizer):
    config = ft.TuneConfig(steps=4, batch_size=2, examples=8, heldout=2, warmup=1,
                           save_every=2)
    straight = one_layer()
    ft.run_sft(straight, tokenizer, config, tmp_path / "straight", progress=False)

    calls = {"n": 0}
    original = ft.masked_lm_loss

    def stop_at_step_3(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args)

    ft.masked_lm_loss = stop_at_step_3
    try:
        with pytest.raises(KeyboardInterrupt):
            ft.run_sft(one_layer(), tokenizer, config, tmp_path / "cut", progress=False)
    finally:
        ft.masked_lm_loss = original
    assert json.loads((tmp_path / "cut" / "trainer_state.json").read_text("utf-8"))["step"] == 2
    resumed = one_layer()
    ft.run_sft(resumed, tokenizer, config, tmp_path / "cut", resume=True, progress=False)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sft_reward_and_dpo_commands(tmp_path, base_dir, capsys):
    sft, rm, dpo = tmp_path / "sft", tmp_path / "rm", tmp_path / "dpo"
    assert main(["sft", "--from", str(base_dir), "--out", str(sft)] + QUICK) == 0
    assert "exact_match" in capsys.readouterr().out
    state = json.loads((sft / "trainer_state.json").read_text("utf-8"))
    assert state["kind"] == "sft" and state["step"] == 2 and state["command"].startswith(
        "python -m llama_edu sft")
    assert main(["reward", "--from", str(sft), "--out", str(rm)] + QUICK) == 0
    assert "accuracy" in capsys.readouterr().out
    loaded = load_reward_model(rm)
    assert loaded.backbone.config == load_model(sft).config
    assert main(["dpo", "--from", str(sft), "--out", str(dpo)] + QUICK) == 0
    assert "implicit_reward_accuracy" in capsys.readouterr().out
    # refusing to overwrite, resuming with other settings, --out onto --from
    assert main(["dpo", "--from", str(sft), "--out", str(dpo)] + QUICK) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["dpo", "--out", str(dpo), "--resume", "--steps", "3"]) == 2
    assert "--steps differ" in capsys.readouterr().err
    assert main(["sft", "--out", str(sft), "--resume", "--quiet"]) == 0   # already done
    assert main(["sft", "--from", str(sft), "--out", str(sft), "--overwrite"] + QUICK) == 2
    assert "must differ" in capsys.readouterr().err
    assert main(["reward", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_lora_trains_only_the_adapters_and_saves_a_plain_merged_model(tmp_path, base_dir,
                                                                      tokenizer):
    config = ft.TuneConfig(steps=2, batch_size=2, examples=8, heldout=2, lora=True, lora_r=4)
    model = load_model(base_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ft.run_sft(model, tokenizer, config, tmp_path / "lora", progress=False,
               tokenizer_model=TOKENIZER)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    saved = load_model(tmp_path / "lora")
    assert set(saved.state_dict()) == set(before)
    changed = {k for k in before if not torch.equal(before[k], saved.state_dict()[k])}
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)


def test_reward_model_round_trips(tmp_path, tokenizer):
    model = RewardModel(one_layer()).eval()
    with torch.no_grad():
        model.head.bias.fill_(0.5)
    save_reward_model(model, tmp_path / "rm", tokenizer_model=TOKENIZER)
    again = load_reward_model(tmp_path / "rm")
    examples = make_examples(3, "heldout")
    answers = [e.rejected for e in examples]
    torch.testing.assert_close(score(model, tokenizer, examples, answers),
                               score(again, tokenizer, examples, answers))
    shutil.rmtree(tmp_path / "rm" / "reward_head.safetensors", ignore_errors=True)
    (tmp_path / "rm" / "reward_head.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="python -m llama_edu reward"):
        load_reward_model(tmp_path / "rm")


def test_the_shipped_sft_model_follows_the_requested_form(tokenizer):
    """assets/tiny-sft answers held-out prompts in the form asked for, and mostly with the
    right content (README's "Chat model" has the 200-prompt figures); the base model does
    neither."""
    from llama_edu.checkpoint import ASSETS

    heldout = make_examples(16, "heldout")
    base = load_model(COURSE_MODEL)
    assert ft.form_match(base, tokenizer, heldout) <= 0.25
    sft = load_model(ASSETS / "tiny-sft", dtype="fp32")      # (tiny-chat: 91.0% on 200)
    assert ft.form_match(sft, tokenizer, heldout) >= 0.75
    # ... and mostly the content (63.5% exact on 200; the base model 0%)
    assert ft.exact_match(sft, tokenizer, heldout) >= 0.4 > ft.exact_match(base, tokenizer, heldout)


def test_the_shipped_assets_stay_under_20_mb():
    from llama_edu.checkpoint import ASSETS

    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total < 20_000_000, f"assets/ holds {total:,} bytes"
