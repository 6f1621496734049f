"""The course tokenizer: a SentencePiece BPE model with Llama's settings (lessons 01, 10).

`train_tokenizer` fits one with the sentencepiece library (Kudo & Richardson, 2018) the
way Llama's was made (Touvron et al., 2023): BPE, byte fallback, digits split one by one,
no Unicode normalisation. `load_tokenizer` reads the model file into the course's own
codec, `SentencePieceBPE` (lesson 01), which gives the same ids as sentencepiece.

    >>> tokenizer = load_tokenizer("assets/tokenizer.model")          # doctest: +SKIP
    >>> [tokenizer.id_to_piece(i) for i in tokenizer.encode("in 1984")]  # doctest: +SKIP
    ['▁in', '▁', '1', '9', '8', '4']
"""

from __future__ import annotations

import os
from pathlib import Path

from .sentencepiece import SentencePieceBPE

TOKENIZER_OPTIONS = dict(
    model_type="bpe", vocab_size=4096, byte_fallback=True, split_digits=True,
    normalization_rule_name="identity", add_dummy_prefix=True,
    remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
    character_coverage=0.9995, max_sentence_length=16384, input_sentence_size=0,
    unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2,
)


def train_tokenizer(path: str | os.PathLike, text: str | None = None,
                    vocab_size: int = 4096) -> Path:
    """Fit a SentencePiece BPE model on `text` (default: the course corpus); write `path`.

    Llama's settings: BPE, byte fallback (any UTF-8 text encodes, unknown characters become
    <0xNN> byte pieces), digits split one by one, no Unicode normalisation. One thread and
    every input line, so the same text always gives the same model file.
    """
    import io

    import sentencepiece as spm

    from ..files import write_bytes

    if text is None:
        from ..data import course_text

        text = course_text()
    lines = [line for line in text.splitlines() if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model,
                                   **{**TOKENIZER_OPTIONS, "vocab_size": vocab_size})
    return write_bytes(path, model.getvalue())


def load_tokenizer(path: str | os.PathLike) -> SentencePieceBPE:
    """The course tokenizer from a SentencePiece model file: the course's own
    `SentencePieceBPE` (lesson 01), id for id equal to sentencepiece.

    It offers encode(text, bos=False, eos=False), decode(ids), id_to_piece(i), vocab_size,
    bos_id and eos_id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer model at {str(path)!r}; train one with "
                                "llama_edu.tokenizer.train_tokenizer(path)")
    return SentencePieceBPE.from_file(path)
