"""The course's checkpoints: one directory format that llama_edu and transformers both load.

A model directory, as `save_model` writes it:

    config.json              the model in Hugging Face's LlamaConfig fields
    model.safetensors        the weights under HF's names (model.layers.0.self_attn.q_proj
                             .weight, ..., lm_head.weight; a tied head is stored once, as HF
                             does); above max_shard_size, model-0000k-of-0000n.safetensors
                             with model.safetensors.index.json
    llama_edu.json           what only llama_edu knows: the exact LlamaConfig (the lesson
                             switches, attn_impl, multiple_of, ...) and the step
    tokenizer.model          the SentencePiece model, read by llama_edu's tokenizer
    tokenizer.json           the same tokenizer for transformers (llama_edu.tokenizer.hf)
    tokenizer_config.json

`transformers.AutoModelForCausalLM.from_pretrained(dir)` and `AutoTokenizer.from_pretrained
(dir)` load it as it is. A training checkpoint (`save_checkpoint`) adds

    training_state.pt        AdamW's moments, the batch sampler's and torch's RNG states
                             (torch.save, read back with torch.load(weights_only=True))
    trainer_state.json       the step, the TrainConfig, the loss history, how it was started

A model whose lesson switches transformers has no class for (LayerNorm, Post-LN, ALiBi,
sinusoidal or no positions, a ReLU or GELU FFN) is saved the same way but without
config.json, so that transformers cannot load it as a Llama and silently compute something
else: only `load_model` reads it, from llama_edu.json. Every file is written atomically
(llama_edu.files), records its step where it can, and loading checks that they agree.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import Tensor

from .files import (
    DamagedFileError,
    load_torch,
    read_json,
    read_safetensors,
    safetensors_metadata,
    save_safetensors,
    save_torch,
    write_bytes,
    write_json,
)
from .interop import (
    _DTYPE_NAMES,
    _IGNORED_HF,
    DEFAULT_MAX_SHARD_SIZE,
    _build,
    _check_tensors,
    _expected_shapes,
    _hf_name,
    config_from_hf,
    hf_config_dict,
    same_hf_model,
)
from .model import Llama, LlamaConfig

ASSETS = Path(__file__).resolve().parent.parent / "assets"
COURSE_TOKENIZER = ASSETS / "tokenizer.model"
COURSE_MODEL = ASSETS / "tiny"

FORMAT_VERSION = 1
MODEL_FILES = ("config.json", "llama_edu.json", "model.safetensors",
               "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json")
TRAINING_FILES = ("training_state.pt", "trainer_state.json")
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")


# ---------------------------------------------------------------------------------------
# The model directory


def save_model(model: Llama, path: str | os.PathLike, *, step: int = 0,
               tokenizer_model: str | os.PathLike | None = None,
               max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
               bos_token_id: int | None = None, eos_token_id: int | None = None) -> Path:
    """Write the model directory described above into `path`; returns it.

    tokenizer_model: a SentencePiece .model file to store beside the weights (with its
    transformers files); its BOS and EOS ids go into config.json unless given.
    """
    if not isinstance(model, Llama):
        raise TypeError(f"expected a llama_edu Llama model, got {type(model).__name__}")
    config, path = model.config, Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = None
    if tokenizer_model is not None:
        from .tokenizer import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_model)   # refuse a bad file before writing
        if tokenizer.vocab_size != config.vocab_size:
            raise ValueError(f"the tokenizer {str(tokenizer_model)!r} has "
                             f"{tokenizer.vocab_size} pieces, the model {config.vocab_size}")
    _save_weights(path, _hf_tensors(model), step, max_shard_size)
    if config.is_llama:
        bos, eos = bos_token_id, eos_token_id
        if tokenizer is not None:                  # -1: the tokenizer has no such piece
            bos = bos if bos is not None else (tokenizer.bos_id if tokenizer.bos_id >= 0 else None)
            eos = eos if eos is not None else (tokenizer.eos_id if tokenizer.eos_id >= 0 else None)
        dtype = model.embed_tokens.weight.dtype
        write_json(path / "config.json", {
            **hf_config_dict(config), "architectures": ["LlamaForCausalLM"],
            "model_type": "llama", "torch_dtype": _DTYPE_NAMES.get(dtype, "float32"),
            "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": None, "use_cache": True})
    else:
        (path / "config.json").unlink(missing_ok=True)
    write_json(path / "llama_edu.json", {
        "format": "llama_edu", "version": FORMAT_VERSION, "step": step,
        "loads_in_transformers": config.is_llama, "config": config.to_dict()})
    if tokenizer_model is not None:
        _save_tokenizer(Path(tokenizer_model), path, config.max_seq_len)
    return path


def _hf_tensors(model: Llama) -> dict[str, Tensor]:
    """The model's tensors under HF's names; a tied LM head once (safetensors holds no
    shared tensors, and HF saves it that way)."""
    state = {_hf_name(k): v.detach() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight")
    return state


def _shard_limit(size: int | str) -> int:
    """Bytes from an int or a size such as '2GB' (1000-based) or '2GiB' (1024-based)."""
    if isinstance(size, int) and size > 0:
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)\s*", str(size), re.IGNORECASE)
    if not match:
        raise ValueError(f"max_shard_size must be a number of bytes or a size like '2GB', "
                         f"got {size!r}")
    unit = match.group(2).upper()
    base = 1024 if "I" in unit else 1000
    return int(float(match.group(1)) * base ** "KMG".index(unit[0]) * base)


def _save_weights(path: Path, state: dict[str, Tensor], step: int,
                  max_shard_size: int | str) -> None:
    """model.safetensors, or shards and their index; then remove what an earlier save left."""
    limit, shards, size = _shard_limit(max_shard_size), [{}], 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    metadata = {"format": "pt", "step": str(step)}      # "format": what HF checks
    if len(shards) == 1:
        written = {save_safetensors(path / "model.safetensors", state, metadata).name}
    else:
        weight_map, written = {}, set()
        for i, shard in enumerate(shards, start=1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            written.add(save_safetensors(path / name, shard, metadata).name)
            weight_map.update(dict.fromkeys(shard, name))
        total = sum(t.numel() * t.element_size() for t in state.values())
        written.add(write_json(path / "model.safetensors.index.json",
                               {"metadata": {"total_size": total},
                                "weight_map": weight_map}).name)
    for stale in path.iterdir():
        if stale.name not in written and (_SHARD.match(stale.name) or stale.name in (
                "model.safetensors", "model.safetensors.index.json")):
            stale.unlink()


def _save_tokenizer(source: Path, path: Path, max_length: int) -> None:
    """tokenizer.model, and tokenizer.json + tokenizer_config.json for transformers."""
    import warnings

    from .tokenizer.hf import HF_TOKENIZER_FILES, hf_tokenizer_problem, save_hf_tokenizer

    write_bytes(path / "tokenizer.model", source.read_bytes())
    problem = hf_tokenizer_problem(source)
    try:
        import transformers  # noqa: F401
    except ImportError:
        problem = "transformers is not installed"
    if problem is None:
        save_hf_tokenizer(source, path, max_length)
        return
    for name in HF_TOKENIZER_FILES:
        (path / name).unlink(missing_ok=True)
    warnings.warn(f"no tokenizer.json in {path}: {problem}; llama_edu reads tokenizer.model, "
                  "transformers cannot", stacklevel=3)


def load_model(path: str | os.PathLike, device: torch.device | str | None = None,
               dtype: torch.dtype | str | None = None) -> Llama:
    """A Llama from a model directory: the course's, or any HF Llama checkpoint.

    dtype: float32, float16 or bfloat16 (or "fp32", "fp16", "bf16"); None keeps the file's.
    Never unpickles code: safetensors, or pytorch_model.bin with weights_only=True.
    """
    from .interop import resolve_dtype

    dtype = resolve_dtype(dtype)
    path = _model_dir(path)
    config = model_config(path)
    tensors = {k: v for k, v in _read_weights(path).items() if not _IGNORED_HF.match(k)}
    expected = _expected_shapes(config)
    optional = ["lm_head.weight"] if config.tie_word_embeddings else []
    _check_tensors(tensors, expected, optional, f"checkpoint {path}", _hf_name)
    state = {k: tensors[_hf_name(k)] for k in expected if _hf_name(k) in tensors}
    return _build(config, state, dtype, device or "cpu")


def _model_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no model directory at {str(path)!r}; check the path")
    return path


def model_config(path: str | os.PathLike) -> LlamaConfig:
    """The LlamaConfig of a model directory: from llama_edu.json, else from config.json.

    When both are there they must describe the same model."""
    path = Path(path)
    course, hf = path / "llama_edu.json", path / "config.json"
    config = None
    if course.is_file():
        values = read_json(course, "llama_edu's description of the model")
        if not isinstance(values.get("config"), dict):
            raise DamagedFileError(course, "has no 'config' object; expected the LlamaConfig "
                                           "that save_model writes there")
        try:
            config = LlamaConfig.from_dict(values["config"])
        except (TypeError, ValueError) as error:
            raise DamagedFileError(course, f"does not hold a usable LlamaConfig: {error}") from None
    if not hf.is_file():
        if config is None:
            raise FileNotFoundError(f"{str(path)!r} is not a model directory: it has neither "
                                    "config.json nor llama_edu.json")
        return config
    values = read_json(hf, "a Hugging Face config")
    if "hidden_size" not in values and {"dim", "n_layers"} <= set(values):
        raise DamagedFileError(hf, "is in the config schema of an older llama_edu (fields "
                                   "dim, n_layers, ...); this version reads Hugging Face's "
                                   "config.json with llama_edu.json beside it: retrain, or "
                                   "save the model again with llama_edu.checkpoint.save_model")
    try:
        from_hf = config_from_hf(values)
    except (TypeError, ValueError) as error:
        raise DamagedFileError(hf, f"is not a usable Llama config: {error}") from None
    if config is None:
        return from_hf
    if not same_hf_model(config, from_hf):
        theirs, ours = hf_config_dict(from_hf), hf_config_dict(config)
        changed = {k: (theirs[k], ours[k]) for k in ours if theirs[k] != ours[k]}
        raise ValueError(f"config.json and llama_edu.json in {str(path)!r} describe different "
                         f"models (config.json vs llama_edu.json: {changed}); was one of them "
                         "edited or copied from another run?")
    return config


def _read_weights(path: Path) -> dict[str, Tensor]:
    """All tensors of a model directory (safetensors, or .bin read weights-only)."""
    for single, index, read in (
            ("model.safetensors", "model.safetensors.index.json", read_safetensors),
            ("pytorch_model.bin", "pytorch_model.bin.index.json", load_torch)):
        if (path / single).is_file():
            return read(path / single)
        if (path / index).is_file():
            weight_map = read_json(path / index, "an index of checkpoint shards").get(
                "weight_map")
            if not isinstance(weight_map, dict):
                raise DamagedFileError(path / index, "has no weight_map object")
            tensors: dict[str, Tensor] = {}
            for name in sorted(set(weight_map.values())):
                if not (path / name).is_file():
                    missing = sorted(k for k, v in weight_map.items() if v == name)
                    raise FileNotFoundError(f"shard {path / name} listed in {index} is missing "
                                            f"(it holds {missing[:3]}...)")
                tensors.update(read(path / name))
            return tensors
    raise FileNotFoundError(f"no weights in {path}: expected model.safetensors or "
                            "model.safetensors.index.json (or pytorch_model.bin)")


# ---------------------------------------------------------------------------------------
# Training checkpoints


def save_checkpoint(path: str | os.PathLike, model: Llama, optimizer: torch.optim.Optimizer,
                    state: dict, generator: torch.Generator, save_optimizer: bool = True,
                    tokenizer_model: str | os.PathLike | None = None) -> Path:
    """A resumable checkpoint: the model directory, plus the optimizer moments and the RNG
    states (training_state.pt), plus the run's state (trainer_state.json: step, configs,
    history). trainer_state.json is written last, so it only ever names a complete save."""
    step = state["step"]
    path = save_model(model, path, step=step, tokenizer_model=tokenizer_model)
    if save_optimizer:
        save_torch(path / "training_state.pt", {
            "step": step, "optimizer": optimizer.state_dict(),
            "rng": {"batches": generator.get_state(), "torch": torch.get_rng_state()}})
    else:
        (path / "training_state.pt").unlink(missing_ok=True)
    write_json(path / "trainer_state.json", {**state, "resumable": save_optimizer})
    return path


def load_checkpoint(path: str | os.PathLike, model: Llama, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator) -> dict:
    """Restore model, optimizer and RNG in place from `save_checkpoint`; returns the state."""
    path = Path(path)
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}: it lacks trainer_state.json")
    state = read_json(path / "trainer_state.json", "the state of a training run")
    if not state.get("resumable") or not (path / "training_state.pt").is_file():
        raise ValueError(f"{str(path)!r} holds weights only (saved without optimizer state); "
                         "it cannot be resumed, start a new run with another --out")
    training = load_torch(path / "training_state.pt", "llama_edu's training state")
    steps = {"trainer_state.json": state.get("step"), "training_state.pt": training.get("step"),
             "llama_edu.json": read_json(path / "llama_edu.json", "llama_edu's description "
                                         "of the model").get("step")}
    for name in _weight_files(path):
        steps[name] = int(safetensors_metadata(path / name).get("step", -1))
    if len(set(steps.values())) != 1:
        raise ValueError(f"{str(path)!r} is inconsistent (steps {steps}); was a save "
                         "interrupted? delete it and start over")
    loaded = load_model(path)
    if loaded.config != model.config:
        raise ValueError(f"the model saved in {str(path)!r} has another config than the "
                         "model to resume; build the model from the saved config")
    model.load_state_dict(loaded.state_dict())
    optimizer.load_state_dict(training["optimizer"])
    generator.set_state(training["rng"]["batches"])
    torch.set_rng_state(training["rng"]["torch"])
    return state


def _weight_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()
                  if p.name == "model.safetensors" or _SHARD.match(p.name))


def checkpoint_files(path: str | os.PathLike) -> list[str]:
    """The files of a course checkpoint that are present in `path` (none: a fresh folder)."""
    path = Path(path)
    if not path.is_dir():
        return []
    names = set(MODEL_FILES + TOKENIZER_FILES + TRAINING_FILES)
    return sorted(p.name for p in path.iterdir() if p.name in names or _SHARD.match(p.name))


def remove_checkpoint(path: str | os.PathLike) -> list[str]:
    """Delete a checkpoint's files from `path` (nothing else there); returns their names."""
    names = checkpoint_files(path)
    for name in names:
        (Path(path) / name).unlink()
    return names


# ---------------------------------------------------------------------------------------
# The course's own model


def load_course_model(device: torch.device | str | None = None):
    """The shipped tiny Llama and the course tokenizer: (model, tokenizer).

    Trained by `python -m llama_edu train` on the course corpus (see assets/tiny/).
    """
    from .tokenizer import load_tokenizer

    for path in (COURSE_MODEL / "model.safetensors", COURSE_MODEL / "tokenizer.model"):
        if not path.is_file():
            raise FileNotFoundError(f"the course asset {str(path)!r} is missing; run from a "
                                    "checkout of the course (pip install -e .)")
    return load_model(COURSE_MODEL, device), load_tokenizer(COURSE_MODEL / "tokenizer.model")
