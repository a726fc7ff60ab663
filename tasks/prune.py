"""``python -m tasks prune --ckpt_path CKPT --heads 0.25 --output pruned.ckpt``: structured pruning.

* ``--heads F`` removes the share F of attention heads that matter least on the dev set. A head's
  importance is Michel et al. (2019)'s: the gradient of the loss with respect to a gate on the
  head's output, |d loss / d gate| summed over the dev batches, normalised per layer (L2); the
  lowest are removed across all layers, keeping at least one head per layer.
* ``--drop_layers N`` removes the top N layers first (Sajjad et al. 2020, "Poor Man's BERT").
* ``--magnitude S`` (unstructured, ``tasks/sparsity.py``) sets the share S of each Linear weight of
  the encoder's layers to zero, the smallest |w| first: ``--schedule oneshot`` (the default) at once;
  ``cubic`` is the gradual schedule of ``fit --model.sparsity_target S``, which prunes while it
  fine-tunes and keeps the pruned weights at zero (a checkpoint cannot be pruned gradually without
  training: prune says so). The shapes stay; the checkpoint records the sparsity reached.

The output is an ordinary task checkpoint with a smaller encoder (its stored config carries
``num_hidden_layers`` and ``pruned_heads``): validate, test and predict take it, and
``fit --model.pretrained pruned.ckpt`` fine-tunes it further. The dev data comes from ``--config``
(by default the run's own ``config.yaml`` beside ``checkpoints/``); other options (``--data.*``)
are passed on, as to ``validate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from bert_core.pruning import drop_layers, head_gates, kept_heads, prune_heads

from .checkpoint import PAYLOAD_KEY, read_weights, save_checkpoint_file
from .io import CommandParser, UserError, check_output_paths
from .registry import TaskKind
from .source import Source, load_task_module
from .sparsity import (
    SCOPES,
    SPARSITY_KEY,
    apply_masks,
    check_sparsity,
    magnitude_masks,
    prunable_weights,
    sparsity_record,
)

PRUNING_KEY = "bert_tasks_pruning"  # what was removed, and the importance it was chosen by
# Parts of a full checkpoint that describe the training run, not the model: a pruned one has none.
RUN_STATE_KEYS = ("optimizer_states", "lr_schedulers", "loops", "callbacks")
PRUNABLE = ("classification", "tagging", "qa")  # registry kinds with a dev-set loss to rank heads by


def head_importance(model, loader, max_batches: int | None = None) -> list[torch.Tensor]:
    """Per layer, [heads] of |d loss / d head gate| summed over the batches (eval mode: no dropout)."""
    model.eval()
    totals: list[torch.Tensor] | None = None
    with head_gates(model.encoder) as gates:
        for index, batch in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            model.zero_grad(set_to_none=True)
            loss = model.training_loss(model(batch), batch)
            grads = torch.autograd.grad(loss, gates)
            grads = [g.detach().abs().cpu() for g in grads]
            totals = grads if totals is None else [t + g for t, g in zip(totals, grads, strict=True)]
    if totals is None:
        raise UserError("no dev batches to measure head importance on (an empty validation file?)")
    return totals


def normalise_per_layer(importance: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each layer's scores divided by their L2 norm (Michel et al.: layers become comparable)."""
    return [scores / (scores.norm(p=2) + 1e-20) for scores in importance]


