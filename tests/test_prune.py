"""Pruning: removed heads compute what masked heads compute, pruned models round-trip through
Hugging Face's format, dropped layers, head importance, and the prune command's checkpoints."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bert_core import BertConfig, BertModel
from bert_core.pruning import drop_layers, head_gates, kept_heads, prune_heads, unpruned_copy
from tasks.prune import head_importance, heads_to_prune, normalise_per_layer
from tests.conftest import FAST_TRAINER_ARGS, ROOT, run_cli

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter")

FAST = list(FAST_TRAINER_ARGS)
SAMPLE = ROOT / "data" / "glue" / "SST-2"
DATA = ["--data.train_file", SAMPLE / "train.tsv", "--data.validation_file", SAMPLE / "dev.tsv"]
HEADS = {0: [1], 2: [0, 3]}


def random_model() -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=48,
        initializer_range=0.5,
    )
    return BertModel(config).eval()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(1, 99, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padding: the packed path
    mask[2, 4:] = 0
    return ids, mask


def masked_outputs(model: BertModel, heads: dict[int, list[int]]):
    ids, mask = batch()
    with torch.no_grad(), head_gates(model) as gates:
        for layer, removed in heads.items():
            gates[layer].data[removed] = 0.0
        return model(ids, mask)


def test_pruned_heads_equal_masked_heads():
    model = random_model()
    reference = masked_outputs(model, HEADS)
    pruned = prune_heads(copy.deepcopy(model), HEADS)
    assert pruned.config.pruned_heads == HEADS
    assert pruned.encoder.layer[2].attention.self.qkv.weight.shape == (3 * 16, 32)  # q, k, v: 2 heads
    assert pruned.encoder.layer[2].attention.output.dense.weight.shape == (32, 16)
    ids, mask = batch()
    with torch.no_grad():
        out = pruned(ids, mask)
    torch.testing.assert_close(out.last_hidden_state, reference.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooler_output, reference.pooler_output, atol=1e-5, rtol=1e-5)
    # Pruning again names the original heads; the gates of a pruned layer cover its remaining heads.
    again = prune_heads(copy.deepcopy(pruned), {2: [1]})
    assert again.config.pruned_heads == {0: [1], 2: [0, 1, 3]} and kept_heads(again.config, 2) == [2]
    torch.testing.assert_close(
        again(ids, mask).pooler_output, masked_outputs(model, {0: [1], 2: [0, 1, 3]}).pooler_output
    )
    with pytest.raises(ValueError, match="without a head"):
        prune_heads(again, {2: [2]})


def test_pruned_model_round_trips_through_hf_format(tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    from transformers.pytorch_utils import prune_linear_layer

    pruned = prune_heads(random_model(), HEADS)
    ids, mask = batch()
    with torch.no_grad():
        ours = pruned(ids, mask)
    pruned.save_pretrained(tmp_path / "pruned")
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert config["pruned_heads"] == {"0": [1], "2": [0, 3]}  # HF's key, HF's meaning

    # Our loader reads it back (per-layer head counts from config.json).
    back = BertModel.from_pretrained(tmp_path / "pruned").eval()
    assert back.config.pruned_heads == HEADS
    torch.testing.assert_close(back(ids, mask).pooler_output, ours.pooler_output)

    # transformers: its BertModel pruned as transformers 4's prune_heads did (transformers 5 dropped
    # the method; names and shapes are unchanged) takes the weights as they are, strictly.
    reference = transformers.BertModel(transformers.BertConfig.from_pretrained(tmp_path / "pruned")).eval()
    for layer, removed in HEADS.items():
        attention = reference.encoder.layer[layer].attention
        d = 8
        keep = torch.tensor([h * d + i for h in range(4) if h not in removed for i in range(d)])
        for name in ("query", "key", "value"):
            setattr(attention.self, name, prune_linear_layer(getattr(attention.self, name), keep))
        attention.output.dense = prune_linear_layer(attention.output.dense, keep, dim=1)
        attention.self.num_attention_heads = 4 - len(removed)
        attention.self.all_head_size = attention.self.num_attention_heads * d
    reference.load_state_dict(load_file(tmp_path / "pruned" / "model.safetensors"), strict=True)
    with torch.no_grad():
        theirs = reference(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(theirs.pooler_output, ours.pooler_output, atol=1e-5, rtol=1e-5)
    real = mask.bool()
    torch.testing.assert_close(
        theirs.last_hidden_state[real], ours.last_hidden_state[real], atol=1e-5, rtol=1e-5
    )

    # The full-size copy (pruned heads zero) loads with transformers' own from_pretrained.
    unpruned_copy(pruned).save_pretrained(tmp_path / "full")
    loaded = transformers.BertModel.from_pretrained(tmp_path / "full").eval()
    with torch.no_grad():
        full = loaded(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(full.pooler_output, ours.pooler_output, atol=1e-5, rtol=1e-5)


def test_drop_layers_keeps_the_bottom_layers():
    model = random_model()
    ids, mask = batch()
    with torch.no_grad():
        states = model(ids, mask, output_hidden_states=True).hidden_states
        short = drop_layers(copy.deepcopy(model), 1)
        out = short(ids, mask)
    assert short.config.num_hidden_layers == 2 and len(short.encoder.layer) == 2
    real = mask.bool()
    torch.testing.assert_close(out.last_hidden_state[real], states[2][real], atol=1e-5, rtol=1e-5)
    pruned = drop_layers(prune_heads(copy.deepcopy(model), HEADS), 1)
    assert pruned.config.pruned_heads == {0: [1]}  # layer 2's entry left with it
    with pytest.raises(ValueError):
        drop_layers(model, 3)


def test_head_importance_ranks_a_dead_head_last():
    model = random_model()
    with torch.no_grad():  # layer 1, head 2 outputs zeros: the loss does not depend on its gate
        rows = slice(2 * 32 + 2 * 8, 2 * 32 + 3 * 8)  # its value rows: qkv is [q; k; v], 32 rows each
        model.encoder.layer[1].attention.self.qkv.weight[rows] = 0
        model.encoder.layer[1].attention.self.qkv.bias[rows] = 0

    class Probe(torch.nn.Module):  # what prune asks of a task module: forward, training_loss, device
        def __init__(self):
            super().__init__()
            self.encoder = model
            self.device = torch.device("cpu")

        def forward(self, b):
            return self.encoder(b["input_ids"], b["attention_mask"]).pooler_output

        def training_loss(self, outputs, b):
            return outputs.pow(2).sum()

    ids, mask = batch()
    scores = head_importance(Probe(), [{"input_ids": ids, "attention_mask": mask}] * 2)
    assert [len(s) for s in scores] == [4, 4, 4]
    assert scores[1][2] == 0 and all(s > 0 for i, s in enumerate(scores[1]) if i != 2)
    normalised = normalise_per_layer(scores)
    assert all(float(s.norm()) == pytest.approx(1.0) for s in normalised)
    assert heads_to_prune(normalised, model.config, 1 / 12) == {1: [2]}
    # Never the last head of a layer; indices are the original ones in a pruned layer.
    config = prune_heads(copy.deepcopy(model), {0: [0, 1, 2]}).config
    chosen = heads_to_prune([torch.tensor([0.0]), torch.tensor([1.0, 2, 3, 4]), torch.ones(4)], config, 2 / 9)
    assert chosen == {1: [0], 2: [0]}


def test_prune_command_gives_a_checkpoint_that_validates_and_fine_tunes(
    sst2_teacher_ckpt: Path, tmp_path: Path
):
    out = tmp_path / "pruned.ckpt"
    code = run_cli(
        "prune",
        "--ckpt_path",
        sst2_teacher_ckpt,
        "--heads",
        "0.25",
        "--drop_layers",
        "1",
        "--config",
        ROOT / "configs" / "sst2.yaml",
        *DATA,
        "--output",
        out,
    )
    assert code == 0
    stored = torch.load(out, weights_only=True)
    config = BertConfig.from_dict(stored["bert_tasks"]["bert_config"])
    assert config.num_hidden_layers == 3
    assert sum(config.heads_in_layer(i) for i in range(3)) == 9  # 12 heads, a quarter gone
    assert "optimizer_states" not in stored and stored["bert_tasks_pruning"]["dropped_layers"] == 1
    assert out.stat().st_size < sst2_teacher_ckpt.stat().st_size

    args = ("--config", ROOT / "configs" / "sst2.yaml", *DATA, *FAST)
    assert run_cli("validate", *args, "--ckpt_path", out, "--trainer.default_root_dir", tmp_path / "v") == 0
    fit = (
        "--model.pretrained",
        out,
        "--trainer.max_steps",
        "2",
        "--trainer.default_root_dir",
        tmp_path / "f",
    )
    assert run_cli("fit", *args, *fit) == 0
    tuned = torch.load(tmp_path / "f" / "checkpoints" / "best.ckpt", weights_only=True)
    assert (
        tuned["bert_tasks"]["bert_config"]["pruned_heads"]
        == stored["bert_tasks"]["bert_config"]["pruned_heads"]
    )


def test_prune_command_errors(sst2_teacher_ckpt: Path, tmp_path: Path, capsys):
    assert (
        run_cli("prune", "--ckpt_path", sst2_teacher_ckpt, "--heads", "1.5", "--output", tmp_path / "x.ckpt")
        == 2
    )
    assert "--heads must be in [0, 1)" in capsys.readouterr().err
    assert (
        run_cli(
            "prune", "--ckpt_path", sst2_teacher_ckpt, "--drop_layers", "4", "--output", tmp_path / "x.ckpt"
        )
        == 2
    )
    assert "keep one" in capsys.readouterr().err
    assert (
        run_cli(
            "prune", "--ckpt_path", tmp_path / "none.ckpt", "--heads", "0.5", "--output", tmp_path / "y.ckpt"
        )
        == 2
    )
    assert (
        run_cli("prune", "--ckpt_path", sst2_teacher_ckpt, "--heads", "0.5", "--output", tmp_path / "y.bin")
        == 2
    )
