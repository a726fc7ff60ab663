"""ELECTRA's replaced-token detection: the labels follow the sampled tokens, every trainable weight
gets a gradient (DDP), evaluation samples the same per sequence however batched, the RTD loss falls
and rtd_accuracy rises on the shipped sample, the discriminator loads in transformers' BertModel,
and the bad generators are one line each."""

from __future__ import annotations

import json
import re

import pytest
import torch

from bert_core import BertConfig, BertModel
from tasks.electra import sample, training_generator
from tasks.io import UserError
from tasks.pretraining import PreTrainingModule
from tasks.pretraining_metrics import roc_auc
from tasks.source import load_encoder

from .conftest import QUIET_TRAINER_ARGS as QUIET
from .conftest import ROOT, evaluation_metrics, run_cli, save_tiny_bert
from .test_multiprocess import ONE, assert_same_metrics, two_processes

CONFIG = ROOT / "configs" / "pretrain_electra.yaml"
IDS = torch.tensor([[101, 7592, 2088, 103, 2003, 102], [101, 2023, 103, 2003, 102, 0]])
BATCH = {
    "input_ids": IDS,
    "attention_mask": (IDS != 0).long(),
    "mlm_positions": torch.tensor([3, 4, 6 + 2]),  # flat b * T + t
    "mlm_labels": torch.tensor([2000, 2001, 2002]),
    "example": torch.tensor([7, 8]),
    "feature_index": torch.tensor([0, 0]),
}


@pytest.mark.filterwarnings(
    "ignore:You are trying to `self.log\\(\\)`"
)  # training_loss logs; no trainer here
def test_replaced_labels_gradients_and_seeded_sampling(tiny_bert_dir):
    module = PreTrainingModule(pretrained=str(tiny_bert_dir), objective="electra", generator_hidden_size=16)
    assert module.electra.generator.config.hidden_size == 16
    assert module.electra.generator.config.num_hidden_layers == 1  # a third of 2 layers, at least 1
    # the generator's embeddings and decoder are the model's (tied), stored once
    assert not any(k.startswith("electra.generator.embeddings.shared") for k in module.state_dict())
    assert module.electra.generator_head.word_embeddings[0] is module.encoder.embeddings.word_embeddings

    outputs = module(BATCH)
    # only masked positions can be replaced (padding and the other tokens never)
    flat = outputs.replaced.flatten()
    assert not flat[[i for i in range(12) if i not in (3, 4, 8)]].any()
    loss = module.training_loss(outputs, BATCH)
    loss.backward()
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing  # DDP would wait for these

    # Evaluation: each sequence's samples come from its own seed, whatever else is in the batch.
    module.eval()
    with torch.no_grad():
        both = module(BATCH)
        alone = module({k: v[1:] for k, v in BATCH.items() if k not in ("mlm_positions", "mlm_labels")}
                       | {"mlm_positions": torch.tensor([2]), "mlm_labels": torch.tensor([2002])})  # fmt: skip
        again = module(BATCH)
    assert torch.equal(both.replaced, again.replaced)
    assert torch.equal(both.replaced[1, :5], alone.replaced[0, :5])


def test_roc_auc_by_hand():
    # positives 0.9, 0.4; negatives 0.5, 0.1, 0.4: pairs won 1 + 1 + 1 + 0 + 1 + 0.5 (tie) = 4.5 of 6
    assert roc_auc([0.9, 0.5, 0.4, 0.1, 0.4], [True, False, True, False, False]) == pytest.approx(4.5 / 6)


