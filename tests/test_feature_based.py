"""The feature-based approach inside the tasks: --model.head_layers / head_combine, frozen encoders."""

from __future__ import annotations

import json

import pytest
import torch

from tasks.classification import SequenceClassifier
from tasks.io import UserError
from tasks.module import combine_layers, hidden_layer_index
from tasks.tagging import TaggingModule

from .conftest import QUIET_TRAINER_ARGS as QUIET
from .conftest import ROOT, run_cli

LABELS = ["O", "B-PER", "I-PER"]


def batch_of(rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """input ids padded with 0, [CLS]=101 ... [SEP]=102 written by the caller."""
    T = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (T - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": torch.zeros_like(ids)}


def test_google_layer_indexing():
    assert [hidden_layer_index(i, 4) for i in (-1, -2, -4, 0, -5, 1, 4)] == [4, 3, 1, 0, 0, 1, 4]
    with pytest.raises(UserError, match="layer -6 does not exist"):
        hidden_layer_index(-6, 4)
    with pytest.raises(UserError, match="layer 5 does not exist"):
        hidden_layer_index(5, 4)


def test_combine_layers():
    states = tuple(torch.full((1, 2, 3), float(i)) for i in range(4))  # (embeddings, l1, l2, l3)
    concat = combine_layers(states, [3, 2], "concat")
    assert concat.shape == (1, 2, 6) and concat[0, 0].tolist() == [3, 3, 3, 2, 2, 2]
    assert combine_layers(states, [3, 1], "sum")[0, 0].tolist() == [4, 4, 4]
    assert combine_layers(states, [3, 1], "mean")[0, 0].tolist() == [2, 2, 2]


def test_head_layers_feed_the_head_with_the_named_layers(mixing_bert_dir):
    module = TaggingModule(
        pretrained=str(mixing_bert_dir), label_names=LABELS, head_layers=[-1, -2, 0], head_combine="concat"
    ).eval()
    H = module.hidden_size
    assert module.classifier.in_features == 3 * H
    batch = batch_of([[101, 7592, 2088, 102], [101, 7592, 102]])
    states = module.token_states(batch)  # [B, T, 3H]
    # the reference: the encoder's inspection mode, every position computed as transformers does
    reference = module.encoder(**batch, output_hidden_states=True).hidden_states
    real = batch["attention_mask"].bool()
    expected = torch.cat([reference[2], reference[1], reference[0]], dim=-1)
    torch.testing.assert_close(states[real], expected[real], atol=1e-5, rtol=0)
    # the pooler is not used by a tagger, nor by a classifier reading [CLS] of the head layers
    classifier = SequenceClassifier(pretrained=str(mixing_bert_dir), label_names=["a", "b"], head_layers=[-1])
    assert not any(p.requires_grad for p in classifier.encoder.pooler.parameters())
    torch.testing.assert_close(
        classifier.eval().sentence_state(batch), classifier.encoder(**batch).last_hidden_state[:, 0]
    )
    with pytest.raises(UserError, match="head_combine must be one of concat, sum, mean"):
        TaggingModule(pretrained=str(mixing_bert_dir), label_names=LABELS, head_combine="max")


def test_frozen_encoder_stays_in_eval_mode_and_gets_no_backward(mixing_bert_dir):
    module = TaggingModule(
        pretrained=str(mixing_bert_dir), label_names=LABELS, freeze_encoder=True, head_layers=[-1, -2]
    )
    module.train()
    assert module.training and module.dropout.training and not module.encoder.training
    assert not any(m.training for m in module.encoder.modules())
    before = {k: v.clone() for k, v in module.encoder.state_dict().items()}
    batch = batch_of([[101, 7592, 2088, 102]])
    batch["labels"] = torch.tensor([[-100, 1, 2, -100]])
    outputs = module(batch)
    loss = module.training_loss(outputs, batch)
    loss.backward()
    assert module.classifier.weight.grad is not None
    assert all(p.grad is None for p in module.encoder.parameters())
    # no autograd graph through the encoder: the head's input is a leaf
    assert module.token_states(batch).grad_fn is None
    torch.optim.SGD(module.parameters(), lr=1.0).step()
    after = module.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_frozen_last_four_concat_fits_and_predicts_through_the_cli(tiny_bert_dir, tmp_path):
    run_dir = tmp_path / "run"
    common = ["--config", ROOT / "configs" / "ner.yaml", "--trainer.default_root_dir", run_dir, *QUIET]
    fit = ["fit", *common, "--model.pretrained", tiny_bert_dir, "--data.cache_dir", tmp_path / "cache"]
    fit += ["--trainer.limit_train_batches", "2", "--trainer.max_epochs", "1", "--data.batch_size", "8"]
    fit += ["--model.freeze_encoder", "true", "--model.head_layers", "[-1,-2,-3]"]
    assert run_cli(*fit) == 0
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    hparams = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["head_layers"] == [-1, -2, -3] and hparams["freeze_encoder"] is True
    # the checkpoint alone rebuilds the 3 x H head
    assert run_cli("validate", *common, "--ckpt_path", checkpoint) == 0
    assert "val/f1" in json.loads((run_dir / "metrics.json").read_text())
