"""Optuna's pruner fed by each validation of a sweep's trial (``python -m tasks sweep --prune true``).

The sweep adds this callback to a trial's ``fit`` by its class path, with the study's storage URL,
name and the trial's id: the callback reports the task's main metric at every epoch's validation
and, when the median pruner says so, stops the fit there (a graceful stop: best.ckpt and
metrics.json are written as for any fit). The sweep then records the trial as pruned.
"""

from __future__ import annotations

import lightning as L

from .sweep_storage import PRUNED_AT


class ReportToStudy(L.Callback):
    """Report ``pl_module.main_metric`` at each validation to an Optuna trial; stop when pruned.

    Args:
        storage: the study's storage URL (as ``--storage`` takes it).
        study: the study's name.
        trial: the trial's id in the storage.
    """

    def __init__(self, storage: str, study: str, trial: int):
        self.storage, self.study, self.trial_id = storage, study, trial
        self._trial = None

    def _open(self):
        if self._trial is None:
            import optuna

            from .sweep_storage import open_storage, pruner

            study = optuna.load_study(
                study_name=self.study, storage=open_storage(self.storage), pruner=pruner()
            )
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(pl_module.main_metric)
        prune = False
        if trainer.is_global_zero and value is not None:
            trial = self._open()
            trial.report(
                float(value), trainer.current_epoch
            )  # steps are epochs: comparable across batch sizes
            prune = trial.should_prune()
            if prune:
                trial.set_user_attr(PRUNED_AT, {"epoch": trainer.current_epoch, "step": trainer.global_step})
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
