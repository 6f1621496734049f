"""Checkpoint conversion: the Hugging Face and Meta layouts of Llama 2 (lesson 09).

The same weights travel in two layouts:

- Hugging Face (`LlamaForCausalLM`): a directory with `config.json` and `model.safetensors`
  (or shards listed in `model.safetensors.index.json`). Its names are ours with a `model.`
  prefix (`model.layers.0.self_attn.q_proj.weight`), except `lm_head.weight`. This is also
  the course's own checkpoint format: `save_hf` and `load_hf` are `llama_edu.checkpoint`'s
  `save_model` and `load_model`, for the models that transformers can hold.
- Meta's reference code (`facebookresearch/llama`): `params.json` and
  `consolidated.NN.pth`, one file per model-parallel rank, with the names `tok_embeddings`,
  `layers.N.attention.wq`, `feed_forward.w1`, `attention_norm`, `output` ...

The one real difference is RoPE. Meta rotates the interleaved feature pairs (2i, 2i+1);
HF and llama_edu rotate the half-split pairs (i, i + head_dim/2). Attention only needs
q . k, so permuting the rows of W_q and W_k inside each head turns one layout into the
other exactly (`positions.interleaved_to_half_split` and its inverse). V and O are untouched.

Loading never unpickles code: safetensors, or `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from . import positions
from .ffn import ffn_hidden_dim
from .files import load_torch, read_json, save_torch, write_json
from .model import Llama, LlamaConfig

__all__ = ["load_hf", "save_hf", "load_meta", "save_meta", "to_hf_model", "from_hf_model",
           "hf_config_dict", "config_from_hf", "hf_state_dict", "meta_state_dict",
           "meta_params", "config_from_meta", "resolve_dtype", "checkpoint_format",
           "load_pretrained"]

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
           "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
DEFAULT_MAX_SHARD_SIZE = 5 * 1024**3           # bytes, as HF used for years

# ours -> Meta, per layer (the prefix `layers.N.` is kept)
_META_LAYER_NAMES = {
    "self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
    "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
    "mlp.up_proj": "feed_forward.w3",
    "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm",
}
_META_TOP_NAMES = {"embed_tokens": "tok_embeddings", "norm": "norm", "lm_head": "output"}
# keys some released checkpoints carry that hold nothing a model needs (RoPE tables)
_IGNORED_HF = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")
_IGNORED_META = {"rope.freqs"}


# ---------------------------------------------------------------------------------------
# shared helpers

def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """None, a torch dtype or a name ("fp32", "bf16", "float16" ...) -> torch dtype or None."""
    if dtype is None or dtype in _DTYPE_NAMES:
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be float32, float16 or bfloat16 (or 'fp32', 'fp16', 'bf16'), "
                     f"got {dtype!r}")


def _check_llama(model: Llama, fmt: str) -> LlamaConfig:
    if not isinstance(model, Llama):
        raise TypeError(f"expected a llama_edu Llama model, got {type(model).__name__}")
    config = model.config
    if not config.is_llama:
        switches = {k: getattr(config, k) for k in ("pos_encoding", "norm_type",
                                                      "norm_placement", "ffn_type")}
        raise ValueError(f"the {fmt} format holds only Llama 2 itself, but this model uses "
                         f"lesson switches {switches}; set them back to pos_encoding='rope', "
                         "norm_type='rmsnorm', norm_placement='pre', ffn_type='swiglu'")
    return config


def _expected_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Our parameter names and shapes, built on the meta device (costs no memory)."""
    with torch.device("meta"):
        model = Llama(config)
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


def _check_tensors(tensors: dict[str, Tensor], expected: dict[str, tuple[int, ...]],
                   optional: Iterable[str], where: str, name_of=lambda k: k) -> None:
    """Every expected tensor present with its shape, nothing unknown; errors name them all.

    `name_of` maps our name to the file's name, so messages use the file's names.
    """
    optional = set(optional)
    file_names = {name_of(k): k for k in expected}
    problems = []
    for ours, shape in expected.items():
        key = name_of(ours)
        if key not in tensors:
            if ours not in optional:
                problems.append(f"missing tensor {key!r} (expected shape {shape})")
        elif tuple(tensors[key].shape) != shape:
            problems.append(f"tensor {key!r} has shape {tuple(tensors[key].shape)}, "
                            f"expected shape {shape}")
    for key in tensors:
        if key not in file_names:
            problems.append(f"unknown tensor {key!r} (shape {tuple(tensors[key].shape)}); "
                            "is this a Llama checkpoint of the same layout?")
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more"
                                            if len(problems) > 6 else "")
        raise ValueError(f"{where} does not match the config: {shown}")


