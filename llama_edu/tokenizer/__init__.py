"""Tokenizers (lesson 01), a staircase in three steps, then the course's own tokenizer.

- `bpe`: byte-level BPE from scratch: `ByteLevelBPE`, with a plain trainer (recount every
  pair after each merge) and a fast incremental one that learns the same merges.
- `spm_model`: reading SentencePiece `.model` files (a small protobuf wire-format reader).
- `sentencepiece`: `SentencePieceBPE`, Llama's SentencePiece BPE codec in plain Python,
  id for id equal to the sentencepiece library.
- `course`: `train_tokenizer` and `load_tokenizer`, the course tokenizer with Llama's settings.
- `hf`: the same tokenizer as a `tokenizer.json` that Hugging Face `transformers` loads.
"""

from .bpe import ByteLevelBPE, get_pair_counts, merge, train_fast, train_plain
from .course import TOKENIZER_OPTIONS, load_tokenizer, train_tokenizer
from .sentencepiece import SentencePieceBPE
from .spm_model import SpmModel, parse_model, read_model

__all__ = ["TOKENIZER_OPTIONS", "ByteLevelBPE", "SentencePieceBPE", "SpmModel",
           "get_pair_counts", "load_tokenizer", "merge", "parse_model", "read_model",
           "train_fast", "train_plain", "train_tokenizer"]
