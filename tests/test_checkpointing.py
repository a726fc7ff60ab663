"""Activation checkpointing (``gradient_checkpointing_enable``): the same gradients as the plain
path, dropout off and on (the recomputation replays the RNG state, so the masks match), on the
packed layout, under bf16 autocast, for the [CLS]-only last layer; and far fewer saved activations.
Also ``--model.compile``: the compiled layers equal eager."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from bert_core import BertConfig, BertModel


def tiny(dropout: float) -> BertModel:
    torch.manual_seed(0)
    sizes = dict(
        vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64
    )
    rates = dict(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    config = BertConfig(**sizes, **rates, max_position_embeddings=64)
    return BertModel(config).train()


def batch() -> dict[str, torch.Tensor]:
    """Rows of 29, 20, 9 and 30 real tokens: the packed layout, in two attention groups with padding."""
    generator = torch.Generator().manual_seed(1)
    lengths = [29, 20, 9, 30]
    ids = torch.randint(1, 100, (len(lengths), 32), generator=generator)
    mask = (torch.arange(32) < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def gradients(
    model: BertModel, checkpointing: bool, seed: int = 0, cls_only: bool = False, bf16: bool = False
):
    model.zero_grad(set_to_none=True)
    model.gradient_checkpointing_enable(checkpointing)
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(**batch(), cls_only=cls_only)
        loss = out.last_hidden_state.float().pow(2).sum() + out.pooler_output.float().sum()
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same(expected: dict, got: dict, atol: float) -> None:
    assert expected.keys() == got.keys() and len(expected) > 40
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["dropout-off", "dropout-on"])
@pytest.mark.parametrize("cls_only", [False, True], ids=["all-tokens", "cls-only"])
def test_checkpointed_gradients_equal_the_plain_ones(dropout, cls_only):
    model = tiny(dropout)
    plain = gradients(model, checkpointing=False, cls_only=cls_only)
    assert_same(plain, gradients(model, checkpointing=True, cls_only=cls_only), atol=1e-6)
    if dropout:  # the comparison can fail: another seed's masks give other gradients
        other = gradients(model, checkpointing=False, seed=1, cls_only=cls_only)
        assert max((other[n] - plain[n]).abs().max() for n in plain) > 1e-3


def test_checkpointed_gradients_under_bf16_autocast():
    model = tiny(0.1)
    plain = gradients(model, checkpointing=False, bf16=True)
    # the same bf16 operations recomputed: equal up to bf16 rounding of the recomputed ones
    scale = max(g.abs().max() for g in plain.values())
    assert_same(plain, gradients(model, checkpointing=True, bf16=True), atol=1e-2 * float(scale))


def saved_bytes(model: BertModel, checkpointing: bool) -> int:
    """Bytes of the tensors autograd keeps for the backward (parameters excluded)."""
    model.gradient_checkpointing_enable(checkpointing)
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**batch()).last_hidden_state.sum()
    return sum(seen.values())


def test_checkpointing_keeps_a_fraction_of_the_activations():
    model = tiny(0.1)
    plain, checkpointed = saved_bytes(model, False), saved_bytes(model, True)
    assert checkpointed < plain / 3, (plain, checkpointed)  # 4 layers: each layer's input only


def test_checkpointing_is_off_in_eval_and_without_grad():
    model = tiny(0.0).eval()
    model.gradient_checkpointing_enable()
    with torch.no_grad():
        expected = model(**batch()).last_hidden_state
    model.gradient_checkpointing_enable(False)
    with torch.no_grad():
        assert torch.equal(model(**batch()).last_hidden_state, expected)


# -- --model.compile: torch.compile of the layers ------------------------------------------------


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_layers_equal_eager(backend):
    """fp32, dropout off: outputs and gradients within 1e-5 (relative to their scale) of eager.
    ``aot_eager`` checks the tracing (graph breaks, our autograd Functions, dynamic N) in seconds;
    ``inductor``, the default backend, generates and compiles C++: minutes on 2 busy cores."""
    if backend == "inductor":
        if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
            pytest.skip("no C compiler: inductor cannot build its CPU kernels here")
        if not os.environ.get("BERT_TASKS_COMPILE_TEST"):
            pytest.skip("inductor compiles C++ for minutes on 2 cores: set BERT_TASKS_COMPILE_TEST=1")
    torch._dynamo.reset()
    model = tiny(0.0)
    expected = gradients(model, checkpointing=False)
    model.compile_layers(backend=backend)
    try:
        got = gradients(model, checkpointing=False)
    finally:
        torch._dynamo.reset()
    scale = max(float(g.abs().max()) for g in expected.values())
    assert_same(expected, got, atol=1e-5 * scale)