def _build(config: LlamaConfig, state: dict[str, Tensor], dtype: torch.dtype | None,
           device: torch.device | str) -> Llama:
    """A Llama holding `state` (our names), made on the meta device and filled in."""
    if dtype is None:
        dtype = state["embed_tokens.weight"].dtype
        if dtype not in _DTYPE_NAMES:
            dtype = torch.float32
    with torch.device("meta"):
        model = Llama(config)
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:                       # assign=True unties: tie again
        model.lm_head.weight = model.embed_tokens.weight
    return model.eval()


def _directory(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory; {what} loads from a checkpoint "
                                "directory")
    return path


# ---------------------------------------------------------------------------------------
# Hugging Face

def hf_config_dict(config: LlamaConfig) -> dict:
    """Our config as the fields of HF's `LlamaConfig`."""
    return {
        "hidden_size": config.dim,
        "intermediate_size": config.ffn_hidden_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_parameters": {**(config.rope_scaling or {"rope_type": "default"}),
                            "rope_theta": float(config.rope_theta)},
        "tie_word_embeddings": config.tie_word_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
    }


def config_from_hf(values: dict) -> LlamaConfig:
    """An HF Llama `config.json` (as a dict) -> LlamaConfig; refuses what we cannot run."""
    if values.get("model_type", "llama") != "llama":
        raise ValueError(f"model_type is {values['model_type']!r}; load_hf reads Llama "
                         "checkpoints (model_type 'llama') only")
    for key, wanted in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        if values.get(key, wanted) != wanted:
            raise ValueError(f"config.json has {key}={values[key]!r}; Llama 2 uses "
                             f"{key}={wanted!r}, and llama_edu supports only that")
    # transformers 5 writes rope_parameters; older files have rope_theta and rope_scaling
    rope = dict(values.get("rope_parameters") or values.get("rope_scaling") or {})
    rope_type = rope.pop("rope_type", rope.pop("type", "default"))
    theta = rope.pop("rope_theta", values.get("rope_theta", 10_000.0))
    if rope_type not in positions.ROPE_SCALING_KEYS:
        raise ValueError(f"RoPE scaling {rope_type!r} is not supported: llama_edu implements "
                         f"rope_type {sorted(positions.ROPE_SCALING_KEYS)}")
    wanted = positions.ROPE_SCALING_KEYS[rope_type]
    scaling = None if rope_type == "default" else {
        "rope_type": rope_type, **{k: v for k, v in rope.items() if k in wanted}}
    try:
        dim, n_heads = int(values["hidden_size"]), int(values["num_attention_heads"])
        fields = dict(
            dim=dim, n_heads=n_heads,
            n_layers=int(values["num_hidden_layers"]),
            n_kv_heads=int(values.get("num_key_value_heads") or n_heads),
            vocab_size=int(values["vocab_size"]),
            hidden_dim=int(values["intermediate_size"]),
            max_seq_len=int(values.get("max_position_embeddings", 2048)),
            norm_eps=float(values.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta), rope_scaling=scaling,
            tie_word_embeddings=bool(values.get("tie_word_embeddings", False)),
        )
    except KeyError as error:
        raise ValueError(f"config.json lacks the field {error.args[0]!r} that a Llama config "
                         "needs") from None
    if values.get("head_dim") not in (None, dim // n_heads):
        raise ValueError(f"head_dim={values['head_dim']} differs from hidden_size / "
                         f"num_attention_heads = {dim // n_heads}; llama_edu needs them equal")
    config = LlamaConfig(**fields)
    exact = values.get("llama_edu")              # to_hf_model's note of our exact config
    if isinstance(exact, dict):
        exact = LlamaConfig.from_dict(exact)
        if same_hf_model(exact, config):
            return exact
    return config


def same_hf_model(a: LlamaConfig, b: LlamaConfig) -> bool:
    """Whether two configs are the same model to transformers (the same config.json)."""
    return hf_config_dict(a) == hf_config_dict(b)


def _hf_name(ours: str) -> str:
    return ours if ours.startswith("lm_head.") else f"model.{ours}"


def hf_state_dict(model: Llama) -> dict[str, Tensor]:
    """The model's tensors under HF names (the tied LM head once, as HF saves it)."""
    config = _check_llama(model, "Hugging Face")
    state = {_hf_name(k): v.detach() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight")
    return state


def save_hf(model: Llama, path: str | Path, *, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
            bos_token_id: int | None = None, eos_token_id: int | None = None) -> Path:
    """Write `config.json` and `model.safetensors` the way `LlamaForCausalLM` saves them,
    with llama_edu's exact config beside them in `llama_edu.json`.

    Above max_shard_size the tensors go into `model-0000k-of-0000n.safetensors` with a
    `model.safetensors.index.json` listing where each one lives. Returns the directory.
    """
    from .checkpoint import save_model

    _check_llama(model, "Hugging Face")
    return save_model(model, path, max_shard_size=max_shard_size, bos_token_id=bos_token_id,
                      eos_token_id=eos_token_id)


def load_hf(path: str | Path, dtype: torch.dtype | str | None = None, *,
            device: torch.device | str = "cpu") -> Llama:
    """A Llama from an HF checkpoint directory (what `save_pretrained` or `save_hf` wrote).

    dtype: float32, float16 or bfloat16 (or "fp32", "fp16", "bf16"); None keeps the file's.
    """
    from .checkpoint import load_model

    path = _directory(path, "load_hf")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path / 'config.json'} not found: a Hugging Face checkpoint "
                                "directory needs config.json (a course model with lesson "
                                "switches has none: load it with llama_edu.checkpoint."
                                "load_model)")
    return load_model(path, device=device, dtype=dtype)


