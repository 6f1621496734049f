"""Position information: sinusoidal, rotary (RoPE) and ALiBi (lesson 02).

Sinusoidal (Vaswani et al., 2017), added to the token embeddings once:
    PE[m, 2i] = sin(m * w_i),  PE[m, 2i+1] = cos(m * w_i),   w_i = base ** (-2i / dim)
RoPE (Su et al., 2021, "RoFormer"), applied to q and k in every layer: pair i of a head is
rotated by the angle m * theta_i, theta_i = rope_theta ** (-2i / head_dim), so that
    <R(m) q, R(n) k> = <q, R(n - m) k>   depends only on the offset n - m.
ALiBi (Press et al., 2022, "Train Short, Test Long"): no embedding at all; head h adds
-slope_h * (i - j) to the attention score of query i and key j.

RoPE comes in two layouts that pair different features of a head:
- half-split (HF checkpoints, this module's default): feature i pairs with i + head_dim/2,
  computed with real cos/sin tables, so it also runs on Apple's MPS (no complex dtypes);
- interleaved (Meta's reference code): feature 2i pairs with 2i + 1, each pair read as a
  complex number and multiplied by e^(i m theta_i) (`rope_freqs_cis`, `apply_rope_complex`).
The two give the same attention once the rows of the q/k projection weights are permuted
(`interleaved_to_half_split`, the permutation every Meta-to-HF converter applies).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .device import values_checkable

# ---------------------------------------------------------------------------------------
# Frequencies


def _inverse_frequencies(dim: int, base: float) -> Tensor:
    """base ** (-2i / dim) for i in [0, dim/2).   -> (dim // 2,) fp32"""
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return 1.0 / (base ** exponents)


def rope_inv_freq(head_dim: int, rope_theta: float = 10_000.0,
                  scaling: dict | None = None) -> Tensor:
    """theta_i = rope_theta ** (-2i / head_dim) for i in [0, head_dim/2).   -> (head_dim // 2,)

    rope_theta is 10,000 in Llama 1 and 2 and 500,000 in Llama 3 (slower rotations, for
    longer contexts). `scaling`, in Hugging Face's format, stretches them to a longer
    context than the model was trained on (see `scale_inv_freq`).
    """
    if not isinstance(head_dim, int) or head_dim <= 0 or head_dim % 2:
        raise ValueError(f"RoPE needs an even, positive head_dim, got {head_dim!r}; "
                         "pick dim and n_heads so that dim // n_heads is even")
    if rope_theta <= 0:
        raise ValueError(f"rope_theta must be positive, got {rope_theta}")
    return scale_inv_freq(_inverse_frequencies(head_dim, rope_theta), scaling)


ROPE_SCALING_KEYS = {
    "default": set(),
    "linear": {"factor"},
    "llama3": {"factor", "low_freq_factor", "high_freq_factor",
               "original_max_position_embeddings"},
}


def check_rope_scaling(scaling: dict | None) -> None:
    """A clear error for a rope_scaling dict that is not one of the supported kinds."""
    if scaling is None:
        return
    if not isinstance(scaling, dict) or scaling.get("rope_type") not in ROPE_SCALING_KEYS:
        raise ValueError(f"rope_scaling must be None or a dict with rope_type in "
                         f"{sorted(ROPE_SCALING_KEYS)}, got {scaling!r}")
    missing = ROPE_SCALING_KEYS[scaling["rope_type"]] - set(scaling)
    if missing:
        raise ValueError(f"rope_scaling of type {scaling['rope_type']!r} needs "
                         f"{sorted(missing)}; got {scaling!r}")
    if "factor" in scaling and not scaling["factor"] >= 1:
        raise ValueError(f"rope_scaling factor must be at least 1, got {scaling['factor']}")
    if scaling["rope_type"] == "llama3" and not (
            0 < scaling["low_freq_factor"] < scaling["high_freq_factor"]):
        raise ValueError("llama3 rope_scaling needs 0 < low_freq_factor < high_freq_factor, "
                         f"got {scaling['low_freq_factor']} and {scaling['high_freq_factor']}")


def scale_inv_freq(inv_freq: Tensor, scaling: dict | None) -> Tensor:
    """RoPE frequencies stretched for a longer context.   (head_dim/2,) -> (head_dim/2,)

    linear (position interpolation, Chen et al., 2023): every frequency divided by
    `factor`, so position m * factor turns as far as position m did in training.
    llama3 (Llama 3.1, Dubey et al., 2024, and Meta's reference code): with the
    wavelength lambda_i = 2 pi / theta_i and the training context L,
        lambda_i < L / high_freq_factor   -> kept: these turn many times within L
        lambda_i > L / low_freq_factor    -> divided by factor, as position interpolation
        in between                        -> a smooth mix, with the weight
            s = (L / lambda_i - low_freq_factor) / (high_freq_factor - low_freq_factor)
            theta_i' = (1 - s) theta_i / factor + s theta_i
    """
    check_rope_scaling(scaling)
    kind = "default" if scaling is None else scaling["rope_type"]
    if kind == "default":
        return inv_freq
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv_freq / factor
    context = float(scaling["original_max_position_embeddings"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    wavelength = 2 * torch.pi / inv_freq
    smooth = ((context / wavelength - low) / (high - low)).clamp(0.0, 1.0)
    mixed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelength > context / low, inv_freq / factor, mixed)
    return torch.where(wavelength < context / high, inv_freq, scaled)


def rope_angles(seq_len: int, head_dim: int, rope_theta: float = 10_000.0,
                device: torch.device | str | None = None,
                scaling: dict | None = None) -> Tensor:
    """m * theta_j for every position m and pair j.   -> (seq_len, head_dim // 2) fp32"""
    if seq_len < 0:
        raise ValueError(f"seq_len must be non-negative, got {seq_len}")
    inv_freq = rope_inv_freq(head_dim, rope_theta, scaling).to(device)
    positions = torch.arange(seq_len, device=device, dtype=torch.int64).float()
    return torch.outer(positions, inv_freq)


# ---------------------------------------------------------------------------------------
# RoPE, half-split layout with real arithmetic (HF checkpoints; the model uses this one)


def rope_cos_sin(seq_len: int, head_dim: int, rope_theta: float = 10_000.0,
                 device: torch.device | str | None = None,
                 scaling: dict | None = None) -> tuple[Tensor, Tensor]:
    """cos and sin tables in the half-split layout.   -> two (seq_len, head_dim) fp32 tensors

    Column j and j + head_dim/2 both hold the angle m * theta_j of pair j.
    """
    angles = rope_angles(seq_len, head_dim, rope_theta, device, scaling)  # (seq, hd/2)
    angles = torch.cat([angles, angles], dim=-1)           # (seq_len, head_dim)
    return angles.cos(), angles.sin()


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def _check_rope_input(x: Tensor, table_len: int, table_dim: int, what: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"RoPE expects x of shape (batch, seq, n_heads, head_dim), got "
                         f"{tuple(x.shape)}")
    if x.shape[-1] != table_dim:
        raise ValueError(f"x has head_dim {x.shape[-1]} but the {what} is for head_dim "
                         f"{table_dim}; build the table with the model's head_dim")
    if x.shape[1] != table_len:
        raise ValueError(f"x has {x.shape[1]} positions but the {what} has {table_len} rows; "
                         "slice the table to the positions of x (table[start:start + seq])")


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x by the angles in cos/sin (half-split layout).

    x' = x * cos + rotate_half(x) * sin, i.e. for pair (a, b) = (x_j, x_{j + head_dim/2}):
    a' = a cos - b sin,  b' = a sin + b cos.
    x: (batch, seq, n_heads, head_dim); cos, sin: (seq, head_dim) or (batch, seq, head_dim).
    """
    _check_rope_input(x, cos.shape[-2], cos.shape[-1], "cos/sin table")
    cos = cos.unsqueeze(-2).to(x.dtype)                    # (..., seq, 1, head_dim)
    sin = sin.unsqueeze(-2).to(x.dtype)
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    """RoPE tables for positions 0 .. max_seq_len-1, computed once per device.

    The tables are not buffers: they are derived from the config, never saved in a
    checkpoint, and stay valid when a model is built on the meta device.
    """

    def __init__(self, head_dim: int, max_seq_len: int, rope_theta: float = 10_000.0,
                 scaling: dict | None = None):
        super().__init__()
        rope_inv_freq(head_dim, rope_theta, scaling)  # validates the arguments now
        if not isinstance(max_seq_len, int) or max_seq_len <= 0:
            raise ValueError(f"max_seq_len must be a positive integer, got {max_seq_len!r}")
        self.head_dim, self.max_seq_len, self.rope_theta = head_dim, max_seq_len, rope_theta
        self.scaling = scaling
        self._tables: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def tables(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """cos, sin for every position.   -> two (max_seq_len, head_dim) fp32 tensors"""
        if device not in self._tables:
            self._tables[device] = rope_cos_sin(self.max_seq_len, self.head_dim,
                                                self.rope_theta, device, self.scaling)
        return self._tables[device]

    def forward(self, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """position_ids: (seq,) or (batch, seq) integers -> cos, sin of shape (..., head_dim)."""
        if position_ids.dtype.is_floating_point or position_ids.dtype == torch.bool:
            raise TypeError(f"position_ids must be integers, got dtype {position_ids.dtype}")
        if position_ids.numel() and values_checkable(position_ids):
            low, high = int(position_ids.min()), int(position_ids.max())
            if high >= self.max_seq_len:
                raise ValueError(
                    f"position {high} is beyond the RoPE table of "
                    f"max_seq_len={self.max_seq_len}; raise max_seq_len in the config")
            if low < 0:
                raise ValueError(f"positions must be non-negative, got {low}")
        cos, sin = self.tables(position_ids.device)
        return cos[position_ids], sin[position_ids]

    def extra_repr(self) -> str:
        scaled = "" if self.scaling is None else f", scaling={self.scaling['rope_type']}"
        return (f"head_dim={self.head_dim}, max_seq_len={self.max_seq_len}, "
                f"theta={self.rope_theta:g}{scaled}")


def rope_scores_by_distance(q: Tensor, k: Tensor, max_distance: int,
                            rope_theta: float = 10_000.0) -> Tensor:
    """<R(d) q, R(0) k> for d = 0 .. max_distance: the RoPE score of a query d positions
    after the key (by the relative property, the same for any pair of positions d apart).

    q, k: (head_dim,) in the half-split layout.   -> (max_distance + 1,) in q's dtype
    """
    if q.dim() != 1 or q.shape != k.shape:
        raise ValueError(f"q and k must be 1-D vectors of one head_dim, got {tuple(q.shape)} "
                         f"and {tuple(k.shape)}")
    cos, sin = rope_cos_sin(max_distance + 1, q.shape[0], rope_theta)  # (d, head_dim)
    rotated = apply_rope(q.expand(1, max_distance + 1, 1, -1), cos, sin)  # (1, d, 1, hd)
    return rotated[0, :, 0] @ k.to(rotated.dtype)


# ---------------------------------------------------------------------------------------
# RoPE, interleaved layout with complex numbers (Meta's reference code)


def rope_freqs_cis(seq_len: int, head_dim: int, rope_theta: float = 10_000.0,
                   device: torch.device | str | None = None,
                   scaling: dict | None = None) -> Tensor:
    """e^(i m theta_j) for every position m and pair j (Meta's `precompute_freqs_cis`).

    -> (seq_len, head_dim // 2) complex64. Complex dtypes are not supported on MPS; use
    `rope_cos_sin` there.
    """
    angles = rope_angles(seq_len, head_dim, rope_theta, device, scaling)  # (seq, hd/2)
    return torch.polar(torch.ones_like(angles), angles)    # cos + i sin


def apply_rope_complex(x: Tensor, freqs_cis: Tensor) -> Tensor:
    """Rotate x in the interleaved layout: pair (x_2j, x_2j+1) is the complex number
    x_2j + i x_2j+1, multiplied by e^(i m theta_j).

    x: (batch, seq, n_heads, head_dim); freqs_cis: (seq, head_dim/2) complex.
    -> same shape and dtype as x
    """
    _check_rope_input(x, freqs_cis.shape[-2], 2 * freqs_cis.shape[-1], "freqs_cis table")
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # (b, s, h, hd/2)
    rotated = pairs * freqs_cis.unsqueeze(-2)              # broadcast over the heads
    return torch.view_as_real(rotated).flatten(-2).type_as(x)  # (b, s, h, head_dim)


# ---------------------------------------------------------------------------------------
# Converting q/k projection weights between the two layouts


def _permute_rows(weight: Tensor, n_heads: int, from_interleaved: bool) -> Tensor:
    """Each head's rows viewed as a (head_dim/2, 2) grid (interleaved) or a (2, head_dim/2)
    grid (half-split) and transposed to the other one."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() not in (1, 2):
        raise ValueError("weight must be (n_heads * head_dim, dim) or a 1-D bias, got shape "
                         f"{tuple(weight.shape)}")
    if not isinstance(n_heads, int) or n_heads <= 0:
        raise ValueError(f"n_heads must be a positive integer, got {n_heads!r}")
    rows = weight.shape[0]
    if rows % (2 * n_heads):
        raise ValueError(f"weight has {rows} rows, which is not n_heads ({n_heads}) times an "
                         "even head_dim; for k_proj pass n_kv_heads, not n_heads")
    half = rows // n_heads // 2
    grid = (half, 2) if from_interleaved else (2, half)
    return (weight.reshape(n_heads, *grid, *weight.shape[1:])  # (heads, a, b, dim)
            .transpose(1, 2)                                  # (heads, b, a, dim)
            .reshape(weight.shape))


def interleaved_to_half_split(weight: Tensor, n_heads: int) -> Tensor:
    """Meta -> HF: reorder each head's rows from (x0, x1, x2, x3, ...) pairs (2j, 2j+1) to
    pairs (j, j + head_dim/2), so that half-split RoPE on the new q/k equals interleaved
    RoPE on the old ones (up to the same reordering, which q . k does not see).

    weight: (n_heads * head_dim, dim) rows of q_proj (n_heads) or k_proj (n_kv_heads); a
    1-D bias of length n_heads * head_dim works too.   -> same shape
    """
    return _permute_rows(weight, n_heads, from_interleaved=True)


def half_split_to_interleaved(weight: Tensor, n_heads: int) -> Tensor:
    """HF -> Meta: the inverse of `interleaved_to_half_split`.   -> same shape"""
    return _permute_rows(weight, n_heads, from_interleaved=False)


# ---------------------------------------------------------------------------------------
# Sinusoidal absolute encodings


def sinusoidal(seq_len: int, dim: int, base: float = 10_000.0) -> Tensor:
    """Absolute encodings of the original Transformer (Vaswani et al., 2017).

    PE[pos, 2i] = sin(pos / base^(2i/dim)),  PE[pos, 2i+1] = cos(pos / base^(2i/dim)).
    -> (seq_len, dim)
    """
    if not isinstance(dim, int) or dim <= 0 or dim % 2:
        raise ValueError(f"sinusoidal encodings need an even, positive dim, got {dim!r}")
    if seq_len < 0:
        raise ValueError(f"seq_len must be non-negative, got {seq_len}")
    if base <= 0:
        raise ValueError(f"base must be positive, got {base}")
    inv_freq = _inverse_frequencies(dim, base)                # (dim/2,)
    angles = torch.outer(torch.arange(seq_len).float(), inv_freq)  # (seq_len, dim/2)
    encoding = torch.empty(seq_len, dim)
    encoding[:, 0::2] = angles.sin()
    encoding[:, 1::2] = angles.cos()
    return encoding


# ---------------------------------------------------------------------------------------
# ALiBi


def alibi_slopes(n_heads: int) -> Tensor:
    """Per-head ALiBi slopes (Press et al., 2022).

    For n heads a power of two: the geometric sequence 2^(-8/n), 2^(-16/n), ..., 2^(-8)
    (8 heads: 1/2, 1/4, ..., 1/256). Otherwise the slopes of the nearest lower power of two
    n', then every other slope of 2n' (the ones that fall between them) until there are n.
    -> (n_heads,) fp32
    """
    if not isinstance(n_heads, int) or isinstance(n_heads, bool):
        raise TypeError(f"n_heads must be an int, got {type(n_heads).__name__}")
    if n_heads <= 0:
        raise ValueError(f"n_heads must be positive, got {n_heads}")

    def power_of_two_slopes(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    closest = 2 ** (n_heads.bit_length() - 1)
    slopes = power_of_two_slopes(closest)
    if closest < n_heads:
        slopes += power_of_two_slopes(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes)


def alibi_bias(slopes: Tensor, q_positions: Tensor, k_positions: Tensor) -> Tensor:
    """Linear distance penalty: bias[h, i, j] = -slope_h * (q_i - k_j).

    Only keys at or before the query matter (the causal mask hides the rest).
    slopes (n_heads,), q_positions (q_len,), k_positions (kv_len,) -> (n_heads, q_len, kv_len)
    """
    if slopes.dim() != 1 or q_positions.dim() != 1 or k_positions.dim() != 1:
        raise ValueError("alibi_bias needs 1-D slopes, q_positions and k_positions, got shapes "
                         f"{tuple(slopes.shape)}, {tuple(q_positions.shape)}, "
                         f"{tuple(k_positions.shape)}")
    distance = (q_positions[:, None] - k_positions[None, :]).to(slopes.dtype)
    return -slopes[:, None, None] * distance
