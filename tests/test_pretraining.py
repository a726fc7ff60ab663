"""Further pre-training: the masked-only MLM head, fixed validation masks, the CLI run and its
HF-format output (loaded by transformers, fine-tuned by a task config), NSP, Chinese whole words."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bert_core import BertForPreTraining
from tasks.pretraining import PreTrainingDataModule, PreTrainingModule

from .conftest import QUIET_TRAINER_ARGS as QUIET
from .conftest import ROOT, evaluation_metrics, run_cli

CONFIG = ROOT / "configs" / "pretrain.yaml"
SAMPLE = ROOT / "data" / "pretrain"


def test_masked_only_head_equals_the_full_head_and_googles_heads_are_kept(tiny_tf_dir):
    module = PreTrainingModule(pretrained=str(tiny_tf_dir), nsp=True).eval()
    reference = BertForPreTraining.from_pretrained(tiny_tf_dir).eval()
    torch.testing.assert_close(module.cls.predictions.bias, reference.cls.predictions.bias)
    ids = torch.tensor([[2, 40, 41, 42, 43, 3, 50, 51, 3], [2, 60, 61, 3, 70, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    types = torch.tensor([[0] * 6 + [1] * 3, [0] * 4 + [1] * 2 + [0] * 3])
    positions = torch.tensor([1, 3, 7, 9 + 2, 9 + 4])  # flat b * T + t
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "mlm_positions": positions}
    with torch.no_grad():
        mlm, nsp = module(batch)
        full = reference(ids, mask, types)
    assert mlm.shape == (5, reference.config.vocab_size)
    torch.testing.assert_close(mlm, full.prediction_logits.flatten(0, 1)[positions], atol=1e-5, rtol=0)
    torch.testing.assert_close(nsp, full.seq_relationship_logits, atol=1e-5, rtol=0)


@pytest.fixture
def datamodule(tiny_bert_dir):
    module = PreTrainingDataModule(
        train_file=str(SAMPLE / "corpus.txt"),
        validation_file=str(SAMPLE / "heldout.txt"),
        tokenizer=str(tiny_bert_dir),
        max_seq_length=32,
        batch_size=4,
    )
    module.setup("fit")
    return module


def test_validation_masks_are_fixed_however_batched(datamodule):
    rows = list(datamodule.prepared["validation"][0].dataset)
    assert len(rows) >= 4
    whole = datamodule.collate_fixed(rows)
    again = datamodule.collate_fixed(list(reversed(rows[:2])) + rows[2:])
    T = whole["input_ids"].shape[1]

    def masked_of(batch, order):
        per_row = {}
        for flat, label in zip(batch["mlm_positions"].tolist(), batch["mlm_labels"].tolist()):
            per_row.setdefault(order[flat // T], []).append((flat % T, label))
        return per_row

    order = list(range(len(rows)))
    assert masked_of(whole, order) == masked_of(again, [1, 0, *order[2:]])
    assert len(whole["mlm_positions"]) > 0
    # training masks are drawn anew for every batch
    torch.manual_seed(0)
    first = datamodule.collate_training(rows)["mlm_positions"]
    second = datamodule.collate_training(rows)["mlm_positions"]
    assert not torch.equal(first, second)


def test_fit_writes_a_pretrained_directory_that_transformers_and_task_configs_load(tiny_bert_dir, tmp_path):
    from transformers import BertForMaskedLM

    run_dir = tmp_path / "pretrain"
    common = [
        "--config",
        CONFIG,
        "--model.pretrained",
        tiny_bert_dir,
        *QUIET,
        "--data.cache_dir",
        tmp_path / "c",
    ]
    # the baseline: the unchanged encoder validated without any checkpoint
    assert run_cli("validate", *common, "--trainer.default_root_dir", tmp_path / "baseline") == 0
    baseline = evaluation_metrics(tmp_path / "baseline", "validation")
    assert baseline["val/perplexity"] == pytest.approx(np.exp(baseline["val/mlm_loss"]), rel=1e-6)
    fit = ["fit", *common, "--trainer.default_root_dir", run_dir, "--trainer.max_epochs", "3"]
    assert run_cli(*fit, "--model.learning_rate", "1e-3") == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val/mlm_loss", "val/mlm_accuracy", "val/perplexity"):
        assert key in metrics
    assert metrics["val/mlm_loss"] < baseline["val/mlm_loss"]

    pretrained = run_dir / "pretrained"
    assert {p.name for p in pretrained.iterdir()} >= {"config.json", "model.safetensors", "vocab.txt"}
    # pretrained/ holds best.ckpt's weights (lowest val/mlm_loss)
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    module = PreTrainingModule(pretrained=str(tiny_bert_dir))
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    hf = BertForMaskedLM.from_pretrained(pretrained).eval()
    ids = torch.tensor([[101, 7592, 2088, 103, 102, 0], [101, 2023, 103, 2003, 1037, 102]])
    mask = (ids != 0).long()
    with torch.no_grad():
        ours = module({"input_ids": ids, "attention_mask": mask, "mlm_positions": torch.arange(12)})[0]
        theirs = hf(input_ids=ids, attention_mask=mask).logits.flatten(0, 1)
    real = mask.flatten().bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-4, rtol=0)

    # every task config takes it as its encoder
    task = ["fit", "--config", ROOT / "configs" / "sst2.yaml", "--model.pretrained", pretrained, *QUIET]
    task += ["--trainer.default_root_dir", tmp_path / "sst2", "--trainer.max_steps", "2"]
    assert run_cli(*task, "--data.cache_dir", tmp_path / "c") == 0
    assert (tmp_path / "sst2" / "checkpoints" / "best.ckpt").is_file()


def test_pretrained_directory_holds_best_ckpts_weights_read_from_the_file_only_when_training_went_on(
    tiny_bert_dir, tmp_path
):
    """on_fit_end writes pretrained/ from best.ckpt's file when training stepped after its save, and
    from the weights in memory (the same ones: the file's tensors are never paged in) when not."""
    from types import SimpleNamespace

    from safetensors.torch import load_file

    module = PreTrainingModule(pretrained=str(tiny_bert_dir))
    best_weights = {k: v + 1.0 for k, v in module.state_dict().items()}  # differ from the module's
    best = tmp_path / "best.ckpt"
    torch.save({"global_step": 5, "state_dict": best_weights}, best)
    callback = SimpleNamespace(best_model_path=str(best))
    embeddings = "bert.embeddings.word_embeddings.weight"
    for step, expected in ((7, best_weights), (5, module.state_dict())):
        run_dir = tmp_path / f"step{step}"
        module.trainer = SimpleNamespace(
            is_global_zero=True, checkpoint_callback=callback, global_step=step, default_root_dir=run_dir
        )
        module.on_fit_end()
        written = load_file(run_dir / "pretrained" / "model.safetensors")
        assert torch.equal(written[embeddings], expected["encoder.embeddings.word_embeddings.weight"])
        assert torch.equal(written["cls.predictions.bias"], expected["cls.predictions.bias"])


def test_nsp_and_whole_word_masking_through_the_cli(tiny_bert_dir, tmp_path):
    run_dir = tmp_path / "nsp"
    fit = ["fit", "--config", CONFIG, "--model.pretrained", tiny_bert_dir, *QUIET]
    fit += ["--trainer.max_epochs", "1"]
    fit += ["--trainer.default_root_dir", run_dir, "--model.nsp", "true", "--data.masking", "whole_word"]
    fit += ["--data.max_seq_length", "48"]
    assert run_cli(*fit) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["val/nsp_accuracy"] <= 1.0 and "val/nsp_loss" in metrics
    # the checkpoint alone validates with the settings it was trained with (NSP, 48 tokens)
    best = run_dir / "checkpoints" / "best.ckpt"
    assert (
        run_cli(
            "validate", "--config", CONFIG, "--ckpt_path", best, *QUIET, "--trainer.default_root_dir", run_dir
        )
        == 0
    )
    again = json.loads((run_dir / "metrics.json").read_text())
    assert again["val/nsp_accuracy"] == pytest.approx(metrics["val/nsp_accuracy"])
    assert again["val/mlm_loss"] == pytest.approx(metrics["val/mlm_loss"], abs=1e-5)


def test_chinese_whole_word_masking_groups_characters_into_segmenter_words(tiny_bert_dir):
    pytest.importorskip("jieba")
    module = PreTrainingDataModule(
        train_file=str(SAMPLE / "chinese.txt"),
        tokenizer=str(tiny_bert_dir),
        masking="whole_word",
        chinese_segmenter="jieba",
        max_seq_length=64,
    )
    documents = module._tokenized_documents(str(SAMPLE / "chinese.txt"))
    first = documents[0][0]  # 今天北京的天气很好，阳光明媚。
    tokens = module.tokenizer.convert_ids_to_tokens([t for t, _ in first])
    words = [w for _, w in first]
    assert tokens[1:4] == ["天", "北", "京"]  # (今 is not in the English vocabulary: [UNK])
    assert words[0] == words[1] != words[2] == words[3]  # 今天 | 北京: one word each, character tokens
    # without the segmenter every character is its own word
    plain = PreTrainingDataModule(train_file=str(SAMPLE / "chinese.txt"), tokenizer=str(tiny_bert_dir))
    plain_words = [w for _, w in plain._tokenized_documents(str(SAMPLE / "chinese.txt"))[0][0]]
    assert len(set(plain_words[:4])) == 4


@pytest.mark.parametrize(
    "content, name, options, message",
    [
        ('{"body": "x"}\n', "c.jsonl", [], "c.jsonl:1: no 'text' field (has: body)"),
        ("{oops\n", "c.jsonl", [], "c.jsonl:1: not valid JSON"),
        ("\n\n", "c.txt", [], "c.txt: no text"),
        ("One sentence. Another one.\n", "c.txt", ["--model.nsp", "true"], "at least two documents"),
    ],
)
def test_bad_corpus_is_a_clear_error(tiny_bert_dir, tmp_path, capsys, content, name, options, message):
    corpus = tmp_path / name
    corpus.write_text(content)
    args = ["fit", "--config", CONFIG, "--model.pretrained", tiny_bert_dir, *QUIET, *options]
    args += [
        "--data.train_file",
        corpus,
        "--data.validation_file",
        corpus,
        "--trainer.default_root_dir",
        tmp_path / "r",
    ]
    assert run_cli(*args) == 2
    assert message in capsys.readouterr().err
    assert not (Path(tmp_path / "r") / "checkpoints").exists()


def test_a_masked_lm_source_without_pooler_or_nsp_head_keeps_its_mlm_head(tiny_bert_dir, tmp_path, capsys):
    """What HF's run_mlm.py writes (BertForMaskedLM: no pooler, no NSP head) is a valid source."""
    from transformers import BertConfig as ReferenceConfig
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    config = ReferenceConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64)  # fmt: skip
    reference = BertForMaskedLM(config).eval()
    reference.save_pretrained(tmp_path / "mlm")
    for name in ("vocab.txt", "tokenizer_config.json"):
        (tmp_path / "mlm" / name).write_bytes((tiny_bert_dir / name).read_bytes())
    module = PreTrainingModule(pretrained=str(tmp_path / "mlm")).eval()
    err = capsys.readouterr().err
    assert "has no pooler" in err and "has no NSP head" in err
    ids = torch.tensor([[101, 7592, 103, 2088, 102]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mlm_positions": torch.arange(5)}
    with torch.no_grad():
        ours = module(batch)[0]
        theirs = reference(input_ids=ids).logits[0]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_ranks_draw_different_masks_and_literal_special_tokens_are_text(datamodule, tmp_path):
    rows = list(datamodule.prepared["train"][0].dataset)[:4]
    draws = []
    for rank in (0, 1):
        datamodule._rank = rank
        torch.manual_seed(7)  # every rank starts from the same seeded state
        draws.append(datamodule.collate_training(rows)["mlm_positions"].tolist())
    assert draws[0] != draws[1]
    corpus = tmp_path / "special.txt"
    corpus.write_text("See the [MASK] and the [SEP] and [CLS] here.\n")
    ids = [t for sentence in datamodule._tokenized_documents(str(corpus))[0] for t, _ in sentence]
    specials = set(datamodule.tokenizer.all_special_ids)
    assert not specials & set(ids)
