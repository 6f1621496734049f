"""The one checkpoint format: transformers loads it as it is, round trips, damaged files."""

import json
import math
import random
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llama_edu import checkpoint
from llama_edu.checkpoint import (
    COURSE_MODEL,
    load_checkpoint,
    load_course_model,
    load_model,
    save_checkpoint,
    save_model,
)
from llama_edu.data import course_text
from llama_edu.files import DamagedFileError
from llama_edu.model import Llama, LlamaConfig
from llama_edu.tokenizer import load_tokenizer
from llama_edu.train import TrainConfig, make_optimizer

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

pytestmark = pytest.mark.usefixtures("one_thread")

VARIED = [
    "Once upon a time, in a village by a slow river, there lived a curious fox named Mira.",
    "In 2023, 3 foxes found 1234567 keys; 0.5 + 12 = 12.5",
    "小猫和兔子找到了钥匙。从那以后，他们每天都在一起玩。",
    "byte fallback: 🦙 齉 ☃ 𝔘 Ωmega ñ é ß Ж كلمة עברית",
    " a leading space", "trailing space ", "   three spaces", " ", "", "\n", "\t",
    "def f(x):\n    return x ** 2  # two  spaces\n\n\nend",
    "<s> typed </s> as text <unk> <0x41>", "▁ a literal ▁▁ metaspace",
    "ＡＢＣ ﬁ and e\u0301 (no normalisation)", "\u3000全角空格\u00a0nbsp\r\n",
]


def micro(seed=0, **overrides) -> Llama:
    torch.manual_seed(seed)
    model = Llama(LlamaConfig.from_preset("micro", **overrides)).eval()
    with torch.no_grad():                          # gains away from 1, so a lost one shows
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    return model


def logits(model, ids):
    with torch.no_grad():
        return model(ids)


@pytest.fixture(scope="module")
def course():
    return load_course_model()


# ---------------------------------------------------------------------------------------
# transformers loads the shipped model directory as it is


def test_the_shipped_directory_holds_the_one_format():
    names = sorted(p.name for p in COURSE_MODEL.iterdir())
    assert names == ["config.json", "llama_edu.json", "model.safetensors", "tokenizer.json",
                     "tokenizer.model", "tokenizer_config.json", "trainer_state.json"]
    course = json.loads((COURSE_MODEL / "llama_edu.json").read_text(encoding="utf-8"))
    assert course["loads_in_transformers"] and course["step"] == 1000
    assert course["config"] == LlamaConfig.from_preset("tiny").to_dict()


def test_transformers_gives_the_course_models_logits(course):
    model, tokenizer = course
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(COURSE_MODEL).eval()
    assert type(hf_model).__name__ == "LlamaForCausalLM" and hf_model.dtype == torch.float32
    config = model.config
    text = course_text(n_stories=20).split("\n\n")[-1]
    ids = torch.tensor([tokenizer.encode(text, bos=True)[:config.max_seq_len]])
    noise = torch.randint(0, config.vocab_size, (2, config.max_seq_len),
                          generator=torch.Generator().manual_seed(0))
    for tokens in (ids, noise):
        ours, theirs = logits(model, tokens), hf_model(tokens).logits.detach()
        # Both are the same fp32 network; they may differ only in the order of roundings.
        # A dot product of length k carries about sqrt(k) * eps relative error, each of
        # the n_layers blocks (and the head) adds its own, and the residual stream keeps
        # them, so we allow (n_layers + 1) * sqrt(k) * eps of the logits' own scale.
        k = max(config.dim, config.ffn_hidden_dim)
        bound = ((config.n_layers + 1) * math.sqrt(k) * torch.finfo(torch.float32).eps
                 * ours.abs().max().item())
        torch.testing.assert_close(theirs, ours, rtol=0, atol=bound)


@pytest.fixture(scope="module")
def hf_tokenizer():
    return transformers.AutoTokenizer.from_pretrained(COURSE_MODEL)


def test_auto_tokenizer_gives_the_course_tokenizers_ids(course, hf_tokenizer):
    _, tokenizer = course
    paragraphs = [p for p in course_text().split("\n\n") if p.strip()]
    for text in VARIED + paragraphs[::5]:
        ids = tokenizer.encode(text)
        assert hf_tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] == ids
        assert hf_tokenizer.decode(ids) == tokenizer.decode(ids), repr(text)
    assert hf_tokenizer("Year 2024")["input_ids"] == tokenizer.encode("Year 2024", bos=True)
    assert (hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id) == (1, 2)
    assert len(hf_tokenizer) == tokenizer.vocab_size


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_auto_tokenizer_agrees_on_any_text(course, hf_tokenizer, text):
    _, tokenizer = course
    assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == tokenizer.encode(text)