def to_hf_model(model: Llama, attn_implementation: str = "eager"):
    """The same weights in a `transformers.LlamaForCausalLM` (in memory, eval mode)."""
    import transformers

    config = _check_llama(model, "Hugging Face")
    weight = model.embed_tokens.weight
    hf_config = transformers.LlamaConfig(**hf_config_dict(config), bos_token_id=None,
                                         eos_token_id=None, pad_token_id=None,
                                         attn_implementation=attn_implementation,
                                         llama_edu=config.to_dict())  # read by from_hf_model
    hf_model = transformers.LlamaForCausalLM(hf_config).to(device=weight.device,
                                                            dtype=weight.dtype)
    state = {_hf_name(k): v for k, v in model.state_dict().items()}
    hf_model.load_state_dict(state, strict=True)
    return hf_model.eval()


def from_hf_model(hf_model) -> Llama:
    """A llama_edu Llama with the weights of a `transformers.LlamaForCausalLM`."""
    if not hasattr(hf_model, "config") or not hasattr(hf_model, "state_dict"):
        raise TypeError(f"expected a transformers LlamaForCausalLM, got {type(hf_model).__name__}")
    config = config_from_hf(hf_model.config.to_dict())
    tensors = {k: v.detach() for k, v in hf_model.state_dict().items() if not _IGNORED_HF.match(k)}
    _check_tensors(tensors, _expected_shapes(config), [], type(hf_model).__name__, _hf_name)
    weight = tensors["model.embed_tokens.weight"]
    state = {k: tensors[_hf_name(k)].clone() for k in _expected_shapes(config)}
    return _build(config, state, weight.dtype, weight.device)


# ---------------------------------------------------------------------------------------
# Meta

def _meta_name(ours: str) -> str:
    parts = ours.split(".")
    if parts[0] == "layers":                              # layers.N.<module path>.weight
        module = ".".join(parts[2:-1])
        return ".".join(["layers", parts[1], _META_LAYER_NAMES[module], parts[-1]])
    return ".".join([_META_TOP_NAMES[parts[0]], *parts[1:]])


def meta_params(config: LlamaConfig) -> dict:
    """`params.json` for Meta's reference code (keys only where Llama 2 writes them)."""
    params = {"dim": config.dim, "n_layers": config.n_layers, "n_heads": config.n_heads,
              "vocab_size": config.vocab_size, "multiple_of": config.multiple_of,
              "norm_eps": config.norm_eps, "max_seq_len": config.max_seq_len}
    if config.n_kv_heads != config.n_heads:
        params["n_kv_heads"] = config.n_kv_heads
    if config.ffn_dim_multiplier is not None:
        params["ffn_dim_multiplier"] = config.ffn_dim_multiplier
    if config.rope_theta != 10_000.0:
        params["rope_theta"] = config.rope_theta
    if config.ffn_hidden_dim != ffn_hidden_dim(config.dim, config.multiple_of,
                                               config.ffn_dim_multiplier):
        params["hidden_dim"] = config.ffn_hidden_dim      # Meta's rule cannot express it
    return params


def config_from_meta(params: dict, tensors: dict[str, Tensor] | None = None) -> LlamaConfig:
    """params.json -> LlamaConfig. vocab_size -1 (as released) is read off the embedding."""
    params = dict(params)
    params.pop("max_batch_size", None)
    if params.pop("use_scaled_rope", False):
        raise ValueError("params.json asks for use_scaled_rope (Llama 3.1 RoPE scaling); "
                         "llama_edu implements the plain RoPE of Llama 2")
    if params.get("vocab_size", -1) == -1:
        if not tensors or "tok_embeddings.weight" not in tensors:
            raise ValueError("params.json has vocab_size -1 and no tok_embeddings.weight "
                             "to read it from")
        params["vocab_size"] = tensors["tok_embeddings.weight"].shape[0]
    known = {"dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
             "ffn_dim_multiplier", "norm_eps", "rope_theta", "max_seq_len", "hidden_dim"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"params.json has fields llama_edu does not know: {unknown}; "
                         f"known: {sorted(known)}")
    return LlamaConfig(**params)


