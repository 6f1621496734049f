"""The Llama 2 training recipe, checkpoints, exact resume and data parallelism."""

import json
import math
import warnings

import pytest
import torch

from llama_edu.checkpoint import load_course_model, load_model
from llama_edu.data import TokenDataset
from llama_edu.model import Llama, LlamaConfig
from llama_edu.train import (
    TrainConfig,
    evaluate,
    lr_at,
    make_optimizer,
    param_groups,
    quick_train,
    train,
    train_step,
)

SMALL = dict(batch_size=4, seq_len=16, lr=1e-2, warmup=2, eval_every=3, eval_batches=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def micro_model(seed: int = 0, **overrides) -> Llama:
    torch.manual_seed(seed)
    return Llama(LlamaConfig.from_preset("micro", **overrides))


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(0)
    # a learnable stream: repeated random phrases of 8 tokens
    phrases = torch.randint(3, 256, (20, 8), generator=generator)
    order = torch.randint(0, 20, (300,), generator=generator)
    stream = phrases[order].flatten()
    return TokenDataset(stream[:2200], stream[2200:])


def test_schedule_matches_torch_warmup_then_cosine():
    peak, warmup, total = 3e-3, 10, 100
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=peak)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [
            torch.optim.lr_scheduler.LinearLR(optimizer, 1 / warmup, 1.0, warmup - 1),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total - warmup, 0.1 * peak)],
            milestones=[warmup])
        for step in range(total):
            assert lr_at(step, peak, warmup, total) == pytest.approx(
                optimizer.param_groups[0]["lr"], rel=1e-6), step
            optimizer.step()
            scheduler.step()


def test_schedule_shape():
    lrs = [lr_at(s, 1.0, 5, 50) for s in range(60)]
    assert lrs[0] == pytest.approx(0.2) and lrs[4] == pytest.approx(1.0)
    assert lrs[5] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:], strict=False))     # never rises again
    assert lrs[50] == pytest.approx(0.1) and lrs[59] == pytest.approx(0.1)  # 10% of the peak
    middle = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 22 / 45))       # step 27: 22 of 45
    assert lr_at(27, 1.0, 5, 50) == pytest.approx(middle)
    assert lr_at(0, 1.0, 0, 10) == pytest.approx(1.0)                       # no warmup


def test_weight_decay_goes_to_matrices_only():
    model = micro_model()
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() == 2 for p in decay["params"])
    assert {names[id(p)].split(".")[-2] for p in no_decay["params"]} == {
        "input_layernorm", "post_attention_layernorm", "norm"}
    assert "embed_tokens.weight" in {names[id(p)] for p in decay["params"]}
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == sum(
        p.numel() for p in model.parameters())
    tied = micro_model(tie_word_embeddings=True)
    count = sum(len(g["params"]) for g in param_groups(tied))
    assert count == len(list(tied.parameters()))             # the shared matrix once


def test_optimizer_has_llama2_hyperparameters():
    optimizer = make_optimizer(micro_model(), TrainConfig())
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.95) and group["eps"] == 1e-5
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert isinstance(optimizer, torch.optim.AdamW)


def test_config_errors():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="clip"):
        TrainConfig(clip=-1.0)
    with pytest.raises(ValueError, match="max_seq_len"):
        train(micro_model(), TokenDataset(torch.arange(500) % 256, torch.arange(100)),
              TrainConfig(steps=1, seq_len=500), progress=False)


def test_training_lowers_the_loss_and_records_history(data):
    model = micro_model()
    config = TrainConfig(steps=30, **SMALL)
    before = evaluate(model, data, config, torch.device("cpu"))
    history = train(model, data, config, progress=False)
    assert history.val_step == [3 * i for i in range(1, 11)]
    assert history.val_loss[-1] < before - 1.0
    assert len(history.loss) == len(history.lr) == len(history.grad_norm) == 30
    assert history.lr[1] == pytest.approx(1e-2) and history.lr[-1] < 2e-3
    assert history.tokens == 30 * 4 * 16


def test_checkpoint_files_are_a_model_directory_plus_training_state(tmp_path, data):
    model = micro_model()
    train(model, data, TrainConfig(steps=2, **SMALL), out=tmp_path, progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["config.json", "llama_edu.json", "model.safetensors",
                     "trainer_state.json", "training_state.pt"]  # no temporary files left
    raw = (tmp_path / "model.safetensors").read_bytes()
    header = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8:8 + header])["__metadata__"]["step"] == "2"
    assert torch.load(tmp_path / "training_state.pt", weights_only=True)["step"] == 2
    state = json.loads((tmp_path / "trainer_state.json").read_text("utf-8"))
    assert state["step"] == 2 and state["resumable"]
    loaded = load_model(tmp_path)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


