"""The course tokenizer as Hugging Face `transformers` reads it (lessons 01 and 09).

`transformers` turns a SentencePiece `tokenizer.model` into its own tokenizer only with the
protobuf package; from a `tokenizer.json` it needs nothing else. `save_hf_tokenizer` writes
that file (and `tokenizer_config.json`) beside the model file, built the way transformers'
own converter builds a Llama tokenizer:

- vocabulary: the pieces in id order; merges: transformers' `generate_merges`, every way of
  writing a piece as two pieces, ranked by the merged piece's id (a BPE model's ids follow
  its merge order);
- normalizer: prepend "▁" and replace every space by "▁" (SentencePiece's dummy prefix and
  whitespace escape); no pre-tokenizer, since no piece spans a word boundary;
- BPE with byte fallback; the decoder undoes all of it; `<s>` is added in front.

We keep the prepend in the normalizer, as transformers' "legacy" Llama converter does,
because the newer Metaspace pre-tokenizer skips the dummy prefix when a text already
starts with a space, and SentencePiece does not. `tokenizer_class` is `TokenizersBackend`,
which loads tokenizer.json as it is (`LlamaTokenizer` would rebuild it with Metaspace).
`split_special_tokens` keeps "<s>" typed in a text as text, as SentencePiece does.
tests/test_checkpoint.py holds the result id for id equal to `SentencePieceBPE`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .spm_model import BPE, read_model

HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def hf_tokenizer_problem(model_path: str | os.PathLike) -> str | None:
    """Why this SentencePiece model cannot be written as tokenizer.json (None if it can)."""
    model = read_model(model_path)
    trainer, norm = model.trainer_spec, model.normalizer_spec
    problems = [
        (trainer.model_type != BPE, f"it is a {model.model_type} model, not BPE"),
        (bool(norm.precompiled_charsmap), f"it normalises text ({norm.name!r})"),
        (not norm.add_dummy_prefix, "it adds no dummy prefix"),
        (norm.remove_extra_whitespaces, "it removes extra whitespace"),
        (trainer.treat_whitespace_as_suffix, "it treats whitespace as a suffix"),
    ]
    found = [why for bad, why in problems if bad]
    return "; ".join(found) or None


def hf_tokenizer(model_path: str | os.PathLike, max_length: int | None = None):
    """A `transformers` tokenizer giving the same ids as SentencePieceBPE(model_path)."""
    import transformers
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE as BPEModel
    from transformers.tokenization_utils_base import generate_merges

    problem = hf_tokenizer_problem(model_path)
    if problem:
        raise ValueError(f"{str(model_path)!r} cannot be written as a tokenizer.json that "
                         f"matches it: {problem}")
    model = read_model(model_path)
    vocab = {piece.text: i for i, piece in enumerate(model.pieces)}
    spec = model.trainer_spec
    unk, bos, eos = spec.unk_piece, spec.bos_piece, spec.eos_piece
    backend = Tokenizer(BPEModel(vocab=vocab, merges=generate_merges(vocab), unk_token=unk,
                                 fuse_unk=True, byte_fallback=spec.byte_fallback))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in (unk, bos, eos) if t in vocab])
    extra = {"model_max_length": max_length} if max_length else {}
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token=unk, bos_token=bos, eos_token=eos,
        split_special_tokens=True, clean_up_tokenization_spaces=False, **extra)


def save_hf_tokenizer(model_path: str | os.PathLike, directory: str | os.PathLike,
                      max_length: int | None = None) -> list[Path]:
    """Write tokenizer.json (compact) and tokenizer_config.json into `directory`."""
    from ..files import atomic_write, write_bytes

    tokenizer = hf_tokenizer(model_path, max_length)
    directory = Path(directory)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer.save_pretrained(scratch)
        config = (Path(scratch) / "tokenizer_config.json").read_bytes()
    written = [atomic_write(directory / "tokenizer.json",
                            lambda tmp: tokenizer.backend_tokenizer.save(str(tmp), pretty=False)),
               write_bytes(directory / "tokenizer_config.json", config)]
    return written
