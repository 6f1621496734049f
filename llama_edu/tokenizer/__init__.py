"""Tokenizers (lesson 01), a staircase in three steps, then the course's own tokenizer.

- `bpe`: byte-level BPE from scratch: `ByteLevelBPE`, with a plain trainer (recount every
  pair after each merge) and a fast incremental one that learns the same merges.
- `spm_model`: reading SentencePiece `.model` files (a small protobuf wire-format reader).
- `sentencepiece`: `SentencePieceBPE`, Llama's SentencePiece BPE codec in plain Python,
  id for id equal to the sentencepiece library.
- `course`: `train_tokenizer` and `load_tokenizer`, the course tokenizer with Llama's settings.
- `hf`: the same tokenizer as a `tokenizer.json` that Hugging Face `transformers` loads.
- `tiktoken_bpe`: Llama 3's scheme, BPE by rank from a tiktoken file, id for id equal to
  tiktoken; `pretrained`: the real Llama 2 and Llama 3 tokenizers shipped in assets/.
"""

from .bpe import (
    GPT2_SPLIT,
    LLAMA3_SPLIT,
    ByteLevelBPE,
    get_pair_counts,
    merge,
    train_fast,
    train_plain,
)
from .course import TOKENIZER_OPTIONS, load_tokenizer, train_tokenizer
from .pretrained import (
    LLAMA2_TOKENIZER,
    LLAMA3_TOKENIZER,
    load_llama2_tokenizer,
    load_llama3_tokenizer,
)
from .sentencepiece import SentencePieceBPE
from .spm_model import SpmModel, parse_model, read_model, read_specs, serialize_model, write_model
from .tiktoken_bpe import LLAMA3_SPECIAL_TOKENS, read_tiktoken, write_tiktoken

__all__ = ["GPT2_SPLIT", "LLAMA2_TOKENIZER", "LLAMA3_SPECIAL_TOKENS", "LLAMA3_SPLIT",
           "LLAMA3_TOKENIZER", "TOKENIZER_OPTIONS", "ByteLevelBPE", "SentencePieceBPE",
           "SpmModel", "get_pair_counts", "load_llama2_tokenizer", "load_llama3_tokenizer",
           "load_tokenizer", "merge", "parse_model", "read_model", "read_specs",
           "read_tiktoken", "serialize_model", "train_fast", "train_plain", "train_tokenizer",
           "write_model", "write_tiktoken"]