def test_resume_gives_the_same_run_as_never_stopping(tmp_path, data, monkeypatch):
    import llama_edu.train as T

    config = TrainConfig(steps=8, save_every=5, **SMALL)
    whole = micro_model()
    unbroken = train(whole, data, config, progress=False)

    class Killed(Exception):
        pass

    save = T.save_checkpoint

    def save_then_die(*args, **kwargs):      # the process dies right after the step-5 save
        save(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(T, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train(micro_model(), data, config, out=tmp_path, progress=False)
    monkeypatch.setattr(T, "save_checkpoint", save)
    assert json.loads((tmp_path / "trainer_state.json").read_text("utf-8"))["step"] == 5

    resumed_model = micro_model(seed=123)     # another start: resuming overwrites it all
    resumed = train(resumed_model, data, config, out=tmp_path, resume=True, progress=False)
    assert resumed.loss == unbroken.loss      # the same batches and updates, exactly
    assert resumed.val_loss == unbroken.val_loss
    for a, b in zip(whole.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resume_refuses_other_settings_and_weights_only(tmp_path, data):
    config = TrainConfig(steps=2, **SMALL)
    train(micro_model(), data, config, out=tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match=r"differ from the checkpoint: \['lr'\]"):
        train(micro_model(), data, TrainConfig(steps=2, **{**SMALL, "lr": 1.0}),
              out=tmp_path / "a", resume=True, progress=False)
    train(micro_model(), data, config, out=tmp_path / "b", progress=False,
          save_optimizer=False)
    with pytest.raises(ValueError, match="cannot be resumed"):
        train(micro_model(), data, config, out=tmp_path / "b", resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        train(micro_model(), data, config, out=tmp_path / "none", resume=True, progress=False)


def test_a_half_written_checkpoint_is_detected(tmp_path, data):
    config = TrainConfig(steps=2, **SMALL)
    train(micro_model(), data, config, out=tmp_path, progress=False)
    state = json.loads((tmp_path / "trainer_state.json").read_text("utf-8"))
    state["step"] = 3                                      # as if only the JSON got newer
    (tmp_path / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")
    with pytest.raises(ValueError, match="inconsistent"):
        train(micro_model(), data, TrainConfig(steps=4, **SMALL), out=tmp_path, resume=True,
              progress=False)


def test_an_existing_run_is_never_overwritten_silently(tmp_path, data):
    config = TrainConfig(steps=2, **SMALL)
    first = micro_model()
    train(first, data, config, out=tmp_path, progress=False)
    before = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="resume=True to continue it or overwrite=True"):
        train(micro_model(seed=1), data, config, out=tmp_path, progress=False)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    second = micro_model(seed=1)
    train(second, data, config, out=tmp_path, overwrite=True, progress=False,
          save_optimizer=False)
    assert not (tmp_path / "training_state.pt").exists()   # the old run's state is gone
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"
    loaded = load_model(tmp_path)
    for a, b in zip(second.parameters(), loaded.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="contradict"):
        train(micro_model(), data, config, out=tmp_path, resume=True, overwrite=True,
              progress=False)
    (tmp_path / "tokenizer.model").write_bytes(b"a run's own tokenizer")
    with pytest.raises(ValueError, match="that overwriting would delete"):
        train(micro_model(), data, config, out=tmp_path, overwrite=True, progress=False,
              tokenizer_model=tmp_path / "tokenizer.model")
    assert (tmp_path / "tokenizer.model").read_bytes() == b"a run's own tokenizer"


def test_train_step_is_one_adamw_update_on_the_clipped_gradient():
    model, twin = micro_model(), micro_model()
    config = TrainConfig(lr=1e-2, clip=0.5)
    optimizer, reference = make_optimizer(model, config), make_optimizer(twin, config)
    x = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
    y = torch.roll(x, -1, dims=1)
    loss, grad_norm = train_step(model, optimizer, x, y, lr=1e-2, clip=0.5)
    logits = twin(x)                                       # the same step written out
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
    expected.backward()
    norm = torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
    reference.step()
    assert torch.equal(loss, expected.detach()) and grad_norm == float(norm) > 0.5
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def _ddp_worker(rank, world_size, steps):
    generator = torch.Generator().manual_seed(0)
    phrases = torch.randint(3, 256, (20, 8), generator=generator)
    stream = phrases[torch.randint(0, 20, (300,), generator=generator)].flatten()
    data = TokenDataset(stream[:2200], stream[2200:])
    model = micro_model()
    history = train(model, data, TrainConfig(steps=steps, **SMALL), progress=False)
    return model.state_dict(), history.loss


def test_data_parallel_equals_one_process_on_the_global_batch(data):
    from llama_edu.parallel import launch

    steps = 3
    results = launch(_ddp_worker, 2, steps, backend="gloo")
    single = micro_model()
    history = train(single, data, TrainConfig(steps=steps, **SMALL), progress=False)
    for state, losses in results:
        assert losses == pytest.approx(history.loss, rel=1e-5)
        for name, value in single.state_dict().items():
            # gradients summed in another order differ in the last bits; Adam divides by
            # sqrt(v) + eps, which can enlarge that for tiny gradients up to ~1e-5
            assert torch.allclose(state[name], value, atol=2e-5), name


def test_quick_train_still_serves_the_early_lessons():
    losses = quick_train(micro_model(), torch.arange(2000) % 50, steps=20, batch_size=4,
                         seq_len=16, lr=1e-2)
    assert len(losses) == 20 and losses[-1] < losses[0]


def test_a_diverged_loss_stops_the_run_with_advice():
    from llama_edu.train import History

    history = History()
    history.record(1, 5.5, 1e-3, 0.7, 64)
    with pytest.raises(FloatingPointError, match="loss became nan at step 2; lower --lr"):
        history.record(2, float("nan"), 1e-3, 0.7, 64)
    assert (history.step, history.loss, history.tokens) == ([1], [5.5], 64)


def test_clip_zero_means_no_clipping():
    assert TrainConfig(clip=0).clip is None and TrainConfig(clip=0.0) == TrainConfig(clip=None)


def test_course_model_loads_and_predicts_the_course_text():
    model, tokenizer = load_course_model()
    assert model.config.vocab_size == tokenizer.vocab_size == 4096
    ids = torch.tensor([tokenizer.encode("Once upon a time, in a village by a slow river, "
                                         "there lived a curious fox named Mira.", bos=True)])
    with torch.no_grad():
        logits = model(ids)
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]).item()
    assert loss < 1.5            # chance is ln 4096 = 8.3 nats; the shipped model gets ~0.8


def test_the_shipped_model_knows_both_languages_on_stories_it_never_saw():
    """Held-out stories (another seed): far below chance (ln 4096 = 8.3 nats per token) in
    both languages, and Chinese continuations that are valid UTF-8 and stay Chinese."""
    from llama_edu.data import held_out_stories
    from llama_edu.evaluation import chinese_continuations, text_loss

    model, tokenizer = load_course_model()
    english = text_loss(model, tokenizer, held_out_stories("en", 60))
    chinese = text_loss(model, tokenizer, held_out_stories("zh", 60))
    assert english < 1.5 and chinese < 3.0, (english, chinese)   # shipped: 0.94 and 2.30
    report = chinese_continuations(model, tokenizer, n=30)
    assert report["valid_utf8"] >= 27 and report["chinese_first_sentence"] >= 27, report


def test_shift_tokens_and_the_loss_skip_padding():
    from llama_edu.train import IGNORE, lm_loss, shift_tokens

    tokens = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 9]])
    inputs, targets = shift_tokens(tokens, pad_id=0)
    assert torch.equal(inputs, tokens[:, :-1])
    assert targets.tolist() == [[6, 7, IGNORE, IGNORE], [2, 3, 4, 9]]
    logits = torch.randn(2, 4, 10, generator=torch.Generator().manual_seed(0))
    real = targets != IGNORE
    expected = torch.nn.functional.cross_entropy(logits[real], targets[real])
    torch.testing.assert_close(lm_loss(logits, targets), expected)   # mean over real targets


