"""Rebuild (with --train) and measure the shipped chat model: README's "Chat model" table.

    python scripts/chat_model.py --train      # the commands below, then the measures
    python scripts/chat_model.py              # the measures, from runs/ and assets/

The commands: SFT from assets/tiny, a reward model and DPO from the SFT model; the SFT
and DPO models are shipped as assets/tiny-sft and assets/tiny-chat (weights in bf16). The measures
run on 200 held-out prompts of llama_edu.instructions (other stories, other sums).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--threads", "2", "--quiet", "--overwrite"]
COMMANDS = {
    "sft": ["sft", "--from", "assets/tiny", "--out", "runs/sft", "--steps", "3000",
            "--examples", "20000"],
    "sft-lora": ["sft", "--from", "assets/tiny", "--out", "runs/sft-lora", "--steps", "3000",
                 "--examples", "20000", "--lora", "--lr", "1e-2"],
    "dpo": ["dpo", "--from", "runs/sft", "--out", "runs/dpo", "--steps", "800", "--lr", "1e-4",
            "--beta", "0.5", "--examples", "20000"],
    "reward": ["reward", "--from", "runs/sft", "--out", "runs/reward"],
}


def train(names) -> None:
    for name in names:
        command = [sys.executable, "-m", "llama_edu"] + COMMANDS[name] + COMMON
        print("$ python -m llama_edu " + shlex.join(COMMANDS[name] + COMMON), flush=True)
        began = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True)
        print(f"  ({time.perf_counter() - began:.0f} s)", flush=True)


def ship() -> None:
    """runs/sft -> assets/tiny-sft and runs/dpo -> assets/tiny-chat, the weights in bf16
    (half the bytes; the lessons load them back as fp32), with each run's trainer_state."""
    import shutil

    from llama_edu.checkpoint import load_model, save_model

    for run, asset in (("sft", "tiny-sft"), ("dpo", "tiny-chat")):
        source, out = ROOT / "runs" / run, ROOT / "assets" / asset
        model = load_model(source, dtype="bf16")
        state = json.loads((source / "trainer_state.json").read_text("utf-8"))
        save_model(model, out, step=state["step"], tokenizer_model=source / "tokenizer.model")
        shutil.copyfile(source / "trainer_state.json", out / "trainer_state.json")


def measure(n: int = 200) -> list[tuple[str, str]]:
    import torch

    from llama_edu.checkpoint import load_model
    from llama_edu.finetune import exact_match, form_match, implicit_reward_accuracy
    from llama_edu.instructions import make_examples
    from llama_edu.reward import load_reward_model, reward_accuracy
    from llama_edu.tokenizer import load_tokenizer

    torch.set_num_threads(1)
    heldout = make_examples(n, "heldout")
    tokenizer = load_tokenizer(ROOT / "assets/tiny/tokenizer.model")
    models = {"base (assets/tiny)": ROOT / "assets/tiny", "SFT (assets/tiny-sft)":
              ROOT / "assets/tiny-sft",
              "SFT + DPO (assets/tiny-chat)": ROOT / "assets/tiny-chat",
              "SFT with LoRA (runs/sft-lora)": ROOT / "runs/sft-lora"}
    rows = []
    for name, path in models.items():
        if path.is_dir():
            model = load_model(path, dtype="fp32")
            rows.append((f"exact match, {name}", f"{exact_match(model, tokenizer, heldout):.1%}"))
            rows.append((f"form match, {name}", f"{form_match(model, tokenizer, heldout):.1%}"))
    if (ROOT / "runs/reward").is_dir():
        rm = load_reward_model(ROOT / "runs/reward")
        rows.append(("preference accuracy, reward model",
                     f"{reward_accuracy(rm, tokenizer, heldout):.1%}"))
        for kind in ("wrong", "too long", "wrong language"):
            part = [e for e in heldout if e.rejected_kind == kind]
            rows.append((f"  of which rejected answers '{kind}' ({len(part)} pairs)",
                         f"{reward_accuracy(rm, tokenizer, part):.1%}"))
    if (ROOT / "assets/tiny-sft").is_dir():
        sft = load_model(ROOT / "assets/tiny-sft", dtype="fp32")
        chat = load_model(ROOT / "assets/tiny-chat", dtype="fp32")
        rows.append(("preference accuracy, DPO implicit reward (tiny-chat vs SFT)",
                     f"{implicit_reward_accuracy(chat, sft, tokenizer, heldout):.1%}"))
        for kind in ("wrong", "too long", "wrong language"):
            part = [e for e in heldout if e.rejected_kind == kind]
            accuracy = implicit_reward_accuracy(chat, sft, tokenizer, part)
            rows.append((f"  of which rejected answers '{kind}' ({len(part)} pairs)",
                         f"{accuracy:.1%}"))
        rows.append(("preference accuracy, SFT's own log-probs (log pi(c) > log pi(r))",
                     _logprob_accuracy(sft, tokenizer, heldout)))
    for run in ("sft", "sft-lora", "dpo", "reward"):
        state_file = ROOT / "runs" / run / "trainer_state.json"
        if state_file.is_file():
            state = json.loads(state_file.read_text("utf-8"))
            rows.append((f"{run}: steps, seconds, peak memory (max RSS)",
                         f"{state['step']}, {state['history']['seconds']:.0f} s, "
                         f"{state['peak_memory_mb']:.0f} MB"))
    return rows


def _logprob_accuracy(model, tokenizer, examples) -> str:
    from llama_edu.finetune import answer_logprobs

    chosen, rejected = answer_logprobs(model, tokenizer, examples)
    return f"{float((chosen > rejected).float().mean()):.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs="*", default=None, choices=list(COMMANDS),
                        help="run these commands first (all four if none is named)")
    parser.add_argument("--ship", action="store_true",
                        help="copy runs/sft and runs/dpo to assets/tiny-sft and assets/tiny-chat")
    args = parser.parse_args()
    if args.train is not None:
        train(args.train or list(COMMANDS))
    if args.ship or args.train is not None:
        ship()
    print("| measure | value |\n|---|---|")
    for name, value in measure():
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
