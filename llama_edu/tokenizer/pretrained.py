"""The real Llama 2 and Llama 3 tokenizers, shipped in assets/ (lesson 01).

Both files are Meta's, rebuilt byte for byte from npm packages that embed their vocabularies
(scripts/build_llama2_tokenizer.py, scripts/build_llama3_tokenizer.py); each folder's
PROVENANCE.md says how, and its LICENSE and NOTICE the Llama Community License that governs
it. Loading checks the sha256, so an edited or truncated file is caught at once.

    >>> sp = load_llama2_tokenizer()                                        # doctest: +SKIP
    >>> sp.encode("Who is the 45th President of the United States?", bos=True)  # doctest: +SKIP
    [1, 11644, 338, 278, 29871, 29946, 29945, 386, 7178, 310, 278, 3303, 3900, 29973]
    >>> load_llama3_tokenizer().encode("Hello world")                       # doctest: +SKIP
    [9906, 1917]
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .bpe import ByteLevelBPE
from .sentencepiece import SentencePieceBPE

ASSETS = Path(__file__).resolve().parents[2] / "assets"
LLAMA2_TOKENIZER = ASSETS / "llama2" / "tokenizer.model"
LLAMA3_TOKENIZER = ASSETS / "llama3" / "tokenizer.model"
LLAMA2_SHA256 = "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347"
LLAMA3_SHA256 = "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"


def _checked(path: Path, sha256: str, script: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer at {str(path)!r}; it ships with the course "
                                f"(rebuild it with python scripts/{script})")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise ValueError(f"{str(path)!r} has sha256 {digest}, not Meta's {sha256}: the file "
                         f"was changed; restore it (git checkout) or rebuild it with python "
                         f"scripts/{script}")
    return path


def load_llama2_tokenizer() -> SentencePieceBPE:
    """Llama 2's SentencePiece BPE tokenizer (32,000 pieces) as our SentencePieceBPE."""
    path = _checked(LLAMA2_TOKENIZER, LLAMA2_SHA256, "build_llama2_tokenizer.py")
    return SentencePieceBPE.from_file(path)


def load_llama3_tokenizer() -> ByteLevelBPE:
    """Llama 3's tiktoken BPE (128,000 ranks, 256 special tokens) as our ByteLevelBPE."""
    path = _checked(LLAMA3_TOKENIZER, LLAMA3_SHA256, "build_llama3_tokenizer.py")
    return ByteLevelBPE.from_tiktoken(path)
