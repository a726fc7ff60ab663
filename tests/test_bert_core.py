"""bert_core against the Google-checkpoint oracle, transformers on real weights, and bad inputs."""

from __future__ import annotations

import graphlib
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bert_core
from bert_core import (
    BertConfig,
    BertForPreTraining,
    BertModel,
    CheckpointError,
    ConfigError,
    errors,
    load_tokenizer,
    tf_checkpoint,
)
from bert_core.checkpoint import fuse_qkv, split_qkv, tf_name_to_hf
from bert_core.sources import resolve_source

from .conftest import shared_path
from .test_layout import package_graph

ATOL = 1e-5


def fixture_dir():
    return shared_path("fixtures", "google_bert_tiny")


def run_oracle(model: BertForPreTraining, expected) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        out = model(
            torch.tensor(expected["input_ids"]),
            torch.tensor(expected["attention_mask"]),
            torch.tensor(expected["token_type_ids"]),
            output_hidden_states=True,
        )
    mask = expected["attention_mask"].astype(bool)  # padded rows are compared on real tokens only
    got = {
        "last_hidden_state": out.last_hidden_state.numpy()[mask],
        "pooled_output": out.pooler_output.numpy(),
        "prediction_logits": out.prediction_logits.numpy()[mask],
        "seq_relationship_logits": out.seq_relationship_logits.numpy(),
        "hidden_states": torch.stack(out.hidden_states).numpy()[:, mask],
    }
    want = {
        k: expected[k][mask] if k in ("last_hidden_state", "prediction_logits") else expected[k]
        for k in got
        if k in expected.files
    }
    if "hidden_states" in want:
        want["hidden_states"] = want["hidden_states"][:, mask]
    return {k: float(np.abs(got[k] - want[k]).max()) for k in want}


@pytest.mark.parametrize("layout", ["tf_checkpoint", "tf_prefix", "hf"])
def test_oracle_parity_erf_gelu(layout):
    base = fixture_dir()
    source = {
        "tf_checkpoint": base / "tf_checkpoint",
        "tf_prefix": base / "tf_checkpoint" / "bert_model.ckpt",
        "hf": base / "hf",
    }[layout]
    expected = np.load(base / "expected_outputs.npz")
    errors = run_oracle(BertForPreTraining.from_pretrained(source), expected)
    assert set(errors) == {
        "last_hidden_state",
        "pooled_output",
        "prediction_logits",
        "seq_relationship_logits",
        "hidden_states",
    }
    assert max(errors.values()) <= ATOL, errors


@pytest.mark.parametrize("layout", ["tf_checkpoint", "hf"])
def test_oracle_parity_tanh_gelu(layout):
    base = fixture_dir()
    expected = np.load(base / "expected_outputs_gelu_tanh.npz")
    model = BertForPreTraining.from_pretrained(base / layout, hidden_act="gelu_new")
    errors = run_oracle(model, expected)
    assert max(errors.values()) <= ATOL, errors
    # and the erf reference is really different at this tolerance: the activation matters
    erf = run_oracle(model, np.load(base / "expected_outputs.npz"))
    assert erf["prediction_logits"] > ATOL


def test_oracle_full_padded_batch_matches_reference():
    """The encoder's fast path (padding not computed) gives the reference on every real token and the pooler."""
    base = fixture_dir()
    expected = np.load(base / "expected_outputs.npz")
    model = BertModel.from_pretrained(base / "tf_checkpoint").eval()
    with torch.no_grad():
        out = model(
            torch.tensor(expected["input_ids"]),
            torch.tensor(expected["attention_mask"]),
            torch.tensor(expected["token_type_ids"]),
        )
    real = expected["attention_mask"].astype(bool)
    assert np.abs(out.last_hidden_state.numpy()[real] - expected["last_hidden_state"][real]).max() <= ATOL
    assert np.abs(out.pooler_output.numpy() - expected["pooled_output"]).max() <= ATOL


def test_tf_name_table():
    assert tf_name_to_hf("bert/encoder/layer_11/attention/self/query/kernel") == (
        "bert.encoder.layer.11.attention.self.query.weight",
        True,
    )
    assert tf_name_to_hf("bert/embeddings/LayerNorm/gamma") == ("bert.embeddings.LayerNorm.weight", False)
    assert tf_name_to_hf("bert/embeddings/word_embeddings") == (
        "bert.embeddings.word_embeddings.weight",
        False,
    )
    assert tf_name_to_hf("cls/predictions/output_bias") == ("cls.predictions.bias", False)
    assert tf_name_to_hf("cls/seq_relationship/output_weights") == ("cls.seq_relationship.weight", False)


