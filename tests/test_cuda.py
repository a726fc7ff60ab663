"""The CUDA path (skipped without a GPU): flash attention's varlen kernel against the SDPA grids,
SDPA with dropout in training, and fused AdamW on the device, all under bf16 autocast."""

from __future__ import annotations

import pytest
import torch

import bert_core.kernels as kernels
from bert_core import BertConfig, BertModel
from tasks.module import fused_adamw_supported

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def small_bert(attention_dropout: float = 0.0) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=1000,
        hidden_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,  # head size 64
        intermediate_size=512,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=attention_dropout,
    )
    return BertModel(config).cuda()


def mixed_batch(B: int = 8, T: int = 61) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(2, T + 1, (B,), generator=generator)
    lengths[0] = T
    ids = torch.randint(1, 1000, (B, T), generator=generator)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    return (ids * mask).cuda(), mask.cuda()


@pytest.mark.parametrize("cls_only", [False, True])
def test_varlen_kernel_matches_the_sdpa_grids_in_bf16(cls_only: bool, monkeypatch) -> None:
    model = small_bert().eval()
    ids, mask = mixed_batch()
    calls = []
    kernel = kernels.varlen_kernel()

    def counted(*args, **kwargs):
        calls.append(1)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(kernels, "varlen_attn", counted)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        varlen = model(ids, mask, cls_only=cls_only)
        assert len(calls) == model.config.num_hidden_layers
        monkeypatch.setattr(kernels, "varlen_supported", lambda x: False)
        grids = model(ids, mask, cls_only=cls_only)
        monkeypatch.undo()
    with torch.no_grad():
        exact = model(ids, mask, cls_only=cls_only)  # fp32
    real = mask.bool() if not cls_only else torch.ones(len(ids), 1, dtype=torch.bool, device="cuda")
    error = (varlen.last_hidden_state.float() - exact.last_hidden_state)[real].abs().max()
    reference_error = (grids.last_hidden_state.float() - exact.last_hidden_state)[real].abs().max()
    assert error <= 2 * reference_error + 1e-3


def test_training_step_in_bf16_with_attention_dropout_and_fused_adamw() -> None:
    model = small_bert(attention_dropout=0.1).train()
    ids, mask = mixed_batch()
    groups = [{"params": list(model.parameters()), "weight_decay": 0.01}]
    assert fused_adamw_supported(groups)
    optimizer = torch.optim.AdamW(groups, lr=1e-4, fused=True)
    before = model.pooler.dense.weight.detach().clone()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(ids, mask)
        loss = out.pooler_output.float().pow(2).mean()
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer.step()
    assert not torch.equal(before, model.pooler.dense.weight)
    # attention dropout is real on the fused kernels: two draws differ
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        assert not torch.equal(model(ids, mask).pooler_output, model(ids, mask).pooler_output)


# -- sharded training: Lightning's FSDP ------------------------------------------------------------
# Lightning 2.6 refuses ``--trainer.strategy fsdp`` with ``accelerator='cpu'`` ("The strategy `fsdp`
# requires a GPU accelerator"), so the 2-process gloo CPU runs of tests/test_multiprocess.py cannot
# cover it: it is tested here, on CUDA. DeepSpeed ZeRO is not: its package is not installed here.


def test_fsdp_fits_resumes_and_its_checkpoint_serves_validate_predict_and_export(tiny_bert_dir, tmp_path):
    """fit under FSDP (every GPU there is), resume it from last.ckpt, then validate, predict and
    export read the checkpoint on one device (Lightning's FSDP saves a full, consolidated state
    dict by default: the task checkpoint format, payload included)."""
    import subprocess
    import sys

    from .conftest import QUIET_TRAINER_ARGS, ROOT, run_cli

    run_dir = tmp_path / "fsdp"
    devices = str(max(1, torch.cuda.device_count()))
    fit = [
        sys.executable, "-m", "tasks", "fit", "--config", "configs/sst2.yaml",
        "--model.pretrained", str(tiny_bert_dir), "--trainer.strategy", "fsdp",
        "--trainer.accelerator", "gpu", "--trainer.devices", devices, "--checkpoint_every_n_steps", "2",
        "--model.gradient_checkpointing", "true", "--trainer.default_root_dir", str(run_dir),
        *QUIET_TRAINER_ARGS,
    ]  # fmt: skip
    first = subprocess.run([*fit, "--trainer.max_steps", "2"], cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = subprocess.run(
        [*fit, "--trainer.max_steps", "4", "--ckpt_path", "last"], cwd=ROOT, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 4
    one = ["--trainer.accelerator", "gpu", "--trainer.devices", "1", *QUIET_TRAINER_ARGS]
    common = ["--config", "configs/sst2.yaml", "--ckpt_path", ckpt, *one]
    assert run_cli("validate", *common, "--trainer.default_root_dir", tmp_path / "validate") == 0
    assert run_cli("predict", *common, "--trainer.default_root_dir", tmp_path / "predict") == 0
    assert run_cli("export", "--ckpt_path", ckpt, "--format", "hf", "--output", tmp_path / "hf") == 0
    assert (tmp_path / "hf" / "model.safetensors").exists()


def test_checkpointed_gradients_equal_the_plain_ones_in_bf16_on_cuda() -> None:
    model = small_bert(attention_dropout=0.1).train()
    ids, mask = mixed_batch()
    grads = []
    for checkpointing in (False, True):
        model.zero_grad(set_to_none=True)
        model.gradient_checkpointing_enable(checkpointing)
        torch.manual_seed(0)  # the same dropout masks: the recomputation replays the RNG state
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(ids, mask).pooler_output.float().pow(2).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    plain, checkpointed = grads
    scale = max(float(g.abs().max()) for g in plain.values())
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=0, atol=1e-2 * scale, msg=name)
