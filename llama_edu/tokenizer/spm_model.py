"""Reading and writing a SentencePiece `.model` file without the protobuf library (lesson 01).

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

Writing is the same records in the other direction: `serialize_model(pieces, trainer_spec,
normalizer_spec)` writes each message's fields in field-number order, as protobuf's own
serializer does, so a file read with `read_specs` and written again comes out byte for byte
(that is how `scripts/build_llama2_tokenizer.py` rebuilds Meta's Llama 2 file exactly).
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


# ---------------------------------------------------------------------------------------
# Every setting, for writing files and reading them back in full

# name: (field number, kind); a list value writes a repeated field. "int" is any varint
# (int32, uint64 or enum); negative values take ten bytes, as protobuf writes an int32.
TRAINER_SPEC_FIELDS = {
    "input": (1, "string"), "model_prefix": (2, "string"), "model_type": (3, "int"),
    "vocab_size": (4, "int"), "accept_language": (5, "string"),
    "self_test_sample_size": (6, "int"), "input_format": (7, "string"),
    "character_coverage": (10, "float"), "input_sentence_size": (11, "int"),
    "mining_sentence_size": (12, "int"), "training_sentence_size": (13, "int"),
    "seed_sentencepiece_size": (14, "int"), "shrinking_factor": (15, "float"),
    "num_threads": (16, "int"), "num_sub_iterations": (17, "int"),
    "max_sentence_length": (18, "int"), "shuffle_input_sentence": (19, "bool"),
    "max_sentencepiece_length": (20, "int"), "split_by_unicode_script": (21, "bool"),
    "split_by_whitespace": (22, "bool"), "split_by_number": (23, "bool"),
    "treat_whitespace_as_suffix": (24, "bool"), "split_digits": (25, "bool"),
    "allow_whitespace_only_pieces": (26, "bool"), "control_symbols": (30, "string"),
    "user_defined_symbols": (31, "string"), "vocabulary_output_piece_score": (32, "bool"),
    "hard_vocab_limit": (33, "bool"), "use_all_vocab": (34, "bool"),
    "byte_fallback": (35, "bool"), "required_chars": (36, "string"), "unk_id": (40, "int"),
    "bos_id": (41, "int"), "eos_id": (42, "int"), "pad_id": (43, "int"),
    "unk_surface": (44, "string"), "unk_piece": (45, "string"), "bos_piece": (46, "string"),
    "eos_piece": (47, "string"), "pad_piece": (48, "string"),
    "train_extremely_large_corpus": (49, "bool"), "enable_differential_privacy": (50, "bool"),
    "differential_privacy_noise_level": (51, "float"),
    "differential_privacy_clipping_threshold": (52, "int"),
    "pretokenization_delimiter": (53, "string"), "seed_sentencepieces_file": (54, "string"),
    "auto_character_coverage": (55, "bool"),
}
NORMALIZER_SPEC_FIELDS = {
    "name": (1, "string"), "precompiled_charsmap": (2, "bytes"), "add_dummy_prefix": (3, "bool"),
    "remove_extra_whitespaces": (4, "bool"), "escape_whitespaces": (5, "bool"),
    "normalization_rule_tsv": (6, "string"),
}
_REPEATED = {"input", "accept_language", "control_symbols", "user_defined_symbols"}
_WIRE_TYPES = {"string": 2, "bytes": 2, "int": 0, "bool": 0, "float": 5}


def _write_varint(value: int) -> bytes:
    """The varint of value; a negative value is written as its 64-bit two's complement."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _write_record(number: int, kind: str, value, what: str) -> bytes:
    key = _write_varint(number << 3 | _WIRE_TYPES[kind])
    if kind in ("string", "bytes"):
        if kind == "string" and not isinstance(value, str):
            raise TypeError(f"{what} must be a str, got {type(value).__name__}")
        if kind == "bytes" and not isinstance(value, bytes):
            raise TypeError(f"{what} must be bytes, got {type(value).__name__}")
        data = value.encode("utf-8") if kind == "string" else value
        return key + _write_varint(len(data)) + data
    if kind == "float":
        return key + struct.pack("<f", value)
    if isinstance(value, float) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer or bool, got {value!r}")
    return key + _write_varint(int(value))


