"""Tokenizers (lesson 01), a staircase in three steps.

- `bpe`: byte-level BPE from scratch: `ByteLevelBPE`, with a plain trainer (recount every
  pair after each merge) and a fast incremental one that learns the same merges.
- `spm_model`: reading SentencePiece `.model` files (a small protobuf wire-format reader).
- `sentencepiece`: `SentencePieceBPE`, Llama's SentencePiece BPE codec in plain Python,
  id for id equal to the sentencepiece library.
- `tiktoken_bpe`: Llama 3's scheme, BPE by rank from a tiktoken file, id for id equal to
  tiktoken; `pretrained`: the real Llama 2 and Llama 3 tokenizers shipped in assets/.
"""

from .bpe import ByteLevelBPE, get_pair_counts, merge, train_fast, train_plain
from .sentencepiece import SentencePieceBPE
from .spm_model import SpmModel, parse_model, read_model

__all__ = ["ByteLevelBPE", "SentencePieceBPE", "SpmModel", "get_pair_counts", "merge",
           "parse_model", "read_model", "train_fast", "train_plain"]

from .bpe import GPT2_SPLIT, LLAMA3_SPLIT  # noqa: E402
from .pretrained import (  # noqa: E402
    LLAMA2_TOKENIZER,
    LLAMA3_TOKENIZER,
    load_llama2_tokenizer,
    load_llama3_tokenizer,
)
from .spm_model import read_specs, serialize_model, write_model  # noqa: E402
from .tiktoken_bpe import LLAMA3_SPECIAL_TOKENS, read_tiktoken, write_tiktoken  # noqa: E402

__all__ += ["GPT2_SPLIT", "LLAMA2_TOKENIZER", "LLAMA3_SPECIAL_TOKENS", "LLAMA3_SPLIT",
            "LLAMA3_TOKENIZER", "load_llama2_tokenizer", "load_llama3_tokenizer", "read_specs",
            "read_tiktoken", "serialize_model", "write_model", "write_tiktoken"]
