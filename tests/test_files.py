"""Atomic writes and readers that name a damaged file."""

import json

import pytest
import torch

from llama_edu.files import (
    DamagedFileError,
    atomic_write,
    read_json,
    read_safetensors,
    save_safetensors,
    write_json,
)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_json(tmp_path / "state.json", {"step": 1, "note": "小猫"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"step": 1, "note": "小猫"}

    def crash(tmp):
        tmp.write_text('{"step": 2', encoding="utf-8")        # half written, then a crash
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert read_json(target) == {"step": 1, "note": "小猫"}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_json_faults_are_named(tmp_path):
    path = tmp_path / "c.json"
    for data, words in ((b"", "is empty"), (b"\xff\xfe", "is not UTF-8"),
                        (b'{"a": 1', "it ends early"), (b"[1]", "holds a JSON list")):
        path.write_bytes(data)
        with pytest.raises(DamagedFileError, match=words) as error:
            read_json(path)
        assert str(error.value).startswith(f"'{path}' ")
    with pytest.raises(FileNotFoundError, match=r"no file at .*missing.json' \(expected a JSON"):
        read_json(tmp_path / "missing.json")


def test_safetensors_faults_are_named_before_the_library_sees_them(tmp_path):
    path = save_safetensors(tmp_path / "w.safetensors", {"w": torch.arange(6.0)})
    assert torch.equal(read_safetensors(path)["w"], torch.arange(6.0))
    data = path.read_bytes()
    for damaged, words in ((data[:-4], "is truncated: its header promises"),
                           (data[:5], "too short"),
                           (b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!",
                            "its header is not JSON")):
        path.write_bytes(damaged)
        with pytest.raises(DamagedFileError, match=words):
            read_safetensors(path)