def test_tied_weights_appear_once_without_any_deduplication():
    """model.parameters() already skips a shared tensor; AdamW refuses one in two groups."""
    tied = micro_model(tie_word_embeddings=True)
    every_name = list(tied.named_parameters(remove_duplicate=False))
    assert len(list(tied.parameters())) == len(every_name) - 1
    groups = param_groups(tied)
    assert sum(len(g["params"]) for g in groups) == len(list(tied.parameters()))
    torch.optim.AdamW(groups)
    with pytest.raises(ValueError, match="more than one parameter group"):
        torch.optim.AdamW([{"params": [tied.embed_tokens.weight]},
                           {"params": [tied.lm_head.weight]}])


def test_evaluators_are_recorded_at_every_validation(data):
    calls = []

    def probe(model):
        calls.append((model.training, torch.is_grad_enabled()))
        return 1.5

    history = train(micro_model(), data, TrainConfig(steps=6, **SMALL), progress=False,
                    evaluators={"probe": probe})
    assert history.val_by == {"probe": [1.5, 1.5]} and history.val_step == [3, 6]
    assert calls == [(False, False)] * 2                  # in eval mode, without gradients


def test_the_exercise_step_written_right_is_train_step():
    """The check's own correct step (used to name mistakes) equals llama_edu.train's."""
    from llama_edu.exercises.train import _reference_step, _step, _step_cases, _trajectory
    from llama_edu.numerics import tolerance

    for _, *case in _step_cases():
        ours = _trajectory(lambda m, o, s, _, c=case: _step(m, o, s, *c), 7)
        ref = _trajectory(lambda m, o, s, _, c=case: _reference_step(m, o, s, *c), 7)
        tol = tolerance(torch.float32, reduction=256, depth=22)
        assert ours[0] == pytest.approx(ref[0], rel=tol["rtol"])
        for a, b in zip(ours[1], ref[1], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=tol["rtol"])


def test_schedule_explorer_redraws_for_its_first_control():
    from llama_edu.widgets.train import schedule_explorer

    explorer = schedule_explorer()
    before = explorer._png
    explorer.controls["warmup"].value = 300
    assert explorer.redraws == 2 and explorer._png != before