def meta_state_dict(model: Llama) -> dict[str, Tensor]:
    """The model's tensors under Meta's names, q and k rows in the interleaved RoPE layout."""
    config = _check_llama(model, "Meta")
    state = {}
    for ours, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if ours.endswith("self_attn.q_proj.weight"):
            tensor = positions.half_split_to_interleaved(tensor, config.n_heads)
        elif ours.endswith("self_attn.k_proj.weight"):
            tensor = positions.half_split_to_interleaved(tensor, config.n_kv_heads)
        state[_meta_name(ours)] = tensor.cpu().clone().contiguous()  # no shared storage (tied)
    return state


def save_meta(model: Llama, path: str | Path) -> Path:
    """Write `params.json` and `consolidated.00.pth` (one rank) for Meta's reference code."""
    config = _check_llama(model, "Meta")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / "params.json", meta_params(config))
    save_torch(path / "consolidated.00.pth", meta_state_dict(model))
    return path


# How model-parallel ranks split each tensor (fairscale's layers in Meta's code): column
# parallel along the output rows (dim 0), row parallel along the input columns (dim 1),
# the embedding along its features (dim 1); norms are copied on every rank.
def _meta_concat_dim(key: str) -> int | None:
    if key.endswith(("attention.wo.weight", "feed_forward.w2.weight", "tok_embeddings.weight")):
        return 1
    if key.endswith("norm.weight"):
        return None
    return 0


def _read_meta_tensors(path: Path) -> dict[str, Tensor]:
    files = sorted(path.glob("consolidated.*.pth"))
    if not files:
        raise FileNotFoundError(f"no consolidated.00.pth in {path}: a Meta checkpoint "
                                "directory holds params.json and consolidated.NN.pth")
    ranks = [load_torch(f, "a Meta checkpoint shard (torch.save)") for f in files]
    if len(ranks) == 1:
        return ranks[0]
    merged = {}
    for key in ranks[0]:
        dim = _meta_concat_dim(key)
        merged[key] = (ranks[0][key] if dim is None or key in _IGNORED_META
                       else torch.cat([r[key] for r in ranks], dim=dim))
    return merged


def load_meta(path: str | Path, dtype: torch.dtype | str | None = None, *,
              device: torch.device | str = "cpu") -> Llama:
    """A Llama from Meta's layout (params.json + consolidated.NN.pth, merged across ranks).

    q and k rows are permuted from the interleaved RoPE layout to our half-split one.
    """
    dtype = resolve_dtype(dtype)
    path = _directory(path, "load_meta")
    if not (path / "params.json").is_file():
        raise FileNotFoundError(f"{path / 'params.json'} not found: a Meta checkpoint "
                                "directory needs params.json")
    params = read_json(path / "params.json", "Meta's params.json")
    tensors = {k: v for k, v in _read_meta_tensors(path).items() if k not in _IGNORED_META}
    config = config_from_meta(params, tensors)
    expected = _expected_shapes(config)
    _check_tensors(tensors, expected, [], f"checkpoint {path}", _meta_name)
    state = {}
    for ours in expected:
        tensor = tensors[_meta_name(ours)]
        if ours.endswith("self_attn.q_proj.weight"):
            tensor = positions.interleaved_to_half_split(tensor, config.n_heads)
        elif ours.endswith("self_attn.k_proj.weight"):
            tensor = positions.interleaved_to_half_split(tensor, config.n_kv_heads)
        state[ours] = tensor
    return _build(config, state, dtype, device)



# ---------------------------------------------------------------------------------------
# either layout: a released checkpoint on disk

def checkpoint_format(path: str | Path) -> str:
    """"meta" (params.json + consolidated.NN.pth) or "hf" (config.json + safetensors)."""
    path = _directory(path, "load_pretrained")
    if (path / "params.json").is_file() and any(path.glob("consolidated.*.pth")):
        return "meta"
    if (path / "config.json").is_file() and (any(path.glob("*.safetensors"))
                                             or (path / "pytorch_model.bin").is_file()):
        return "hf"
    found = sorted(p.name for p in path.iterdir())[:8]
    raise FileNotFoundError(f"{path} holds neither Meta's layout (params.json and "
                            "consolidated.00.pth, as in Llama-2-7b) nor Hugging Face's "
                            f"(config.json and model.safetensors, as in Llama-2-7b-hf); it has "
                            f"{found}")


def load_pretrained(path: str | Path, dtype: torch.dtype | str | None = None, *,
                    device: torch.device | str = "cpu") -> Llama:
    """A Llama from a released checkpoint directory in either layout (see
    `checkpoint_format`): `load_meta` or `load_hf`. Neither runs pickled code."""
    fmt = checkpoint_format(path)
    return (load_meta if fmt == "meta" else load_hf)(path, dtype, device=device)
