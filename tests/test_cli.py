"""`python -m llama_edu train` and `generate`: help, a small run, resume, one-line errors."""

import argparse
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from llama_edu.cli import build_parser, main

SMALL = ["--preset", "micro", "--batch-size", "4", "--seq-len", "16", "--eval-every", "2",
         "--eval-batches", "1", "--warmup", "1", "--quiet", "--threads", "1"]


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    """`--threads 1` sets torch's thread count for the process: give it back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tales.txt"
    tales = [f"Tale {i}: the fox met the owl by the river, and 小猫 came too." for i in range(60)]
    path.write_text("\n\n".join(tales), encoding="utf-8")
    return path


def test_training_options_are_the_train_config_fields():
    import dataclasses

    from llama_edu.train import TrainConfig

    train_parser = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    options = {a.dest: a for a in train_parser._actions}
    for f in dataclasses.fields(TrainConfig):
        action = options[f.name]
        flag = f"--{f.name.replace('_', '-')}"
        assert action.option_strings in ([flag], [flag, f"--no-{flag[2:]}"])  # bools: both
        default = f.metadata["cli_default"] if f.metadata["cli_default"] else f.default
        assert action.help.startswith(f.metadata["help"]) and f"(default: {default})" in action.help
    args = train_parser.parse_args(["--out", "x", "--beta2", "0.99", "--clip", "0",
                                    "--seed", "-3"])
    assert (args.beta2, args.clip, args.seed, args.steps) == (0.99, 0.0, -3, None)
    from llama_edu.cli import _train_config

    assert TrainConfig().precision == "fp32"            # the function: portable fp32
    assert _train_config(args, None).precision == "auto"  # the command: the fast path
    faster = train_parser.parse_args(["--out", "x", "--precision", "fp16", "--compile"])
    assert (_train_config(faster, None).precision, faster.compile) == ("fp16", True)


def test_help_explains_every_option(capsys):
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    def walk(prefix, sub):  # every option of every command, nested ones too (`site build`)
        for action in sub._actions:
            assert action.help, f"{' '.join(prefix)} {action.option_strings} has no help"
            if isinstance(action, argparse._SubParsersAction):
                for name, nested in action.choices.items():
                    walk(prefix + [name], nested)
        with pytest.raises(SystemExit) as exit_info:
            main(prefix + ["--help"])
        assert exit_info.value.code == 0

    for name, sub in commands.choices.items():
        walk([name], sub)
    out = capsys.readouterr().out
    assert "torchrun" in out and "--top-p" in out and "--resume" in out


def test_train_then_generate(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(text_file), "--steps", "4", "--out", str(out)]
                + SMALL) == 0
    assert "final validation loss" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {
        "config.json", "llama_edu.json", "model.safetensors", "tokenizer.model",
        "tokenizer.json", "tokenizer_config.json", "training_state.pt", "trainer_state.json"}
    state = json.loads((out / "trainer_state.json").read_text("utf-8"))
    assert state["step"] == 4 and state["data"] == str(text_file)
    assert state["command"].startswith("python -m llama_edu train")
    assert main(["generate", "--checkpoint", str(out), "--prompt", "小猫 and the fox",
                 "--max-new-tokens", "5", "--temperature", "0.8", "--top-k", "20"]) == 0
    assert capsys.readouterr().out.startswith("小猫 and the fox")


def test_resume_keeps_the_saved_settings(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    main(["train", "--data", str(text_file), "--steps", "2", "--out", str(out)] + SMALL)
    assert main(["train", "--out", str(out), "--resume", "--lr", "1.0", "--quiet"]) == 2
    assert "--lr differ from the run saved" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    assert main(["train", "--out", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_weights_only_checkpoint(tmp_path, text_file):
    out = tmp_path / "small"
    main(["train", "--data", str(text_file), "--steps", "2", "--out", str(out),
          "--weights-only"] + SMALL)
    assert not (out / "training_state.pt").exists() and (out / "model.safetensors").is_file()
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["train", "--out", "x", "--data", "/no/such/file.txt"], "no text file"),
    (["train", "--out", "x", "--preset", "huge"], "invalid choice"),
    (["train", "--out", "x", "--steps", "ten"], "expected a whole number"),
    (["train", "--out", "x", "--tokenizer", "/no/tok.model"], "no tokenizer model"),
    (["generate", "--checkpoint", "/no/such/dir", "--prompt", "hi"], "no model directory"),
    (["generate", "--prompt", "hi", "--top-p", "1.5"], "--top-p must lie in"),
    (["generate", "--prompt", "hi", "--temperature", "-1"], "--temperature must be"),
    (["generate"], "required: --prompt"),
])
def test_mistakes_give_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_info:          # argparse's own usage errors
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_an_existing_run_needs_resume_or_overwrite(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    first = ["train", "--data", str(text_file), "--steps", "2", "--out", str(out)] + SMALL
    assert main(first) == 0
    weights = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(first + ["--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a training run (step 2)" in err
    assert "--resume" in err and "--overwrite" in err
    assert (out / "model.safetensors").read_bytes() == weights       # untouched
    assert main(first + ["--seed", "1", "--overwrite", "--weights-only"]) == 0
    assert (out / "model.safetensors").read_bytes() != weights
    assert not (out / "training_state.pt").exists()
    state = json.loads((out / "trainer_state.json").read_text("utf-8"))
    assert state["train_config"]["seed"] == 1 and "--overwrite" in state["command"]
    assert main(["train", "--out", str(out), "--resume", "--overwrite"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_undecodable_text_file(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 50)
    assert main(["train", "--out", str(tmp_path / "o"), "--data", str(bad)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_module_entry_point_and_torchrun_data_parallel(tmp_path, text_file):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    out = tmp_path / "dp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--standalone", "-m", "llama_edu", "train",
         "--data", str(text_file), "--steps", "2", "--out", str(out)] + SMALL,
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("final validation loss") == 1          # rank 0 alone reports
    assert "2 process(es)" in result.stdout
    assert json.loads((out / "trainer_state.json").read_text("utf-8"))["world_size"] == 2