def test_qkv_is_joined_by_name_on_load_and_split_on_save():
    """Checkpoints name q, k and v apart; ours is one Linear, rows [q; k; v]. Every state dict load
    joins the names (a task checkpoint written before the fused projection too); saving splits them."""
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=8
    )
    model = BertModel(config)
    ours = model.state_dict()
    theirs = split_qkv(ours)
    assert not any("qkv" in name for name in theirs) and len(theirs) == len(ours) + 2 * 2 * 2
    fused = ours["encoder.layer.1.attention.self.qkv.weight"]
    assert torch.equal(theirs["encoder.layer.1.attention.self.key.weight"], fused[16:32])
    assert torch.equal(theirs["encoder.layer.1.attention.self.value.weight"], fused[32:])
    assert fuse_qkv(dict(theirs)).keys() == ours.keys()
    holder = torch.nn.ModuleDict({"encoder": BertModel(config)})  # a task module's prefix
    holder.load_state_dict({f"encoder.{name}": tensor for name, tensor in theirs.items()})  # strict
    for name, tensor in holder["encoder"].state_dict().items():
        assert torch.equal(tensor, ours[name]), name


def test_encoder_from_pretraining_checkpoint_drops_heads_and_pretraining_from_encoder_says_so(
    tmp_path, capsys
):
    base = fixture_dir()
    encoder = BertModel.from_pretrained(base / "tf_checkpoint")
    assert not any(name.startswith("cls") for name in encoder.state_dict())
    encoder.save_pretrained(tmp_path)
    model = BertForPreTraining.from_pretrained(tmp_path)
    assert "newly initialised" in capsys.readouterr().err
    assert torch.equal(
        model.bert.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight
    )
    # The model is built without initialisation (its tensors are loaded next): the new heads get
    # BERT's, not what the memory held.
    heads = model.cls
    std = model.config.initializer_range
    transform = heads.predictions.transform
    assert torch.equal(transform.LayerNorm.weight, torch.ones_like(transform.LayerNorm.weight))
    assert not transform.LayerNorm.bias.any() and not transform.dense.bias.any()
    assert not heads.predictions.bias.any() and not heads.seq_relationship.bias.any()
    for weight in (transform.dense.weight, heads.seq_relationship.weight):
        assert weight.abs().max() <= 2 * std and 0.5 * std < weight.std() < std