# ---------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("tied", [False, True])
def test_save_load_round_trip_is_exact_and_keeps_tying(tmp_path, tied):
    model = micro(tie_word_embeddings=tied, ffn_dim_multiplier=1.3)
    save_model(model, tmp_path, step=7)
    back = load_model(tmp_path)
    assert back.config == model.config
    assert (back.lm_head.weight is back.embed_tokens.weight) == tied
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    ids = torch.randint(0, 256, (2, 9))
    assert torch.equal(logits(back, ids), logits(model, ids))
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert hf_model.config.tie_word_embeddings == tied
    hf_logits = hf_model(ids).logits.detach()
    torch.testing.assert_close(hf_logits, logits(model, ids))   # fp32 defaults: 2 layers


@pytest.mark.parametrize("switch", [{"pos_encoding": "alibi"}, {"norm_type": "layernorm"},
                                    {"norm_placement": "post"}, {"ffn_type": "gelu"},
                                    {"pos_encoding": "sinusoidal"}])
def test_lesson_variants_save_without_config_json_and_load_with_llama_edu(tmp_path, switch):
    model = micro(**switch)
    save_model(model, tmp_path)
    assert not (tmp_path / "config.json").exists()      # transformers must not take it
    values = json.loads((tmp_path / "llama_edu.json").read_text(encoding="utf-8"))
    assert values["loads_in_transformers"] is False
    back = load_model(tmp_path)
    assert back.config == model.config
    ids = torch.randint(0, 256, (1, 12))
    assert torch.equal(logits(back, ids), logits(model, ids))
    with pytest.raises((OSError, ValueError), match="config.json"):   # transformers refuses
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    from llama_edu.interop import load_hf

    with pytest.raises(FileNotFoundError, match="llama_edu.checkpoint.load_model"):
        load_hf(tmp_path)


def _trained_step(model, optimizer, generator):
    x = torch.randint(0, 256, (2, 8), generator=generator)
    loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.roll(-1, 1).flatten())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize("tied", [False, True])
def test_training_state_round_trips_exactly(tmp_path, tied):
    model = micro(tie_word_embeddings=tied).train()
    optimizer, generator = make_optimizer(model, TrainConfig()), torch.Generator()
    generator.manual_seed(3)
    for _ in range(2):
        _trained_step(model, optimizer, generator)
    save_checkpoint(tmp_path, model, optimizer, {"step": 2, "history": {}}, generator)
    expected_next = torch.randint(0, 1000, (5,), generator=generator)

    other = micro(seed=9, tie_word_embeddings=tied)
    other_optimizer, other_generator = make_optimizer(other, TrainConfig()), torch.Generator()
    state = load_checkpoint(tmp_path, other, other_optimizer, other_generator)
    assert state == {"step": 2, "history": {}, "resumable": True}
    assert torch.equal(torch.randint(0, 1000, (5,), generator=other_generator), expected_next)
    saved, loaded = optimizer.state_dict(), other_optimizer.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for index, entry in saved["state"].items():
        for key, value in entry.items():
            assert torch.equal(value, loaded["state"][index][key]), (index, key)
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)


def test_weights_only_checkpoint_cannot_be_resumed(tmp_path):
    model = micro()
    optimizer, generator = make_optimizer(model, TrainConfig()), torch.Generator()
    save_checkpoint(tmp_path, model, optimizer, {"step": 1}, generator, save_optimizer=False)
    assert not (tmp_path / "training_state.pt").exists()
    with pytest.raises(ValueError, match="weights only"):
        load_checkpoint(tmp_path, micro(), optimizer, generator)
    assert torch.equal(load_model(tmp_path).lm_head.weight, model.lm_head.weight)


class Trap:
    """Unpickling this would run `_sprung` (what a malicious checkpoint would do)."""

    def __reduce__(self):
        return (_sprung, ())


SPRUNG = []


def _sprung():
    SPRUNG.append(True)
    return "code ran"


def test_loading_never_unpickles_code(tmp_path):
    model = micro()
    optimizer, generator = make_optimizer(model, TrainConfig()), torch.Generator()
    save_checkpoint(tmp_path, model, optimizer, {"step": 1}, generator)
    training = torch.load(tmp_path / "training_state.pt", weights_only=True)
    torch.save({**training, "rng": Trap()}, tmp_path / "training_state.pt")
    with pytest.raises(DamagedFileError, match=r"training_state.pt' holds a Python object "
                                               r"\(.*_sprung\).*weights_only=True"):
        load_checkpoint(tmp_path, micro(), optimizer, generator)
    assert not SPRUNG


def test_missing_files_say_what_a_model_directory_needs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model directory"):
        load_model(tmp_path / "missing")
    save_model(micro(), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="expected model.safetensors"):
        load_model(tmp_path / "m")
    for name in ("config.json", "llama_edu.json"):
        (tmp_path / "m" / name).unlink()
    with pytest.raises(FileNotFoundError, match="neither config.json nor llama_edu.json"):
        load_model(tmp_path / "m")


