"""The model compiles: training forward and backward in one graph, cached decoding in two."""

import pytest
import torch

from llama_edu.model import Llama, LlamaConfig
from llama_edu.numerics import assert_close, model_shape
from llama_edu.train import lm_loss

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def fresh_compiler():
    """Each test counts its own graphs: forget what earlier compilations cached."""
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def counting_backend(graphs: list):
    """A torch.compile backend that records each graph it is given and runs it eagerly."""
    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward
    return backend


def test_training_step_compiles_in_one_graph_and_equals_eager():
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("micro"))
    tokens = torch.randint(0, 256, (2, 17))
    eager_loss = lm_loss(model(tokens[:, :-1]), tokens[:, 1:])
    eager_loss.backward()
    eager = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True)    # a graph break would raise here
    loss = lm_loss(compiled(tokens[:, :-1]), tokens[:, 1:])
    loss.backward()
    shape = model_shape(model.config)
    assert_close(loss, eager_loss, **shape)
    for name, param in model.named_parameters():     # backward adds about one more pass
        assert_close(param.grad, eager[name], reduction=shape["reduction"],
                     depth=2 * shape["depth"], msg=name)


def test_cached_decoding_compiles_to_one_prefill_and_one_decode_graph():
    torch.manual_seed(1)
    model = Llama(LlamaConfig.from_preset("micro")).eval()
    tokens = torch.randint(0, 256, (1, 16))
    graphs = []
    compiled = torch.compile(model, backend=counting_backend(graphs), fullgraph=True)
    with torch.no_grad():
        full = model(tokens)
        cache = model.make_cache(1, 16)
        steps = [compiled(tokens[:, :4], 0, cache)]                     # prefill
        steps += [compiled(tokens[:, t:t + 1], t, cache) for t in range(4, 16)]
    assert_close(torch.cat(steps, 1), full, **model_shape(model.config))
    # the decode position is a dynamic size: 12 steps reuse one graph, no recompiles
    assert len(graphs) == 2, f"{len(graphs)} graphs for one prefill and 12 decode steps"