def heads_to_prune(importance: list[torch.Tensor], config, fraction: float) -> dict[int, list[int]]:
    """The ``fraction`` least important heads of all layers ({layer: [original head index]}),
    never the last head of a layer. ``importance[l][j]`` scores the j-th head layer l still has."""
    total = sum(len(scores) for scores in importance)
    count = int(round(fraction * total))
    ranked = sorted(
        (float(score), layer, position)
        for layer, scores in enumerate(importance)
        for position, score in enumerate(scores)
    )
    left = [len(scores) for scores in importance]
    chosen: dict[int, list[int]] = {}
    for _, layer, position in ranked:
        if count == 0:
            break
        if left[layer] == 1:
            continue
        chosen.setdefault(layer, []).append(kept_heads(config, layer)[position])
        left[layer] -= 1
        count -= 1
    return {layer: sorted(heads) for layer, heads in sorted(chosen.items())}


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = CommandParser(
        prog="python -m tasks prune",
        description="Remove attention heads (by dev-set importance) and/or top layers from a task checkpoint.",
        epilog="Other options (--data.validation_file, --data.eval_batch_size, ...) are passed on as to validate.",
    )
    parser.add_argument("--ckpt_path", required=True, help="a fine-tuned task checkpoint (.ckpt)")
    parser.add_argument("--output", required=True, help="where to write the pruned checkpoint (.ckpt)")
    parser.add_argument(
        "--heads", type=float, default=0.0, help="share of the attention heads to remove, in [0, 1)"
    )
    parser.add_argument("--drop_layers", type=int, default=0, help="remove this many top layers")
    parser.add_argument(
        "--magnitude",
        type=float,
        default=0.0,
        help="share of each encoder Linear weight set to zero, in [0, 1)",
    )
    parser.add_argument(
        "--schedule",
        choices=("oneshot", "cubic"),
        default="oneshot",
        help="oneshot: prune --magnitude at once; cubic: gradually while fine-tuning (fit --model.sparsity_target)",
    )
    parser.add_argument(
        "--prune_embeddings", action="store_true", help="with --magnitude: the embeddings too"
    )
    parser.add_argument(
        "--magnitude_scope",
        choices=SCOPES,
        default="layer",
        help="with --magnitude: layer: that share of each weight matrix; global: of all of them, ranked together",
    )
    parser.add_argument(
        "--config", help="the task's config (default: the run's config.yaml beside checkpoints/)"
    )
    parser.add_argument(
        "--max_batches", type=int, default=None, help="dev batches for the importance (default: all)"
    )
    return parser.parse_known_args(argv)


def main(argv: list[str]) -> int:
    args, rest = _parse(argv)
    print(prune(args, rest))
    return 0


