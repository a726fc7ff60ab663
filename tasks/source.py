"""Where a task's encoder comes from: a pretrained source ``bert_core`` reads, a task checkpoint of
this app, or an ONNX export directory; and what its tokenizer needs stored beside it."""

from __future__ import annotations

from typing import Any

from bert_core import BertConfig, BertModel
from bert_core.tokenizer import tokenizer_spec

from .checkpoint import encoder_state, is_onnx_export, is_task_checkpoint, read_checkpoint
from .io import UserError


def load_encoder(pretrained: str, **overrides) -> tuple[BertModel, dict[str, Any]]:
    """The encoder and what the checkpoint must carry to rebuild its tokenizer (vocab and casing)."""
    if is_onnx_export(pretrained):
        # The weights are in model.onnx (run by onnxruntime): this encoder only gives the heads their shapes.
        payload = read_checkpoint(pretrained)["payload"]
        encoder = BertModel(BertConfig.from_dict({**payload["bert_config"], **overrides}))
        return encoder, {k: payload[k] for k in ("vocab", "do_lower_case")}
    if is_task_checkpoint(pretrained):
        # A fine-tuned model's encoder: the start of another fine-tuning (MNLI -> RTE), or the model
        # itself for validate/test/predict (where Lightning loads the same weights again, head included).
        payload = read_checkpoint(pretrained)["payload"]
        encoder = BertModel.uninitialised(BertConfig.from_dict({**payload["bert_config"], **overrides}))
        try:
            encoder.load_state_dict(encoder_state(pretrained))
        except RuntimeError as err:
            raise mismatched_weights(pretrained, err) from None
        return encoder, {k: payload[k] for k in ("vocab", "do_lower_case")}
    encoder = BertModel.from_pretrained(pretrained, **overrides)
    spec = tokenizer_spec(pretrained)
    return encoder, {"vocab": spec.tokens, "do_lower_case": spec.do_lower_case}


def mismatched_weights(source: Any, err: RuntimeError) -> Exception:
    """torch's "Error(s) in loading state_dict" as a one-line UserError naming the checkpoint."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines or not lines[0].startswith("Error(s) in loading state_dict"):
        return err
    detail = lines[1] if len(lines) > 1 else lines[0]
    return UserError(f"{source}: its weights do not fit the model its settings describe ({detail[:300]})")
