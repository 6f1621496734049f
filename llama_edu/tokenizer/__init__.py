"""Tokenizers (lesson 01), a staircase in three steps.

- `bpe`: byte-level BPE, trained from scratch, a plain trainer and a fast incremental one.
- `spm_model`: reading SentencePiece `.model` files (a small protobuf wire-format reader).
- `sentencepiece`: Llama's SentencePiece BPE codec, id for id equal to the sentencepiece library.
"""

from .sentencepiece import SentencePieceBPE
from .spm_model import SpmModel, parse_model, read_model

__all__ = ["SentencePieceBPE", "SpmModel", "parse_model", "read_model"]