def test_rtd_learns_and_the_discriminator_loads_in_transformers(tiny_bert_dir, tmp_path):
    from transformers import BertModel as HFBertModel

    common = [
        "--config",
        CONFIG,
        "--model.pretrained",
        tiny_bert_dir,
        *QUIET,
        "--data.cache_dir",
        tmp_path / "c",
    ]
    common += ["--data.max_seq_length", "64"]
    assert run_cli("validate", *common, "--trainer.default_root_dir", tmp_path / "baseline") == 0
    baseline = evaluation_metrics(tmp_path / "baseline", "validation")
    run_dir = tmp_path / "electra"
    fit = ["fit", *common, "--trainer.default_root_dir", run_dir, "--trainer.max_epochs", "2"]
    assert run_cli(*fit, "--model.learning_rate", "1e-3") == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/rtd_loss"] < baseline["val/rtd_loss"]
    assert metrics["val/rtd_accuracy"] > baseline["val/rtd_accuracy"]
    assert 0.0 <= metrics["val/rtd_auc"] <= 1.0 and 0.0 <= metrics["val/generator_mlm_accuracy"] <= 1.0
    assert metrics["val/loss"] == pytest.approx(
        metrics["val/generator_mlm_loss"] + 50 * metrics["val/rtd_loss"]
    )

    # pretrained/: the discriminator (best.ckpt's encoder) as an HF BertModel
    pretrained = run_dir / "pretrained"
    assert json.loads((pretrained / "config.json").read_text())["architectures"] == ["BertModel"]
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    module = PreTrainingModule(pretrained=str(tiny_bert_dir), objective="electra", generator_layers=2)
    module.load_state_dict(ckpt["state_dict"])
    ours = module.encoder.eval()
    theirs = HFBertModel.from_pretrained(pretrained).eval()
    mask = (IDS != 0).long()
    with torch.no_grad():
        mine = ours(IDS, mask).last_hidden_state
        hf = theirs(input_ids=IDS, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(mine[real], hf[real], atol=1e-5, rtol=0)
    # what fit --model.pretrained builds its encoder from: the same weights
    encoder, _ = load_encoder(str(pretrained))
    with torch.no_grad():
        torch.testing.assert_close(
            encoder.eval()(IDS, mask).last_hidden_state[real], mine[real], atol=1e-6, rtol=0
        )


def test_bad_generators_are_one_line(tiny_bert_dir, tmp_path, capsys):
    other = tmp_path / "other_vocab"
    BertModel(BertConfig(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=32)).save_pretrained(other)  # fmt: skip
    (other / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]) + "\n"
    )
    (other / "tokenizer_config.json").write_text('{"do_lower_case": true}\n')
    deeper = save_tiny_bert(tmp_path / "deeper", tiny_bert_dir, num_hidden_layers=3)  # the same vocab
    swapped = save_tiny_bert(tmp_path / "swapped", tiny_bert_dir, num_hidden_layers=1)
    tokens = (swapped / "vocab.txt").read_text().splitlines()
    tokens[1000], tokens[1001] = tokens[1001], tokens[1000]  # as many tokens, two ids exchanged
    (swapped / "vocab.txt").write_text("\n".join(tokens) + "\n")
    theirs, ours = repr(tokens[1000]), repr(tokens[1001])
    cases = [
        ({"generator_layers": 3}, "--model.generator_layers 3: the generator must have 1 to 2 layers"),
        (
            {"generator_hidden_size": 64},
            "--model.generator_hidden_size 64: wider than the discriminator (32)",
        ),
        (
            {"generator": str(deeper)},
            "--model.generator: 3 layers of width 32, larger than the discriminator",
        ),
        (
            {"generator": str(other)},
            "--model.generator: its vocabulary (8 tokens) is not the model's (30522)",
        ),
        (
            {"generator": str(swapped)},
            f"--model.generator: its vocabulary differs from the model's at token id 1000 ({theirs} against {ours})",
        ),
        ({"nsp": True}, "it has no NSP"),
    ]
    for options, message in cases:
        with pytest.raises(UserError, match=re.escape(message)):
            PreTrainingModule(pretrained=str(tiny_bert_dir), objective="electra", **options)
    # through the command line: one line on stderr naming the option, exit code 2
    fit = ["fit", "--config", CONFIG, "--model.pretrained", tiny_bert_dir, *QUIET]
    for options, message in cases[:4]:
        (name, value), run_dir = next(iter(options.items())), tmp_path / f"run_{len(message)}"
        assert run_cli(*fit, f"--model.{name}", value, "--trainer.default_root_dir", run_dir) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_training_replacements_repeat_from_the_seed_and_differ_by_rank(tiny_bert_dir, monkeypatch):
    """Every DDP rank starts from the same seed: the rank, mixed into each step's sampling state,
    keeps the ranks' replacements apart, and the same seed and rank replace the same tokens."""
    module = PreTrainingModule(pretrained=str(tiny_bert_dir), objective="electra").train()

    def rtd_logits() -> torch.Tensor:  # they follow the tokens the discriminator reads
        torch.manual_seed(7)
        with torch.no_grad():
            return module(BATCH).rtd_logits

    rank0 = rtd_logits()
    assert torch.equal(rank0, rtd_logits())
    monkeypatch.setattr(PreTrainingModule, "global_rank", property(lambda self: 1))
    rank1 = rtd_logits()
    assert torch.equal(rank1, rtd_logits()) and not torch.equal(rank0, rank1)
    # the sampler itself: a near-uniform softmax over 30,522 tokens, 3 draws per rank
    logits, rows = torch.zeros(3, 30522), torch.zeros(3, dtype=torch.long)
    draws = [sample(logits, rows, None, training_generator(torch.device("cpu"), r)) for r in (0, 1)]
    assert not torch.equal(*draws)