def encode_spec(values: dict, fields: dict, what: str = "spec") -> bytes:
    """One settings message: the given fields (and only those) in field-number order."""
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{what} has no field named {unknown[0]!r}; the fields are "
                         f"{', '.join(fields)}")
    out = bytearray()
    for name in sorted(values, key=lambda name: fields[name][0]):
        number, kind = fields[name]
        items = values[name]
        if name in _REPEATED:
            if isinstance(items, (str, bytes)):
                raise TypeError(f"{what}.{name} is a repeated field: give a list of strings")
        else:
            items = [items]
        for item in items:
            out += _write_record(number, kind, item, f"{what}.{name}")
    return bytes(out)


def decode_spec(data: bytes, fields: dict, what: str = "spec") -> dict:
    """Every field present in one settings message, by name (repeated fields as lists)."""
    by_number = {number: (name, kind) for name, (number, kind) in fields.items()}
    values: dict = {}
    for number, wire_type, value in iter_fields(data):
        if number not in by_number:
            raise WireFormatError(f"{what} has field {number}, which sentencepiece_model.proto "
                                  "does not define")
        name, kind = by_number[number]
        _expect(wire_type, _WIRE_TYPES[kind], f"{what}.{name}")
        if kind == "string":
            value = _text(value, f"{what}.{name}")
        elif kind == "float":
            value = struct.unpack("<f", value)[0]
        elif kind == "bool":
            value = bool(value)
        elif kind == "int":
            value = _int32(value)
        if name in _REPEATED:
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    return values


def _write_piece(piece: Piece) -> bytes:
    """piece and score always, type only when it is not NORMAL (as sentencepiece writes)."""
    out = _write_record(1, "string", piece.text, "SentencePiece.piece")
    out += _write_record(2, "float", piece.score, "SentencePiece.score")
    if piece.type != NORMAL:
        if piece.type not in PIECE_TYPES:
            raise ValueError(f"piece {piece.text!r} has unknown type {piece.type}; the types "
                             f"are {PIECE_TYPES}")
        out += _write_record(3, "int", piece.type, "SentencePiece.type")
    return out


def serialize_model(pieces: list[Piece], trainer_spec: dict, normalizer_spec: dict,
                    denormalizer_spec: dict | None = None) -> bytes:
    """The bytes of a ModelProto: the pieces, then the settings messages.

    The specs are dicts of field name -> value (see TRAINER_SPEC_FIELDS); a field that is
    left out is absent from the file and reads as its .proto default.
    """
    if not pieces:
        raise ValueError("a SentencePiece model needs at least one piece (<unk>)")
    out = bytearray()
    for piece in pieces:
        out += _write_record(1, "bytes", _write_piece(piece), "ModelProto.pieces")
    for number, spec, fields, what in (
            (2, trainer_spec, TRAINER_SPEC_FIELDS, "trainer_spec"),
            (3, normalizer_spec, NORMALIZER_SPEC_FIELDS, "normalizer_spec"),
            (5, denormalizer_spec, NORMALIZER_SPEC_FIELDS, "denormalizer_spec")):
        if spec is not None:
            out += _write_record(number, "bytes", encode_spec(spec, fields, what), what)
    return bytes(out)


def write_model(path: str | Path, pieces: list[Piece], trainer_spec: dict,
                normalizer_spec: dict, denormalizer_spec: dict | None = None) -> Path:
    """Write a `.model` file that sentencepiece and `read_model` both read."""
    path = Path(path)
    path.write_bytes(serialize_model(pieces, trainer_spec, normalizer_spec, denormalizer_spec))
    return path


def read_specs(path_or_data: str | Path | bytes) -> dict[str, dict]:
    """Every setting stored in a `.model` file: {"trainer_spec": {...}, "normalizer_spec":
    {...}} (and "denormalizer_spec" when present), each field by name as decode_spec gives."""
    if isinstance(path_or_data, bytes):
        data, source = path_or_data, "the data"
    else:
        path = Path(path_or_data)
        if not path.is_file():
            raise FileNotFoundError(f"no SentencePiece model at {str(path)!r}: check the path")
        data, source = path.read_bytes(), repr(str(path))
    specs: dict[str, dict] = {}
    names = {2: "trainer_spec", 3: "normalizer_spec", 5: "denormalizer_spec"}
    try:
        for number, wire_type, value in iter_fields(data):
            if number in names:
                what = names[number]
                _expect(wire_type, 2, f"ModelProto.{what}")
                fields = TRAINER_SPEC_FIELDS if number == 2 else NORMALIZER_SPEC_FIELDS
                specs[what] = decode_spec(value, fields, what)
    except WireFormatError as error:
        raise ValueError(f"{source} is not a readable SentencePiece model: {error}") from None
    if "trainer_spec" not in specs:
        raise ValueError(f"{source} has no trainer_spec; is it a SentencePiece .model file?")
    return specs
