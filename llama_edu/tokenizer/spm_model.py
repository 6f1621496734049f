"""Reading a SentencePiece `.model` file without the protobuf library (lesson 01).

A `.model` file is one protobuf message, `ModelProto` (sentencepiece_model.proto):

    ModelProto      1: pieces (repeated SentencePiece)   2: trainer_spec   3: normalizer_spec
                    5: denormalizer_spec
    SentencePiece   1: piece (string)   2: score (float)   3: type (enum, NORMAL = 1)
    TrainerSpec     3: model_type (UNIGRAM = 1, BPE = 2)   25: split_digits
                    35: byte_fallback   24: treat_whitespace_as_suffix   45-48: special pieces
    NormalizerSpec  1: name   2: precompiled_charsmap   3: add_dummy_prefix
                    4: remove_extra_whitespaces   5: escape_whitespaces

The protobuf wire format is a flat list of (field number, wire type, value) records: the key
is a varint `field << 3 | wire_type`; wire type 0 is a varint, 1 eight bytes, 2 a length
then that many bytes (strings and nested messages), 5 four bytes. Fields that are absent
take the defaults written in the .proto file (proto2), which `TrainerSpec` and
`NormalizerSpec` below repeat.

    >>> model = read_model("assets/tokenizer.model")          # doctest: +SKIP
    >>> model.pieces[3], model.trainer_spec.byte_fallback      # doctest: +SKIP
    (Piece(text='<0x00>', score=0.0, type=6), True)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

# ModelProto.SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
PIECE_TYPES = {NORMAL: "NORMAL", UNKNOWN: "UNKNOWN", CONTROL: "CONTROL",
               USER_DEFINED: "USER_DEFINED", UNUSED: "UNUSED", BYTE: "BYTE"}
# TrainerSpec.ModelType
MODEL_TYPES = {1: "UNIGRAM", 2: "BPE", 3: "WORD", 4: "CHAR"}
BPE = 2


@dataclass(frozen=True)
class Piece:
    """One vocabulary entry: its text (with ▁ for a space), score and type."""
    text: str
    score: float = 0.0
    type: int = NORMAL


@dataclass
class TrainerSpec:
    """The trainer settings the codec needs, with the .proto defaults."""
    model_type: int = 1
    vocab_size: int = 8000
    split_digits: bool = False
    byte_fallback: bool = False
    treat_whitespace_as_suffix: bool = False
    unk_piece: str = "<unk>"
    bos_piece: str = "<s>"
    eos_piece: str = "</s>"
    pad_piece: str = "<pad>"
    unk_surface: str = " \u2047 "


@dataclass
class NormalizerSpec:
    """How raw text becomes the text the pieces are cut from, with the .proto defaults."""
    name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


@dataclass
class SpmModel:
    """The parts of a SentencePiece ModelProto that encoding and decoding use."""
    pieces: list[Piece]
    trainer_spec: TrainerSpec = field(default_factory=TrainerSpec)
    normalizer_spec: NormalizerSpec = field(default_factory=NormalizerSpec)
    denormalizer_spec: NormalizerSpec | None = None

    @property
    def model_type(self) -> str:
        return MODEL_TYPES.get(self.trainer_spec.model_type, str(self.trainer_spec.model_type))


# ---------------------------------------------------------------------------------------
# The wire format

class WireFormatError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """Little-endian base-128 integer starting at pos -> (value, next position)."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise WireFormatError(f"the data ends inside a varint at byte {pos}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise WireFormatError(f"a varint longer than 10 bytes ends at byte {pos}")


def iter_fields(data: bytes):
    """Yield (field_number, wire_type, value) for each record of one message.

    value is an int for wire type 0 and the raw bytes for wire types 1, 2 and 5.
    """
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireFormatError(f"field number 0 at byte {pos} is not allowed")
        if wire_type == 0:
            value, pos = _varint(data, pos)
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            if pos + size > end:
                raise WireFormatError(f"the data ends inside a {size}-byte field at byte {pos}")
            value, pos = data[pos:pos + size], pos + size
        elif wire_type == 2:
            size, pos = _varint(data, pos)
            if pos + size > end:
                raise WireFormatError(f"a {size}-byte field at byte {pos} runs past the end "
                                      f"of the data ({end} bytes)")
            value, pos = data[pos:pos + size], pos + size
        else:
            raise WireFormatError(f"wire type {wire_type} (field {number}) at byte {pos} is "
                                  "not used by SentencePiece models")
        yield number, wire_type, value


