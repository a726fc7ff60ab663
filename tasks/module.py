"""The LightningModule every task builds on: encoder, optimizer groups, schedule, checkpoints, predictions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from bert_core import BertConfig, BertModel, resolve_source
from bert_core.tokenizer import infer_lower_case, read_vocab

from .callbacks import MetricsJsonWriter
from .checkpoint import PAYLOAD_KEY, is_task_checkpoint, read_checkpoint


class TaskModule(L.LightningModule):
    """Encoder + task head. Subclasses build the head and define the steps.

    Args:
        pretrained: any source ``bert_core`` loads (TF checkpoint, HF directory, ``all-MiniLM-L6-v2``,
            hub id), or a task ``.ckpt`` (the encoder is then built from the config stored in it).
        task, label_names: linked from the data module; stored in the checkpoint.
        learning_rate: peak learning rate (AdamW).
        weight_decay: decoupled weight decay, not applied to biases and LayerNorm weights.
        warmup_ratio: share of the total training steps spent in linear warm-up (then linear decay to 0).
        adam_epsilon: AdamW epsilon (BERT used 1e-6).
        layerwise_lr_decay: layer l of L gets ``learning_rate * decay ** (L - l)``, embeddings
            ``decay ** (L + 1)``; 1.0 turns it off.
        freeze_encoder: train the head only ("BERT + linear").
        hidden_dropout_prob, attention_probs_dropout_prob: override the encoder's dropout rates.
    """

    main_metric: str = "val/loss"
    main_metric_mode: str = "min"

    def __init__(
        self,
        pretrained: str = "all-MiniLM-L6-v2",
        task: str | None = None,
        label_names: list[str] | None = None,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        adam_epsilon: float = 1e-6,
        layerwise_lr_decay: float = 1.0,
        freeze_encoder: bool = False,
        hidden_dropout_prob: float | None = None,
        attention_probs_dropout_prob: float | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        overrides = {k: v for k, v in (("hidden_dropout_prob", hidden_dropout_prob),
                                       ("attention_probs_dropout_prob", attention_probs_dropout_prob))
                     if v is not None}
        self.encoder, self._tokenizer_payload = load_encoder(pretrained, **overrides)
        self.label_names = list(label_names) if label_names is not None else None
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.hidden_size

    @property
    def run_dir(self) -> Path:
        return Path(self.trainer.default_root_dir)

    def encode(self, batch: dict[str, torch.Tensor]):
        return self.encoder(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))

    # -- optimisation ------------------------------------------------------------------------

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: no decay on biases and LayerNorms; optional layer-wise learning-rate decay."""
        lr, decay = self.hparams.learning_rate, self.hparams.layerwise_lr_decay
        num_layers = self.encoder.config.num_hidden_layers
        groups: dict[tuple[float, float], list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name
            depth = _depth(name, num_layers)  # 0 = embeddings, 1..L = layers, L + 1 = pooler and head
            scale = decay ** (num_layers + 1 - depth)
            key = (lr * scale, 0.0 if no_decay else self.hparams.weight_decay)
            groups.setdefault(key, []).append(param)
        return [{"params": params, "lr": group_lr, "weight_decay": wd} for (group_lr, wd), params in groups.items()]

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=self.hparams.learning_rate,
                                      eps=self.hparams.adam_epsilon)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.hparams.warmup_ratio * total)

        def linear_warmup_then_decay(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_then_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints ---------------------------------------------------------------------------

    def configure_callbacks(self):
        has_validation = getattr(self.trainer.datamodule, "validation_file", None) is not None or getattr(
            self.trainer.datamodule, "dataset", None) is not None
        best = ModelCheckpoint(
            dirpath=self.run_dir / "checkpoints",
            filename="best",
            monitor=self.main_metric if has_validation else None,
            mode=self.main_metric_mode,
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        # Not save_last=True: Lightning 2.6 then writes last.ckpt only at steps where best.ckpt is
        # written too, so it would freeze at the best epoch. "step" always grows: saved every time.
        last = ModelCheckpoint(
            dirpath=self.run_dir / "checkpoints",
            filename="last",
            monitor="step",
            mode="max",
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        return [best, last, MetricsJsonWriter()]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[PAYLOAD_KEY] = {"bert_config": self.encoder.config.to_dict(), **self._tokenizer_payload}

    # -- prediction ----------------------------------------------------------------------------

    def on_predict_epoch_start(self) -> None:
        self._predictions: list[Any] = []

    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._predictions.append(outputs)

    def on_predict_epoch_end(self) -> None:
        paths = self.trainer.datamodule.write_predictions(self._predictions)
        self._predictions = []
        if self.trainer.is_global_zero:
            for path in paths if isinstance(paths, list | tuple) else [paths]:
                print(f"predictions written to {path}", file=sys.stderr)


def _depth(name: str, num_layers: int) -> int:
    if name.startswith("encoder.embeddings."):
        return 0
    if name.startswith("encoder.encoder.layer."):
        return int(name.split(".")[3]) + 1
    return num_layers + 1


def load_encoder(pretrained: str, **overrides) -> tuple[BertModel, dict[str, Any]]:
    """The encoder and what the checkpoint must carry to rebuild its tokenizer (vocab and casing)."""
    if is_task_checkpoint(pretrained):  # weights arrive with Lightning's checkpoint loading
        payload = read_checkpoint(pretrained)["payload"]
        config = BertConfig.from_dict({**payload["bert_config"], **overrides})
        return BertModel(config), {k: payload[k] for k in ("vocab", "do_lower_case")}
    encoder = BertModel.from_pretrained(pretrained, **overrides)
    resolved = resolve_source(pretrained)
    vocab_path = resolved.directory / "vocab.txt"
    vocab = read_vocab(vocab_path)
    do_lower_case, _ = infer_lower_case(resolved.directory, vocab, resolved.name)
    tokens = [line.rstrip("\r") for line in vocab_path.read_text(encoding="utf-8").split("\n")]
    if tokens and tokens[-1] == "":
        tokens.pop()
    return encoder, {"vocab": tokens, "do_lower_case": do_lower_case}
