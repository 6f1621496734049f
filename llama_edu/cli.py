"""The command line: `python -m llama_edu train ...` and `python -m llama_edu generate ...`.

    python -m llama_edu train --preset tiny --data course --steps 2000 --out runs/tiny
    torchrun --nproc_per_node 2 -m llama_edu train --preset tiny --steps 200 --out runs/dp
    python -m llama_edu generate --checkpoint runs/tiny --prompt "Once upon a time"
    python -m llama_edu sft --from assets/tiny --out runs/sft          (--lora: adapters only)
    python -m llama_edu reward --from runs/sft --out runs/rm
    python -m llama_edu dpo --from runs/sft --out runs/dpo
    python -m llama_edu chat --checkpoint assets/tiny-chat --system "Answer in one word."

The training options are TrainConfig's fields, with the help written beside each field.
Mistakes (a missing or damaged file, a bad option, an --out that holds another run) end
with a one-line message, not a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shlex
import sys
import time
import typing
from pathlib import Path

from .checkpoint import COURSE_MODEL, COURSE_TOKENIZER
from .precision import PRECISIONS, choose_precision
from .train import TrainConfig


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def add_config_options(parser: argparse.ArgumentParser, config_class=TrainConfig) -> None:
    """One option per dataclass field (`batch_size` -> `--batch-size`), typed by the
    field's annotation, with the help from its metadata and its default. The options
    default to None, so that the caller can tell which were given."""
    parsers = {int: _int, float: _float, float | None: _float, str: str}
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        flag = f"--{f.name.replace('_', '-')}"
        default = f.default if f.metadata.get("cli_default") is None else f.metadata["cli_default"]
        help_text = f"{f.metadata['help']} (default: {default})"
        if hints[f.name] is bool:                  # --compile / --no-compile
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
            continue
        parse = parsers.get(hints[f.name])
        if parse is None:
            raise TypeError(f"{config_class.__name__}.{f.name} is a {hints[f.name]}; "
                            "add_config_options parses int, float, float | None, str and "
                            "bool fields")
        parser.add_argument(flag, dest=f.name, type=parse, help=help_text,
                            choices=f.metadata.get("choices"))


def build_parser() -> argparse.ArgumentParser:
    from .model import PRESETS

    parser = _Parser(prog="python -m llama_edu",
                     description="Train a small Llama 2 on the course corpus (or your own "
                                 "text) and generate text from it.")
    commands = parser.add_subparsers(dest="command",
                                     metavar="{train,generate,solution,sft,reward,dpo,chat,site}",
                                     parser_class=_Parser)
    commands.required = True

    t = commands.add_parser(
        "train", help="train a model with the Llama 2 recipe",
        description="Train a Llama with AdamW (beta1 0.9, beta2 0.95, eps 1e-5, weight decay "
                    "on matrices), linear warmup then cosine decay to 10% of the peak, "
                    "gradient clipping; the matmuls in --precision (auto: bf16 where the hardware "
                    "runs it fast, else fp32), the weights and optimizer in fp32. Under "
                    "`torchrun --nproc_per_node N -m llama_edu train ...` it trains data "
                    "parallel (each process takes its share of every batch).")
    t.add_argument("--preset", default=None, choices=[p for p in PRESETS if "llama" not in p],
                   help="model size from llama_edu.model.PRESETS (default: tiny)")
    t.add_argument("--data", default=None,
                   help="'course' (Python's help texts + the course's stories), 'pydoc', "
                        "'stories', or the path of a UTF-8 text file (default: course)")
    t.add_argument("--out", required=True,
                   help="directory for the checkpoint, a Hugging Face model directory "
                        "(config.json, model.safetensors, tokenizer files) plus llama_edu.json, "
                        "training_state.pt and trainer_state.json")
    add_config_options(t)
    t.add_argument("--tokenizer", default=None,
                   help="SentencePiece model file (default: the course's assets/tokenizer.model)")
    t.add_argument("--device", default=None,
                   help="cpu, cuda or mps (default: the best available; set by torchrun's "
                        "LOCAL_RANK under NCCL)")
    t.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads for torch (default: torch's choice)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out with its saved settings")
    t.add_argument("--overwrite", action="store_true",
                   help="delete the checkpoint in --out, if there is one, and start afresh")
    t.add_argument("--weights-only", action="store_true",
                   help="save no optimizer state (a smaller checkpoint that cannot be resumed)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    from .site import add_commands as add_site_commands

    add_site_commands(commands)

    s = commands.add_parser(
        "solution", help="print a lesson's exercise solutions (the learner's edition hides them)",
        description="Print the instructor's solution of one exercise, or of all of a lesson's "
                    "exercises, from notebooks/NN_topic.ipynb.")
    s.add_argument("lesson", help="the lesson's two-digit number, e.g. 05")
    s.add_argument("exercise", nargs="?", default=None,
                   help="one exercise's answer cell id, e.g. causal_mask_answer (default: all)")

    g = commands.add_parser(
        "generate", help="continue a prompt with a trained model",
        description="Generate text with the KV cache: greedy by default, or sampling with "
                    "--temperature, --top-k and --top-p. Tokens are printed as they come.")
    g.add_argument("--checkpoint", default=str(COURSE_MODEL),
                   help="a model directory (llama_edu's, or a Hugging Face Llama) (default: "
                        "the course's shipped tiny model, assets/tiny)")
    g.add_argument("--prompt", required=True, help="the text to continue (any UTF-8 text)")
    g.add_argument("--max-new-tokens", type=_positive_int, default=100,
                   help="most tokens to add (100)")
    g.add_argument("--temperature", type=_float, default=0.0,
                   help="0 is greedy; higher samples more freely (0)")
    g.add_argument("--top-k", type=_positive_int, default=None,
                   help="sample only among the k most likely tokens (off)")
    g.add_argument("--top-p", type=_float, default=None,
                   help="sample only among the most likely tokens whose probabilities add up "
                        "to p, in (0, 1] (off)")
    g.add_argument("--seed", type=int, default=0, help="seed for sampling (0)")
    g.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="compute dtype of the forward passes (fp32: decoding one token at a "
                        "time multiplies matrices too small for bf16 to pay on a CPU; "
                        "benchmarks/bench_generate.py measures it)")
    g.add_argument("--tokenizer", default=None,
                   help="SentencePiece model file (default: the checkpoint's tokenizer.model, "
                        "else the course's)")
    g.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    _add_tune_commands(commands)
    _add_chat_command(commands)
    return parser


_TUNE_HELP = {
    "sft": ("supervised fine-tuning on the course's instructions (loss on answers only)",
            "Fine-tune a base model on llama_edu.instructions' generated chat examples in the "
            "Llama 2 chat format, the loss on the answer tokens only; every weight, or with "
            "--lora only low-rank adapters on --lora-targets (merged into the saved model). "
            "Reports the exact-match rate on held-out prompts."),
    "reward": ("train a reward model on preference pairs (ranking loss)",
               "Train a reward model: the --from model's backbone with a scalar head on the "
               "last token, with Llama 2's binary ranking loss on (chosen, rejected) answers. "
               "Reports the held-out accuracy (chosen scored higher)."),
    "dpo": ("direct preference optimisation from an SFT model",
            "Train the --from model with DPO (Rafailov et al., 2023) on the preference pairs, "
            "the --from model itself frozen as the reference. Reports the held-out accuracy "
            "of the implicit reward beta * log(pi / ref) and the exact-match rate."),
}
_TUNE_DEFAULTS = {"sft": {}, "reward": {"steps": 60, "lr": 1e-3, "batch_size": 8, "warmup": 5},
                  "dpo": {"steps": 60, "lr": 3e-4, "batch_size": 8, "warmup": 5}}


def _add_tune_commands(commands) -> None:
    from .finetune import TuneConfig

    for name, (short, long) in _TUNE_HELP.items():
        c = commands.add_parser(name, help=short, description=long)
        c.add_argument("--from", dest="source", default=None,
                       help="the model directory to start from (sft: a base model such as "
                            "assets/tiny; reward, dpo: an SFT model)")
        c.add_argument("--out", required=True, help="directory for the checkpoint (a model "
                       "directory plus training_state.pt and trainer_state.json)")
        add_config_options(c, TuneConfig)
        for action in c._actions:              # this command's own defaults, in its help
            if action.dest in _TUNE_DEFAULTS[name]:
                action.help = action.help.rsplit(" (default:", 1)[0] + \
                    f" (default: {_TUNE_DEFAULTS[name][action.dest]})"
        c.add_argument("--device", default=None,
                       help="cpu, cuda or mps (default: the best available)")
        c.add_argument("--threads", type=_positive_int, default=None,
                       help="CPU threads for torch (default: torch's choice)")
        c.add_argument("--resume", action="store_true",
                       help="continue the run saved in --out with its saved settings")
        c.add_argument("--overwrite", action="store_true",
                       help="delete the checkpoint in --out, if there is one, and start afresh")
        c.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_chat_command(commands) -> None:
    c = commands.add_parser(
        "chat", help="talk to a chat model in the terminal",
        description="A multi-turn chat in the Llama 2 chat format (llama_edu.chat."
                    "encode_dialog), the answer streamed token by token with the KV cache. "
                    "Ctrl-D or /exit ends it. When stdin is not a terminal, each line is one "
                    "user message, so that a chat can be scripted.")
    c.add_argument("--checkpoint", default=str(COURSE_MODEL.parent / "tiny-chat"),
                   help="a chat model directory (default: the shipped assets/tiny-chat)")
    c.add_argument("--system", default=None, help="a system prompt for the whole chat")
    c.add_argument("--max-new-tokens", type=_positive_int, default=64,
                   help="most tokens per answer (64)")
    c.add_argument("--temperature", type=_float, default=0.0,
                   help="0 is greedy; higher samples more freely (0)")
    c.add_argument("--top-p", type=_float, default=None, help="nucleus sampling's p (off)")
    c.add_argument("--seed", type=int, default=0, help="seed for sampling (0)")
    c.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")


# ---------------------------------------------------------------------------------------
# train


def _train_config(args, saved: dict | None) -> TrainConfig:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name) is not None}
    if saved is None:
        command_defaults = {f.name: f.metadata["cli_default"] for f in dataclasses.fields(
            TrainConfig) if f.metadata.get("cli_default") is not None}
        return TrainConfig(**{**command_defaults, **given})
    kept = TrainConfig(**saved)
    asked = TrainConfig(**{**saved, **given})
    differ = [f"--{k.replace('_', '-')}" for k in given if getattr(asked, k) != getattr(kept, k)]
    if differ:
        raise ValueError(f"{', '.join(differ)} differ from the run saved in {args.out}; "
                         "--resume continues with the saved settings, so leave them out")
    return kept


def _refuse_existing_run(out: Path) -> None:
    """An --out that holds a checkpoint needs --resume or --overwrite."""
    from .checkpoint import checkpoint_files
    from .files import read_json

    existing = checkpoint_files(out)
    if not existing:
        return
    what = f"a checkpoint ({', '.join(existing)})"
    with contextlib.suppress(OSError, ValueError, KeyError):      # a damaged one too
        what = f"a training run (step {read_json(out / 'trainer_state.json')['step']})"
    raise FileExistsError(f"--out {out} already holds {what}; add --resume to continue it, "
                          "or --overwrite to replace it (or choose another --out)")


def _saved_run(out: Path) -> dict:
    from .files import DamagedFileError, read_json

    state_file = out / "trainer_state.json"
    if not state_file.is_file():
        raise FileNotFoundError(f"nothing to resume: {str(state_file)!r} does not exist")
    saved = read_json(state_file, "the state of a training run")
    missing = [k for k in ("preset", "data", "tokenizer", "train_config", "model_config")
               if k not in saved]
    if missing:
        raise DamagedFileError(state_file, f"lacks {', '.join(missing)}; was it written by "
                                           "python -m llama_edu train?")
    return saved


def _train(args) -> None:
    import torch

    from . import parallel
    from .data import TokenDataset, load_corpus
    from .device import pick_device
    from .model import Llama, LlamaConfig
    from .tokenizer import load_tokenizer
    from .train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite contradict each other; pick one")
    saved = None
    if args.resume:
        saved = _saved_run(out)
        for option in ("preset", "data", "tokenizer"):
            if getattr(args, option) is not None and getattr(args, option) != saved[option]:
                raise ValueError(f"--{option} {getattr(args, option)} differs from the run "
                                 f"saved in {args.out} ({saved[option]}); leave it out")
    elif not args.overwrite:
        _refuse_existing_run(out)
    config = _train_config(args, saved and saved["train_config"])
    preset = saved["preset"] if saved else args.preset or "tiny"
    source = saved["data"] if saved else args.data or "course"
    tokenizer_path = (saved["tokenizer"] if saved else args.tokenizer) or str(COURSE_TOKENIZER)
    if saved and (out / "tokenizer.model").is_file():
        tokenizer_path = str(out / "tokenizer.model")    # the run's own copy

    rank, world, device = parallel.init_distributed()
    if world == 1:
        device = pick_device(args.device)
    main = rank == 0
    tokenizer = load_tokenizer(tokenizer_path)
    text = load_corpus(source)
    data = TokenDataset.from_text(text, tokenizer)
    if main:
        print(f"data: {source} -> {data}; tokenizer vocab {tokenizer.vocab_size}; "
              f"{world} process(es) on {device}")
    torch.manual_seed(config.seed)
    model_config = LlamaConfig.from_preset(preset, vocab_size=tokenizer.vocab_size)
    model = Llama(model_config).to(device)
    if args.resume and saved["model_config"] != model_config.to_dict():
        raise ValueError(f"the model saved in {args.out} is not preset {preset!r} with this "
                         "tokenizer; start a new --out")
    extra = {"preset": preset, "data": source,
             "tokenizer": saved["tokenizer"] if saved else tokenizer_path,
             "model_config": model_config.to_dict(), "world_size": world,
             "command": "python -m llama_edu " + shlex.join(args.argv)}
    began = time.perf_counter()
    history = train(model, data, config, out=out, resume=args.resume,
                    overwrite=args.overwrite, progress=not args.quiet,
                    save_optimizer=not args.weights_only, extra_state=extra,
                    tokenizer_model=tokenizer_path)
    if main:
        print(f"done: {len(history.step)} steps; final validation loss "
              f"{history.val_loss[-1]:.3f} nats/token; {time.perf_counter() - began:.0f} s "
              f"this session; checkpoint in {out}")
    parallel.cleanup()


# ---------------------------------------------------------------------------------------
# generate


def _generate(args) -> None:
    import torch

    from .checkpoint import load_model
    from .device import pick_device
    from .generate import stream_text
    from .tokenizer import load_tokenizer

    checkpoint = Path(args.checkpoint)
    model = load_model(checkpoint, pick_device(args.device))
    tokenizer_path = args.tokenizer or (checkpoint / "tokenizer.model"
                                        if (checkpoint / "tokenizer.model").is_file()
                                        else COURSE_TOKENIZER)
    tokenizer = load_tokenizer(tokenizer_path)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} pieces but the model "
                         f"expects {model.config.vocab_size}; pass the matching --tokenizer")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p must lie in (0, 1], got {args.top_p}")
    generator = torch.Generator(model.embed_tokens.weight.device).manual_seed(args.seed)
    precision = choose_precision(args.precision, model.embed_tokens.weight.device)
    print(f"precision: {precision}", file=sys.stderr)   # stdout holds only the text
    if hasattr(sys.stdout, "reconfigure"):          # Chinese text on any terminal locale
        sys.stdout.reconfigure(encoding="utf-8")
    sys.stdout.write(args.prompt)
    for piece in stream_text(model, tokenizer, args.prompt, args.max_new_tokens,
                             temperature=args.temperature, top_k=args.top_k,
                             top_p=args.top_p, generator=generator,
                             precision=precision.name):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


# ---------------------------------------------------------------------------------------
# sft, reward, dpo


def _tune_config(args, saved: dict | None):
    from .finetune import TuneConfig

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TuneConfig)
             if getattr(args, f.name) is not None}
    if saved is None:
        return TuneConfig(**{**_TUNE_DEFAULTS[args.command], **given})
    kept = TuneConfig(**saved)
    differ = [f"--{k.replace('_', '-')}" for k in given
              if getattr(TuneConfig(**{**saved, **given}), k) != getattr(kept, k)]
    if differ:
        raise ValueError(f"{', '.join(differ)} differ from the run saved in {args.out}; "
                         "--resume continues with the saved settings, so leave them out")
    return kept


def _tune(args) -> None:
    import torch

    from . import finetune
    from .checkpoint import load_model
    from .device import pick_device
    from .files import read_json
    from .tokenizer import load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite contradict each other; pick one")
    saved = None
    if args.resume:
        if not (out / "trainer_state.json").is_file():
            raise FileNotFoundError(f"nothing to resume: {str(out / 'trainer_state.json')!r} "
                                    "does not exist")
        saved = read_json(out / "trainer_state.json", "the state of a fine-tuning run")
        if saved.get("kind") != args.command or "tune_config" not in saved:
            raise ValueError(f"{out} does not hold a `{args.command}` run; was it written by "
                             f"python -m llama_edu {args.command}?")
        if args.source is not None and Path(args.source) != Path(saved["from"]):
            raise ValueError(f"--from {args.source} differs from the run saved in {out} "
                             f"({saved['from']}); leave it out")
    elif not args.overwrite:
        _refuse_existing_run(out)
    if args.source is None and saved is None:
        raise ValueError("--from is required: the model directory to start from")
    source = Path(saved["from"] if saved else args.source)
    if out.resolve() == source.resolve():
        raise ValueError("--out must differ from --from (the run would overwrite its start)")
    config = _tune_config(args, saved and saved["tune_config"])
    device = pick_device(args.device)
    tokenizer_path = source / "tokenizer.model"
    if not tokenizer_path.is_file():
        raise FileNotFoundError(f"{source} has no tokenizer.model; --from needs a course "
                                "model directory")
    tokenizer = load_tokenizer(tokenizer_path)
    model = load_model(source, device, dtype="fp32")
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"{source}: the tokenizer has {tokenizer.vocab_size} pieces but the "
                         f"model expects {model.config.vocab_size}")
    extra = {"kind": args.command, "from": str(source),
             "command": "python -m llama_edu " + shlex.join(args.argv)}
    options = {"resume": args.resume, "overwrite": args.overwrite,
               "progress": not args.quiet, "extra_state": extra,
               "tokenizer_model": tokenizer_path}
    began = time.perf_counter()
    mode = f"LoRA r={config.lora_r} on {config.lora_targets}" if config.lora else "every weight"
    print(f"{args.command} from {source} on {device}, training {mode}; "
          f"{config.examples} examples, {config.steps} steps")
    if args.command == "sft":
        history = finetune.run_sft(model, tokenizer, config, out, **options)
    elif args.command == "reward":
        history = finetune.run_reward(model, tokenizer, config, out, **options)
    else:
        reference = load_model(source, device, dtype="fp32")
        history = finetune.run_dpo(model, reference, tokenizer, config, out, **options)
    measures = ", ".join(f"{k} {v:.1%}" for k, v in history["evals"][-1].items() if k != "step")
    print(f"done: {len(history['step'])} steps; held-out {measures}; final loss "
          f"{history['loss'][-1]:.3f}; {time.perf_counter() - began:.0f} s this session; "
          f"peak memory {history['peak_memory_mb']:.0f} MB; checkpoint in {out}")


# ---------------------------------------------------------------------------------------
# chat


def _chat(args) -> None:
    from .chat import chat_session
    from .checkpoint import load_model
    from .device import pick_device
    from .tokenizer import load_tokenizer

    checkpoint = Path(args.checkpoint)
    model = load_model(checkpoint, pick_device(args.device), dtype="fp32")
    if not (checkpoint / "tokenizer.model").is_file():
        raise FileNotFoundError(f"{checkpoint} has no tokenizer.model; pass a course chat "
                                "model directory such as assets/tiny-chat")
    tokenizer = load_tokenizer(checkpoint / "tokenizer.model")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p must lie in (0, 1], got {args.top_p}")
    for stream in (sys.stdout, sys.stdin):
        if hasattr(stream, "reconfigure"):          # Chinese text on any terminal locale
            stream.reconfigure(encoding="utf-8")
    chat_session(model, tokenizer, sys.stdin, sys.stdout, system=args.system,
                 max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                 top_p=args.top_p, seed=args.seed, interactive=sys.stdin.isatty())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        if args.command == "solution":
            from .learner import solution_text

            if hasattr(sys.stdout, "reconfigure"):
                sys.stdout.reconfigure(encoding="utf-8")
            print(solution_text(args.lesson, args.exercise))
        elif args.command == "site":
            from .site import run as run_site

            run_site(args)
        else:
            run = {"train": _train, "generate": _generate, "chat": _chat}.get(args.command, _tune)
            run(args)
    except (ValueError, TypeError, OSError, FloatingPointError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"python -m llama_edu {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0

