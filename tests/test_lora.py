"""LoRA from scratch: equal to peft's on the same weights, exact merging, the paper's counts."""

import pytest
import torch

from llama_edu.lora import (
    LoRALinear,
    apply_lora,
    lora_parameter_count,
    merge_lora,
    trainable_parameters,
)
from llama_edu.model import Llama, LlamaConfig
from llama_edu.numerics import assert_close, model_shape

peft = pytest.importorskip("peft")


def _micro(seed=0):
    torch.manual_seed(seed)
    return Llama(LlamaConfig.from_preset("micro")).eval()


def _randomize_adapters(model):
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_A.normal_(generator=generator)
                module.lora_B.normal_(generator=generator)   # nonzero: the update matters


@pytest.mark.parametrize("targets, r, alpha", [
    (("q_proj", "v_proj"), 8, 16.0),
    (("q_proj", "k_proj", "o_proj", "down_proj"), 4, 4.0),
])
def test_outputs_equal_peft_lora_on_the_same_weights(targets, r, alpha):
    base = _micro()
    ours = apply_lora(_micro(), targets, r=r, alpha=alpha)
    _randomize_adapters(ours)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets),
                             lora_dropout=0.0, bias="none")
    theirs = peft.inject_adapter_in_model(config, base)
    with torch.no_grad():
        for name, module in ours.named_modules():
            if isinstance(module, LoRALinear):
                wrapped = theirs.get_submodule(name)
                wrapped.lora_A["default"].weight.copy_(module.lora_A)
                wrapped.lora_B["default"].weight.copy_(module.lora_B)
    tokens = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        assert_close(ours(tokens), theirs(tokens), **model_shape(ours.config))
    lora_names = [n for n, p in ours.named_parameters() if p.requires_grad]
    assert lora_names and all("lora_" in n for n in lora_names)
    assert trainable_parameters(ours) == lora_parameter_count(ours.config, targets, r)


def test_a_fresh_adapter_leaves_the_model_as_it_was_and_merging_is_exact():
    base, adapted = _micro(), apply_lora(_micro())
    tokens = torch.randint(0, 256, (2, 10))
    with torch.no_grad():
        assert torch.equal(adapted(tokens), base(tokens))        # B = 0: no change at start
        _randomize_adapters(adapted)
        before = adapted(tokens)
        merged = merge_lora(adapted)
        assert not any(isinstance(m, LoRALinear) for m in merged.modules())
        # W + s B A computed once: the same sums as x W^T + s (x A^T) B^T, reordered
        assert_close(merged(tokens), before, **model_shape(merged.config))


def test_only_the_adapters_receive_gradients():
    model = apply_lora(_micro())
    model.train()
    tokens = torch.randint(0, 256, (2, 10))
    model(tokens).sum().backward()
    for name, param in model.named_parameters():
        assert (param.grad is not None) == ("lora_" in name), name


def test_llama2_7b_counts_as_the_lesson_says():
    config = LlamaConfig.from_preset("llama2-7b")
    assert lora_parameter_count(config, ("q_proj", "v_proj"), r=8) == 4_194_304
    with torch.device("meta"):
        model = apply_lora(Llama(config), ("q_proj", "v_proj"), r=8)
    assert trainable_parameters(model) == 4_194_304


@pytest.mark.parametrize("kwargs, message", [
    ({"r": 0}, "r must be a positive integer"),
    ({"r": 1000}, "at most min"),
])
def test_bad_adapters_say_what_to_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoRALinear(torch.nn.Linear(8, 8), **kwargs)
    with pytest.raises(ValueError, match="no nn.Linear named"):
        apply_lora(_micro(), targets=("qkv",))
