"""bf16 autocast numerics (what ``--trainer.precision bf16-mixed`` runs): the flash-attention rule,
our error against the fp32 reference at most twice transformers' own bf16 error, on CPU autocast."""

from __future__ import annotations

import pytest
import torch

from bert_core import BertModel
from bert_core.sources import resolve_source


@pytest.fixture(scope="module")
def models():
    from transformers import BertModel as ReferenceBert

    source = resolve_source("all-MiniLM-L6-v2").directory
    ours = BertModel.from_pretrained(source).eval()
    reference = ReferenceBert.from_pretrained(source, attn_implementation="sdpa").eval()
    return ours, reference


def mixed_batch(B: int = 8, T: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (B, T), generator=generator)
    lengths = torch.randint(8, T + 1, (B,), generator=generator)
    lengths[0] = T
    ids[:, 0] = 101
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    return ids, mask


@pytest.mark.parametrize("train", [False, True], ids=["inference", "train-mode-no-dropout"])
def test_bf16_error_at_most_twice_the_references(models, train):
    ours, reference = models
    ids, mask = mixed_batch()
    if train:  # the training code path (grad enabled, no in-place GELU), dropout off to compare
        ours = BertModel.from_pretrained(
            resolve_source("all-MiniLM-L6-v2").directory,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        ).train()
    real = mask.bool()
    with torch.set_grad_enabled(train):
        with torch.no_grad():
            exact = reference(input_ids=ids, attention_mask=mask)
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
            theirs = reference(input_ids=ids, attention_mask=mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mine = ours(ids, mask)
    for name in ("last_hidden_state", "pooler_output"):
        want = getattr(exact, name).float()
        their_error = (getattr(theirs, name).float() - want).abs()
        my_error = (getattr(mine, name).detach().float() - want).abs()
        if name == "last_hidden_state":
            their_error, my_error = their_error[real], my_error[real]
        assert my_error.max() <= 2 * their_error.max(), name
        assert my_error.mean() <= 2 * their_error.mean(), name


def test_the_residual_stream_stays_fp32_under_autocast():
    """The residual add is taken in fp32 (as the reference): an in-place add into the bf16
    projection would round the stream to bf16 at every layer."""
    from bert_core import BertConfig
    from bert_core.model import SelfOutput

    torch.manual_seed(0)
    block = SelfOutput(BertConfig(hidden_size=64, num_attention_heads=4, hidden_dropout_prob=0.0)).eval()
    y, residual = torch.randn(16, 64), torch.randn(16, 64) * 10
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out = block(y, residual)
        projected = block.dense(y)  # bf16
    expected = torch.nn.functional.layer_norm(
        projected.float() + residual, (64,), block.LayerNorm.weight, block.LayerNorm.bias, block.LayerNorm.eps
    )
    torch.testing.assert_close(out.float(), expected, atol=1e-5, rtol=0)