def _int32(value: int) -> int:
    """Negative int32 values are sent as 64-bit two's complement varints."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as error:
        raise WireFormatError(f"{what} is not valid UTF-8: {error}") from None


def _expect(wire_type: int, wanted: int, what: str) -> None:
    if wire_type != wanted:
        raise WireFormatError(f"{what} has wire type {wire_type}, expected {wanted}")


# ---------------------------------------------------------------------------------------
# The messages

def _parse_piece(data: bytes) -> Piece:
    text, score, kind = "", 0.0, NORMAL
    for number, wire_type, value in iter_fields(data):
        if number == 1:
            _expect(wire_type, 2, "SentencePiece.piece")
            text = _text(value, "a piece")
        elif number == 2:
            _expect(wire_type, 5, "SentencePiece.score")
            score = struct.unpack("<f", value)[0]
        elif number == 3:
            _expect(wire_type, 0, "SentencePiece.type")
            kind = value
    return Piece(text, score, kind)


_TRAINER_FIELDS = {  # field number: (attribute, kind)
    3: ("model_type", int), 4: ("vocab_size", int), 25: ("split_digits", bool),
    35: ("byte_fallback", bool), 24: ("treat_whitespace_as_suffix", bool),
    45: ("unk_piece", str), 46: ("bos_piece", str), 47: ("eos_piece", str),
    48: ("pad_piece", str), 44: ("unk_surface", str),
}
_NORMALIZER_FIELDS = {
    1: ("name", str), 2: ("precompiled_charsmap", bytes), 3: ("add_dummy_prefix", bool),
    4: ("remove_extra_whitespaces", bool), 5: ("escape_whitespaces", bool),
}


def _parse_spec(data: bytes, spec, fields: dict, what: str):
    for number, wire_type, value in iter_fields(data):
        if number not in fields:
            continue  # settings that only the trainer reads
        name, kind = fields[number]
        if kind in (str, bytes):
            _expect(wire_type, 2, f"{what}.{name}")
            setattr(spec, name, value if kind is bytes else _text(value, f"{what}.{name}"))
        else:
            _expect(wire_type, 0, f"{what}.{name}")
            setattr(spec, name, bool(value) if kind is bool else _int32(value))
    return spec


def parse_model(data: bytes, source: str = "the data") -> SpmModel:
    """Parse the bytes of a SentencePiece ModelProto; errors name `source`."""
    pieces: list[Piece] = []
    trainer = normalizer = denormalizer = None
    try:
        for number, wire_type, value in iter_fields(data):
            if number == 1:
                _expect(wire_type, 2, "ModelProto.pieces")
                pieces.append(_parse_piece(value))
            elif number == 2:
                _expect(wire_type, 2, "ModelProto.trainer_spec")
                trainer = _parse_spec(value, TrainerSpec(), _TRAINER_FIELDS, "trainer_spec")
            elif number == 3:
                _expect(wire_type, 2, "ModelProto.normalizer_spec")
                normalizer = _parse_spec(value, NormalizerSpec(), _NORMALIZER_FIELDS,
                                         "normalizer_spec")
            elif number == 5:
                _expect(wire_type, 2, "ModelProto.denormalizer_spec")
                denormalizer = _parse_spec(value, NormalizerSpec(), _NORMALIZER_FIELDS,
                                           "denormalizer_spec")
    except WireFormatError as error:
        raise ValueError(f"{source} is not a readable SentencePiece model (is it truncated "
                         f"or another kind of file?): {error}") from None
    if not data:
        raise ValueError(f"{source} is empty; expected a SentencePiece .model file")
    if not pieces:
        raise ValueError(f"{source} holds no vocabulary pieces; is it a SentencePiece .model "
                         "file?")
    if trainer is None or normalizer is None:
        missing = "trainer_spec" if trainer is None else "normalizer_spec"
        raise ValueError(f"{source} has no {missing}: the file looks truncated (SentencePiece "
                         "writes pieces first, then the trainer and normalizer settings)")
    return SpmModel(pieces, trainer, normalizer, denormalizer)


def read_model(path: str | Path) -> SpmModel:
    """Read and parse a `.model` file; raises FileNotFoundError or ValueError with the cause."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no SentencePiece model at {str(path)!r}: check the path "
                                "(train one with sentencepiece.SentencePieceTrainer.train)")
    return parse_model(path.read_bytes(), source=repr(str(path)))