@pytest.mark.multiprocess
def test_two_processes_train_one_model_and_count_every_sequence_once(tiny_bert_dir, tmp_path):
    """2-process gloo DDP: both ranks end with the same generator and discriminator (a narrow
    generator: its projection and tied embeddings all get gradients), the fit's RTD metrics are
    what one process scores for best.ckpt (every dev sequence counted once, AUC over both ranks'
    tokens), and pretrained/ is the trained discriminator in transformers."""
    from transformers import BertModel as HFBertModel

    run_dir, ranks = tmp_path / "two", tmp_path / "ranks"
    data = ["--data.max_seq_length", "32", "--data.batch_size", "4", "--data.cache_dir", tmp_path / "c"]
    options = ["--model.pretrained", tiny_bert_dir, "--model.generator_hidden_size", "16", *data]
    probe = [
        "--trainer.callbacks+=tests.rank_weights.SaveRankWeights",
        f"--trainer.callbacks.directory={ranks}",
    ]
    two_processes(
        "fit", "--config", CONFIG, *options, "--trainer.max_epochs", "1", "--model.learning_rate", "1e-3",
        *probe, "--trainer.default_root_dir", run_dir,
    )  # fmt: skip
    first, second = (torch.load(ranks / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert first.keys() == second.keys()
    assert any(k.startswith("electra.generator.") for k in first)
    assert all(torch.equal(first[k], second[k]) for k in first), [
        k for k in first if not torch.equal(first[k], second[k])
    ]
    initial = PreTrainingModule(
        pretrained=str(tiny_bert_dir), objective="electra", generator_layers=2, generator_hidden_size=16
    )
    trained = {k for k, v in initial.state_dict().items() if not torch.equal(v, first[k])}
    assert any(k.startswith("encoder.") for k in trained) and any(k.startswith("electra.") for k in trained)

    validate = ["validate", "--config", CONFIG, "--ckpt_path", run_dir / "checkpoints" / "best.ckpt", *data]
    assert run_cli(*validate, "--trainer.default_root_dir", tmp_path / "one", *ONE, *QUIET) == 0
    one = tmp_path / "one" / "eval" / "validation" / "metrics.json"
    assert_same_metrics(run_dir / "metrics.json", one)
    assert {"val/rtd_accuracy", "val/rtd_auc"} <= json.loads(one.read_text()).keys()

    initial.load_state_dict(first)  # validated once, at the end: best.ckpt holds the final weights
    theirs = HFBertModel.from_pretrained(run_dir / "pretrained").eval()
    mask = (IDS != 0).long()
    with torch.no_grad():
        mine = initial.encoder.eval()(IDS, mask).last_hidden_state
        hf = theirs(input_ids=IDS, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(mine[mask.bool()], hf[mask.bool()], atol=1e-5, rtol=0)