def test_round_trip_save_pretrained_to_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    base = fixture_dir()
    ours = BertForPreTraining.from_pretrained(base / "tf_checkpoint").eval()
    ours.save_pretrained(tmp_path)
    assert (tmp_path / "vocab.txt").read_bytes() == (base / "tf_checkpoint" / "vocab.txt").read_bytes()
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["do_lower_case"] is True
    theirs = transformers.BertForPreTraining.from_pretrained(tmp_path, attn_implementation="eager").eval()
    expected = np.load(base / "expected_outputs.npz")
    inputs = {k: torch.tensor(expected[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        a, b = ours(**inputs), theirs(**inputs)
    assert torch.allclose(a.prediction_logits, b.prediction_logits, atol=ATOL)
    assert torch.allclose(a.seq_relationship_logits, b.seq_relationship_logits, atol=ATOL)
    again = BertForPreTraining.from_pretrained(tmp_path)
    for (name, p), (_, q) in zip(ours.state_dict().items(), again.state_dict().items()):
        assert torch.equal(p, q), name


def test_real_minilm_weights_match_transformers():
    transformers = pytest.importorskip("transformers")
    directory = resolve_source("all-MiniLM-L6-v2").directory
    ours = BertModel.from_pretrained("all-MiniLM-L6-v2").eval()
    theirs = transformers.BertModel.from_pretrained(directory, attn_implementation="eager").eval()
    tokenizer = load_tokenizer("all-MiniLM-L6-v2")
    batch = tokenizer(
        ["The cat sat on the mat.", "Ça coûte combien, s'il vous plaît ?"],
        ["A dog slept on the sofa all afternoon.", None and "" or "Cheap."],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        a = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        b = theirs(**batch)
    real = batch["attention_mask"].bool()
    assert (a.last_hidden_state[real] - b.last_hidden_state[real]).abs().max() <= 1e-4
    assert (a.pooler_output - b.pooler_output).abs().max() <= 1e-4
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())


def test_num_parameters_of_published_configs():
    base = BertConfig()
    large = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        assert BertModel(base).num_parameters() == 109_482_240
        assert BertModel(large).num_parameters() == 335_141_888
        # the MLM decoder is tied to the word embeddings, so it adds no parameters of its own
        heads = BertForPreTraining(base).num_parameters() - 109_482_240
    assert heads == (768 * 768 + 768) + 2 * 768 + 30522 + (2 * 768 + 2)


# -- bad inputs ------------------------------------------------------------------------------


def copy_tf(tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(fixture_dir() / "tf_checkpoint", target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def test_missing_data_shard(tmp_path):
    target = copy_tf(tmp_path)
    (target / "bert_model.ckpt.data-00000-of-00001").unlink()
    with pytest.raises(CheckpointError, match="missing data shard"):
        BertModel.from_pretrained(target)


def test_truncated_data_shard(tmp_path):
    target = copy_tf(tmp_path)
    shard = target / "bert_model.ckpt.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="truncated|beyond"):
        BertModel.from_pretrained(target)


def test_broken_config(tmp_path):
    target = copy_tf(tmp_path)
    config = json.loads((target / "bert_config.json").read_text())
    (target / "bert_config.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        BertModel.from_pretrained(target)
    (target / "bert_config.json").write_text(json.dumps({**config, "num_attention_heads": 5}))
    with pytest.raises(
        ConfigError, match=r"hidden_size \(64\) is not divisible by num_attention_heads \(5\)"
    ):
        BertModel.from_pretrained(target)
    (target / "bert_config.json").write_text(json.dumps({**config, "hidden_act": "swish"}))
    with pytest.raises(ConfigError, match="unknown hidden_act 'swish'"):
        BertModel.from_pretrained(target)


def test_vocab_and_embedding_size_mismatch(tmp_path):
    target = copy_tf(tmp_path)
    config = json.loads((target / "bert_config.json").read_text())
    (target / "bert_config.json").write_text(json.dumps({**config, "vocab_size": 600}))
    with pytest.raises(
        CheckpointError, match=r"tensor embeddings.word_embeddings.weight has shape \(513, 64\)"
    ):
        BertModel.from_pretrained(target)
    (target / "bert_config.json").write_text(json.dumps({**config, "vocab_size": 500}))
    with pytest.raises(CheckpointError, match="513 tokens, but the model's vocab_size is 500"):
        BertModel.from_pretrained(target)


def test_unexpected_and_missing_tensors(tmp_path):
    from safetensors.torch import load_file, save_file

    source = fixture_dir() / "hf"
    target = tmp_path / "hf"
    shutil.copytree(source, target)
    for path in target.iterdir():
        path.chmod(0o644)
    state = load_file(target / "model.safetensors")
    state["bert.encoder.layer.9.output.dense.weight"] = torch.zeros(1)
    save_file(state, target / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) encoder.layer.9.output.dense.weight"):
        BertModel.from_pretrained(target)
    del state["bert.encoder.layer.9.output.dense.weight"]
    del state["bert.pooler.dense.bias"]
    save_file(state, target / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) pooler.dense.bias"):
        BertModel.from_pretrained(target)


def test_config_json_round_trip(tmp_path):
    config = BertConfig.from_json(fixture_dir() / "tf_checkpoint" / "bert_config.json")
    config.to_json(tmp_path / "config.json")
    again = BertConfig.from_json(tmp_path / "config.json")
    assert again == config and again.layer_norm_eps == 1e-12


def test_corrupt_tf_index_is_the_one_checkpoint_error(tmp_path):
    """tf_checkpoint raises the package's CheckpointError itself, so one ``except`` catches every layer."""
    target = copy_tf(tmp_path)
    index = target / "bert_model.ckpt.index"
    raw = bytearray(index.read_bytes())
    raw[100] ^= 0x10
    index.write_bytes(raw)
    for load in (BertModel.from_pretrained, tf_checkpoint.read_tf_checkpoint):
        with pytest.raises(bert_core.CheckpointError, match="corrupt index .*checksum mismatch") as error:
            load(target)
        assert type(error.value) is bert_core.CheckpointError
    names = ("checkpoint", "errors", "sources", "tf_checkpoint", "tokenizer", "vocab")
    modules = [bert_core, *(importlib.import_module(f"bert_core.{name}") for name in names)]
    classes = {getattr(module, "CheckpointError", None) for module in modules} - {None}
    assert classes == {errors.CheckpointError} and issubclass(errors.CheckpointError, ValueError)


# -- the package's shape ------------------------------------------------------------------------


def test_importing_bert_core_and_its_config_does_not_import_transformers():
    code = (
        "import sys, bert_core.config, bert_core, bert_core.vocab\n"
        "assert not {'transformers', 'torch'} & set(sys.modules), 'config/vocab import torch or transformers'\n"
        "from bert_core import BertModel, CheckpointError, load_tokenizer, resolve_source\n"
        "import bert_core.checkpoint, bert_core.model, bert_core.tokenizer\n"
        "assert 'transformers' not in sys.modules, 'bert_core imports transformers'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr


def test_bert_core_layers():
    graph = {
        module.removeprefix("bert_core."): {target.removeprefix("bert_core.") for target in targets}
        for module, targets in package_graph("bert_core").items()
    }
    assert {
        "errors",
        "config",
        "vocab",
        "tf_checkpoint",
        "sources",
        "checkpoint",
        "model",
        "tokenizer",
    } <= set(graph)
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    assert order.index("tf_checkpoint") < order.index("sources") < order.index("checkpoint")
    assert graph["errors"] == set() and graph["tf_checkpoint"] == {"errors"}
    assert graph["vocab"] == {"errors"} and graph["config"] == set()
    assert "tokenizer" not in graph["checkpoint"] and "model" not in graph["checkpoint"]