def prune(args: argparse.Namespace, rest: list[str]) -> str:
    ckpt, output = Path(args.ckpt_path), Path(args.output)
    if not ckpt.is_file() or Source(ckpt).kind != Source.CHECKPOINT:
        raise UserError(f"--ckpt_path {ckpt}: not a task checkpoint (.ckpt) file")
    if not 0.0 <= args.heads < 1.0:
        raise UserError(f"--heads must be in [0, 1), not {args.heads}")
    check_sparsity("--magnitude", args.magnitude)
    if args.schedule == "cubic" and args.magnitude > 0:
        raise UserError(
            "--schedule cubic prunes while fine-tuning: run fit --model.sparsity_target "
            f"{args.magnitude} --model.pretrained {ckpt} (prune --magnitude prunes one-shot)"
        )
    if args.drop_layers < 0:
        raise UserError(f"--drop_layers must be at least 0, not {args.drop_layers}")
    if output.suffix != ".ckpt":
        raise UserError(f"--output {output}: a pruned checkpoint's name ends in .ckpt")
    check_output_paths([output], [ckpt])
    if args.heads == 0 and args.drop_layers == 0 and args.magnitude == 0:
        raise UserError("nothing to prune: give --heads F, --drop_layers N and/or --magnitude S")

    kind = Source(ckpt).task_kind()
    if kind.key not in PRUNABLE:
        raise UserError(f"{ckpt}: a checkpoint of a {kind.key} model; prune takes {', '.join(PRUNABLE)}")
    checkpoint = read_weights(ckpt)
    model, _ = load_task_module(ckpt)
    encoder = model.encoder
    before_layers, before_heads = encoder.config.num_hidden_layers, _heads(encoder.config)
    before_params = sum(p.numel() for p in model.parameters())
    if args.drop_layers:
        if args.drop_layers >= before_layers:
            raise UserError(
                f"--drop_layers {args.drop_layers}: the encoder has {before_layers} layers; keep one"
            )
        model.encoder = drop_layers(encoder, args.drop_layers)
    removed: dict[int, list[int]] = {}
    importance: list[list[float]] = []
    if args.heads > 0:
        data = _dev_data(ckpt, kind, args.config, rest)
        data.setup("validate")
        loaders = data.val_dataloader()
        if not loaders:
            raise UserError(
                "head importance needs dev data: give the task's --config, or --data.validation_file"
            )
        scores = normalise_per_layer(head_importance(model, loaders[0], args.max_batches))
        importance = [s.tolist() for s in scores]
        removed = heads_to_prune(scores, model.encoder.config, args.heads)
        model.encoder = prune_heads(model.encoder, removed)

    sparsity = None
    if args.magnitude > 0:  # after the structural pruning: the share is of the weights that stay
        weights = prunable_weights(model.encoder, args.prune_embeddings)
        apply_masks(weights, magnitude_masks(weights, args.magnitude, scope=args.magnitude_scope))
        sparsity = sparsity_record(weights, args.magnitude, "oneshot", args.magnitude_scope)

    config = model.encoder.config
    pruned = {k: v for k, v in checkpoint.items() if k not in RUN_STATE_KEYS}
    pruned["state_dict"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pruned[PAYLOAD_KEY] = {**checkpoint[PAYLOAD_KEY], "bert_config": config.to_dict()}
    pruned[PRUNING_KEY] = {
        "source": str(ckpt),
        "dropped_layers": args.drop_layers,
        "heads_removed": {str(k): v for k, v in removed.items()},
        "head_importance": importance,
    }
    if sparsity is not None:
        pruned[SPARSITY_KEY] = sparsity
    save_checkpoint_file(pruned, output)
    after_params = sum(p.numel() for p in model.parameters())
    zeros = f"; encoder weights at zero: {sparsity['sparsity']:.1%}" if sparsity is not None else ""
    return (
        f"{output}: layers {before_layers} -> {config.num_hidden_layers}, attention heads "
        f"{before_heads} -> {_heads(config)}, parameters {before_params:,} -> {after_params:,}; "
        f"heads removed (layer: original indices): {removed or 'none'}{zeros}"
    )


def _heads(config) -> int:
    return sum(config.heads_in_layer(layer) for layer in range(config.num_hidden_layers))


def _dev_data(ckpt: Path, kind: TaskKind, config: str | None, rest: list[str]) -> Any:
    """The data module ``validate --ckpt_path`` would build (the checkpoint's featurisation, labels
    and tokenizer; the dev file from the config or ``--data.*``). The model prune works on is
    ``load_task_module``'s, not this parse's."""
    from .app import BertTasksCLI
    from .io import user_error_in
    from .runtime import quiet_lightning

    if config is None:
        run_config = ckpt.resolve().parent.parent / "config.yaml"
        config = str(run_config) if run_config.is_file() else None
    # Without a config (a checkpoint alone, --data.validation_file given): the registry's classes.
    source = ["--config", config] if config else ["--model", kind.module, "--data", kind.data_module]
    quiet_lightning()
    args = ["validate", *source, *rest, "--ckpt_path", str(ckpt)]
    args += ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.logger", "false"]

    class Builder(BertTasksCLI):
        """``validate``'s parsing and instantiation (checkpoint settings, labels, tokenizer), not its run."""

        locks_run_directory = False  # prune writes its --output, nothing in the run directory

        def _run_subcommand(self, subcommand: str) -> None:
            pass

    try:
        cli = Builder(args=args)
    except Exception as err:
        user_error = user_error_in(err)
        if user_error is None:
            raise
        raise UserError(str(user_error)) from None
    return cli.datamodule
