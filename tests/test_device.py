import pytest
import torch

from llama_edu.device import describe, pick_device, seed_everything


def test_pick_device_prefers_what_is_asked_and_defaults_to_an_available_one(monkeypatch):
    monkeypatch.delenv("LLAMA_EDU_DEVICE", raising=False)
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type in {"cuda", "mps", "cpu"}
    monkeypatch.setenv("LLAMA_EDU_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")


def test_unknown_or_missing_devices_are_explained():
    with pytest.raises(ValueError, match="use one of cuda, mps, cpu"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")


def test_seeding_repeats_random_draws():
    seed_everything(3)
    a = torch.randn(4)
    seed_everything(3)
    assert torch.equal(a, torch.randn(4))


def test_describe_names_torch_and_the_device():
    line = describe(torch.device("cpu"))
    assert torch.__version__ in line and "device cpu" in line
