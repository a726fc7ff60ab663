"""The machinery every task shares: optimizer groups, schedule, batching, atomic writing, metrics.json."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
import torch

from tasks.callbacks import MetricsJsonWriter
from tasks.datamodule import TaskDataModule
from tasks.io import DataError, UserError, atomic_open, read_text_lines, write_jsonl
from tasks.module import TaskModule
from tasks.sampling import LengthGroupedSampler


@pytest.fixture
def module(tiny_bert_dir):
    return TaskModule(pretrained=str(tiny_bert_dir), learning_rate=1e-3, weight_decay=0.01)


def group_of(groups, param):
    return next(g for g in groups if any(p is param for p in g["params"]))


def test_weight_decay_spares_biases_and_layernorms(module):
    groups = module.parameter_groups()
    layer = module.encoder.encoder.layer[0]
    assert group_of(groups, layer.attention.self.qkv.weight)["weight_decay"] == 0.01
    assert group_of(groups, layer.attention.self.qkv.bias)["weight_decay"] == 0.0
    assert group_of(groups, layer.output.LayerNorm.weight)["weight_decay"] == 0.0
    assert group_of(groups, module.encoder.embeddings.LayerNorm.bias)["weight_decay"] == 0.0
    assert group_of(groups, module.encoder.embeddings.word_embeddings.weight)["weight_decay"] == 0.01
    assert sum(len(g["params"]) for g in groups) == len(list(module.parameters()))


def test_layerwise_lr_decay(tiny_bert_dir):
    module = TaskModule(pretrained=str(tiny_bert_dir), learning_rate=1.0, layerwise_lr_decay=0.5)
    groups = module.parameter_groups()
    layers = module.encoder.encoder.layer  # 2 layers: embeddings 0.5^3, layer0 0.5^2, layer1 0.5, pooler 1
    assert group_of(groups, module.encoder.embeddings.word_embeddings.weight)["lr"] == pytest.approx(0.125)
    assert group_of(groups, layers[0].intermediate.dense.weight)["lr"] == pytest.approx(0.25)
    assert group_of(groups, layers[1].intermediate.dense.weight)["lr"] == pytest.approx(0.5)
    assert group_of(groups, module.encoder.pooler.dense.weight)["lr"] == pytest.approx(1.0)


def test_freeze_encoder_leaves_nothing_of_it_to_train(tiny_bert_dir):
    module = TaskModule(pretrained=str(tiny_bert_dir), freeze_encoder=True)
    assert module.parameter_groups() == []  # the base has no head; a task's head would be all that trains


def test_linear_warmup_then_decay(module):
    module._trainer = SimpleNamespace(estimated_stepping_batches=100)
    module.hparams.warmup_ratio = 0.1
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    factors = []
    for _ in range(100):
        factors.append(scheduler.get_last_lr()[0] / 1e-3)
        scheduler.optimizer.step()
        scheduler.step()
    assert factors[0] == pytest.approx(1 / 11)  # warm-up over 10 steps
    assert factors[9] == pytest.approx(10 / 11)
    assert factors[10] == pytest.approx(1.0)  # peak, then linear decay to 0 at step 100
    assert factors[55] == pytest.approx(0.5)
    assert factors[99] == pytest.approx(1 / 90)


def test_collate_pads_to_multiple_of_eight(tiny_bert_dir):
    data = TaskDataModule(tokenizer=str(tiny_bert_dir))
    batch = data.collate(
        [
            {
                "input_ids": [101, 7, 102],
                "token_type_ids": [0, 0, 0],
                "attention_mask": [1, 1, 1],
                "labels": [1, 2, -100],
                "index": "a",
                "label": 3,
            },
            {
                "input_ids": [101] + [5] * 9 + [102],
                "token_type_ids": [0] * 11,
                "attention_mask": [1] * 11,
                "labels": [0] * 11,
                "index": "b",
                "label": 0,
            },
        ]
    )
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][0, 3:].eq(0).all() and batch["attention_mask"][0].sum() == 3
    assert batch["labels"][0, 3:].eq(-100).all()
    assert batch["index"] == ["a", "b"] and batch["label"].tolist() == [3, 0]


def test_length_grouped_sampler_is_a_permutation_with_homogeneous_batches():
    lengths = [(i * 37) % 100 + 1 for i in range(1000)]
    order = list(LengthGroupedSampler(lengths, batch_size=10, mega_batch=5))
    assert sorted(order) == list(range(1000))
    assert lengths[order[0]] == max(lengths)  # the longest batch first

    def mean_spread(indices):
        spans = [
            max(lengths[i] for i in indices[b : b + 10]) - min(lengths[i] for i in indices[b : b + 10])
            for b in range(0, len(indices), 10)
        ]
        return sum(spans) / len(spans)

    # sorting mega-batches of 50 out of 100 distinct lengths leaves batches spanning ~20; random ones ~80
    assert mean_spread(order) < 0.35 * mean_spread(list(range(1000)))


def test_atomic_open_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "predictions.jsonl"
    write_jsonl(target, [{"a": 1}])
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write('{"partial": true}\n')
        raise RuntimeError("crash mid-way")
    assert target.read_text() == '{"a": 1}\n'  # the old complete file, not the partial one
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.jsonl"]


def test_read_text_lines_errors_name_file_and_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("ok\nstill ok\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt:3: not valid UTF-8"):
        read_text_lines(path)
    path.write_bytes("\ufeffa\u2028b\r\nc\n".encode())
    assert read_text_lines(path) == ["a\u2028b", "c"]  # BOM dropped, only real newlines split


def test_metrics_json_keeps_the_other_prefix(tmp_path):
    writer = MetricsJsonWriter()
    trainer = SimpleNamespace(
        default_root_dir=str(tmp_path),
        is_global_zero=True,
        datamodule=None,
        callbacks=[],
        sanity_checking=False,
        state=SimpleNamespace(fn="validate"),
        callback_metrics={"val/f1": torch.tensor(0.5), "train/loss": torch.tensor(1.0)},
    )
    writer.on_validation_end(trainer, None)
    trainer.callback_metrics = {"test/f1": torch.tensor(0.25)}
    writer.on_test_end(trainer, None)
    trainer.callback_metrics = {"val/f1": torch.tensor(0.75)}
    writer.on_validation_end(trainer, None)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"val/f1": 0.75, "test/f1": 0.25}


def test_metrics_json_of_a_fit_appears_only_when_it_ends(tmp_path, capsys):
    writer = MetricsJsonWriter()
    (tmp_path / "metrics.json").write_text('{"val/f1": 0.1}')  # an earlier run's
    trainer = SimpleNamespace(
        default_root_dir=str(tmp_path),
        is_global_zero=True,
        datamodule=None,
        callbacks=[],
        sanity_checking=False,
        state=SimpleNamespace(fn="fit"),
        checkpoint_callbacks=[],
        current_epoch=0,
        global_step=4,
        callback_metrics={"val/f1": torch.tensor(0.5)},
    )
    writer.on_fit_start(trainer, None)
    writer.on_validation_end(trainer, None)
    assert not (tmp_path / "metrics.json").exists()  # a run killed now leaves nothing that looks finished
    trainer.callback_metrics = {"val/f1": torch.tensor(0.75)}
    writer.on_validation_end(trainer, None)
    writer.on_fit_end(trainer, None)
    best = {"path": "", "epoch": 0, "step": 4}  # no best.ckpt callback here: the last validation
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"val/f1": 0.75, "best_checkpoint": best}


def test_bad_pretrained_source_is_a_one_line_user_error(tmp_path, capsys):
    from .conftest import run_cli

    code = run_cli(
        "fit",
        "--config",
        "configs/sst2.yaml",
        "--model.pretrained",
        tmp_path / "missing_model",
        "--trainer.default_root_dir",
        tmp_path / "run",
    )
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "missing_model: not a checkpoint directory" in last
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_token_budget_batches_cover_every_item_once_within_the_budget():
    from tasks.sampling import TokenBudgetBatchSampler

    lengths = [(i * 37) % 120 + 3 for i in range(1000)]
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=1024, chunk=300, max_rows=64)
    batches = list(sampler)
    assert len(sampler) == len(batches)
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    for batch in batches:
        padded = 8 * -(-max(lengths[i] for i in batch) // 8)
        assert len(batch) * padded <= 1024 and len(batch) <= 64
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
        assert len({i // 300 for i in batch}) == 1  # a batch never mixes chunks: bounded reordering
    # short inputs run many to a batch, long ones few
    assert max(len(b) for b in batches) > 4 * min(len(b) for b in batches)
    # a single input longer than the budget still gets a batch of its own
    assert list(TokenBudgetBatchSampler([600, 5], max_tokens=256)) == [[0], [1]]


def test_an_evaluation_cut_short_gets_its_batches_in_file_order(tiny_bert_dir):
    """--trainer.limit_val_batches N evaluates the first N batches: they must hold the first
    examples whole (token-budget order would hand out the longest windows of many questions)."""
    import datasets

    module = TaskDataModule(tokenizer=str(tiny_bert_dir))
    rows = datasets.Dataset.from_dict({"input_ids": [[1] * n for n in (3, 9, 5, 7)]})
    trainer = SimpleNamespace(
        world_size=1, limit_val_batches=1.0, limit_test_batches=1.0, limit_predict_batches=1.0
    )
    module.trainer = trainer
    assert [len(b) for b in module.make_loader(rows, shuffle=False).batch_sampler] == [4]
    assert list(module.make_loader(rows, shuffle=False).batch_sampler) == [[1, 3, 2, 0]]  # longest first
    trainer.limit_val_batches = 1  # one batch
    assert list(module.make_loader(rows, shuffle=False, batch_size=2).batch_sampler) == [[0, 1], [2, 3]]
    assert list(module.make_loader(rows, shuffle=False).batch_sampler)[0] == [0, 1, 2, 3]
    trainer.limit_val_batches, trainer.world_size = 1.0, 2  # several processes: fixed batches too
    assert list(module.make_loader(rows, shuffle=False).batch_sampler)[0] == [0, 1, 2, 3]


def test_fused_adamw_on_cpu_matches_the_plain_step(tiny_bert_dir):
    """The fused AdamW kernel that fit uses on the CPU takes the same steps as the per-tensor one."""
    torch.manual_seed(0)
    fused_module = TaskModule(pretrained=str(tiny_bert_dir), learning_rate=1e-3, weight_decay=0.01)
    plain_module = TaskModule(pretrained=str(tiny_bert_dir), learning_rate=1e-3, weight_decay=0.01)
    plain_module.load_state_dict(fused_module.state_dict())
    for m in (fused_module, plain_module):
        m._trainer = SimpleNamespace(estimated_stepping_batches=10)
    fused = fused_module.configure_optimizers()["optimizer"]
    assert fused.defaults["fused"] is True
    plain = torch.optim.AdamW(
        plain_module.parameter_groups(), lr=1e-3, eps=fused_module.hparams.adam_epsilon, foreach=False
    )
    for plain_group, fused_group in zip(plain.param_groups, fused.param_groups, strict=True):
        plain_group["lr"] = fused_group["lr"]  # the schedule's warm-up already scaled the fused one
    for _ in range(5):
        for a, b in zip(fused_module.parameters(), plain_module.parameters(), strict=True):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        fused.step()
        plain.step()
    moved = 0.0
    for (name, a), b, before in zip(
        fused_module.named_parameters(),
        plain_module.parameters(),
        TaskModule(pretrained=str(tiny_bert_dir)).parameters(),
        strict=True,
    ):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name
        moved = max(moved, float((a - before).detach().abs().max()))
    assert moved > 1e-3  # the steps did move the weights


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and mallinfo2")
def test_fit_takes_the_embedding_gradient_from_the_heap():
    """keep_freed_memory (called for fit) moves a 47 MB block, the word-embedding gradient of
    all-MiniLM-L6-v2, from a fresh mmap (page-faulted in at every step) into the reusable heap."""
    import ctypes

    from tasks.cli import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        fields = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        _fields_ = [(name, ctypes.c_size_t) for name in fields.split()]

    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc older than 2.33")
    libc.mallinfo2.restype = MallInfo2

    def mapped_bytes_of_one_gradient() -> int:
        before = libc.mallinfo2().hblkhd  # bytes in mmap'ed blocks
        gradient = torch.zeros(30522, 384)
        mapped = libc.mallinfo2().hblkhd - before
        del gradient
        return mapped

    # (glibc's default mmaps it: over 32 MiB; an in-process fit earlier in the session may have
    # changed the setting already, so the default is not asserted here)
    keep_freed_memory()
    assert mapped_bytes_of_one_gradient() == 0


def test_the_data_tokenises_with_the_models_source_and_a_contradicting_casing_is_refused(tiny_bert_dir):
    """The app hands the data module the model's tokenizer (one read of the source); a casing that
    contradicts the source is refused here as bert_core refuses it (a checkpoint too, not ignored)."""
    from bert_core.tokenizer import load_tokenizer

    module = TaskModule(pretrained=str(tiny_bert_dir))
    casing = module._tokenizer_payload["do_lower_case"]
    reference = load_tokenizer(tiny_bert_dir)
    for handed in (module.tokenizer(), module.tokenizer(do_lower_case=casing)):
        assert handed.get_vocab() == reference.get_vocab()
        assert handed("Hello World")["input_ids"] == reference("Hello World")["input_ids"]
    with pytest.raises(UserError, match="do_lower_case"):
        module.tokenizer(do_lower_case=not casing)