def test_config_json_and_llama_edu_json_must_agree(tmp_path):
    save_model(micro(), tmp_path)
    values = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    (tmp_path / "config.json").write_text(json.dumps({**values, "rms_norm_eps": 1e-6}))
    with pytest.raises(ValueError, match=r"describe different models .*rms_norm_eps"):
        load_model(tmp_path)


def test_an_old_style_config_is_named(tmp_path):
    save_model(micro(), tmp_path)
    (tmp_path / "llama_edu.json").unlink()
    (tmp_path / "config.json").write_text(json.dumps(micro().config.to_dict()))
    with pytest.raises(DamagedFileError, match="older llama_edu"):
        load_model(tmp_path)


# ---------------------------------------------------------------------------------------
# damaged files end in one line that names the file and the fault

GARBAGE = random.Random(0).randbytes(4000)


def _damage(path, how):
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:len(data) // 2], "garbage": GARBAGE, "empty": b"",
                      "wrong json": b'{"hello": "world"}'}[how])


WHAT = {  # file -> the words each kind of damage must produce
    "model.safetensors": {"truncated": "is truncated", "garbage": "not a safetensors file",
                          "empty": "is empty", "wrong json": "not a safetensors file"},
    "config.json": {"truncated": "is not valid JSON", "garbage": "is not UTF-8",
                    "empty": "is empty", "wrong json": "lacks the field 'hidden_size'"},
    "llama_edu.json": {"truncated": "is not valid JSON", "garbage": "is not UTF-8",
                       "empty": "is empty", "wrong json": "has no 'config' object"},
    "tokenizer.model": {"truncated": "not a readable SentencePiece model",
                        "garbage": "not a readable SentencePiece model", "empty": "is empty",
                        "wrong json": "not a readable SentencePiece model"},
}
CASES = [(name, how) for name in WHAT for how in WHAT[name]]


@pytest.fixture
def course_copy(tmp_path, monkeypatch):
    copy = tmp_path / "tiny"
    shutil.copytree(COURSE_MODEL, copy)
    monkeypatch.setattr(checkpoint, "COURSE_MODEL", copy)
    return copy


@pytest.mark.parametrize("name, how", CASES)
def test_a_damaged_file_is_named_by_every_loader(course_copy, name, how, capsys):
    from llama_edu.cli import main
    from llama_edu.interop import load_hf

    _damage(course_copy / name, how)
    expected = f"'{course_copy / name}'"
    loaders = [load_course_model]
    if name != "tokenizer.model":
        loaders += [lambda: load_model(course_copy), lambda: load_hf(course_copy)]
    for load in loaders:
        with pytest.raises((ValueError, OSError)) as error:
            load()
        assert expected in str(error.value) and WHAT[name][how] in str(error.value)
    code = main(["generate", "--checkpoint", str(course_copy), "--prompt", "hi"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert expected in err and WHAT[name][how] in err


def test_the_command_prints_one_line_for_a_damaged_file(course_copy):
    import os
    import subprocess
    import sys

    _damage(course_copy / "model.safetensors", "garbage")
    result = subprocess.run(
        [sys.executable, "-m", "llama_edu", "generate", "--checkpoint", str(course_copy),
         "--prompt", "hi"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "model.safetensors' is not a safetensors file" in result.stderr


@pytest.mark.parametrize("how, words", [("truncated", "or is truncated"),
                                        ("garbage", "is not a Meta checkpoint shard"),
                                        ("empty", "is empty")])
def test_a_damaged_meta_checkpoint_is_named(tmp_path, how, words):
    from llama_edu.interop import load_meta, save_meta

    save_meta(micro(), tmp_path)
    _damage(tmp_path / "consolidated.00.pth", how)
    with pytest.raises(DamagedFileError, match=words) as error:
        load_meta(tmp_path)
    assert "consolidated.00.pth'" in str(error.value)
    save_meta(micro(), tmp_path)
    _damage(tmp_path / "params.json", how)
    with pytest.raises(DamagedFileError, match=r"params.json' is (empty|not valid JSON|not "
                                               r"UTF-8)"):
        load_meta(tmp_path)


def test_the_tokenizer_files_are_written_with_every_checkpoint(tmp_path, course):
    _, tokenizer = course
    model = micro(vocab_size=tokenizer.vocab_size)
    save_model(model, tmp_path, tokenizer_model=COURSE_MODEL / "tokenizer.model")
    values = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert (values["bos_token_id"], values["eos_token_id"]) == (1, 2)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf_tokenizer(VARIED[2])["input_ids"] == tokenizer.encode(VARIED[2], bos=True)
    assert load_tokenizer(tmp_path / "tokenizer.model").vocab_size == tokenizer.vocab_size
    with pytest.raises(ValueError, match="4096 pieces, the model 256"):
        save_model(micro(), tmp_path / "other", tokenizer_model=COURSE_MODEL / "tokenizer.model")
