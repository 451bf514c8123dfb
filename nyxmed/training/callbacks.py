"""Trainer callbacks: checkpoint commit markers, frozen per-epoch adapters, run statistics, learning curves."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback

from nyxmed.io import write_json
from nyxmed.training import artifacts


def _is_whole_epoch(epoch: float | None) -> bool:
    return epoch is not None and epoch >= 1 and abs(epoch - round(epoch)) < 1e-6


class CheckpointCommitCallback(TrainerCallback):
    """Mark a Trainer checkpoint complete once every rank has finished writing it.

    Trainer checkpoints are written file by file; a kill -9 mid-save leaves a folder that looks
    like a checkpoint. Resume only trusts folders with the :data:`artifacts.COMPLETE` marker.
    """

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        self.trainer.accelerator.wait_for_everyone()
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            write_json(folder / artifacts.COMPLETE, {"step": state.global_step, "epoch": state.epoch})
        self.trainer.accelerator.wait_for_everyone()


class FrozenEpochCallback(TrainerCallback):
    """At the end of each whole epoch export ``frozen/epoch-N/``: the adapter as it is then.

    An evaluation is forced at the epoch end (and a checkpoint with it, so that load-best can
    return to it) unless one already ran at that step; ``frozen.json`` records its eval_loss. With
    ``evaluate`` false (a stage without an eval loss: GRPO) the adapter is exported as it is.
    """

    def __init__(self, trainer: Trainer, frozen_dir: str | Path, expected: dict[str, tuple[int, ...]],
                 evaluate: bool = True, provenance: dict[str, Any] | None = None):
        self.trainer = trainer
        self.evaluate = evaluate
        self.frozen_dir = Path(frozen_dir)
        self.expected = expected
        self.provenance = provenance or {}  # written into frozen.json (the merge checks the base fingerprint)
        self.pending: int | None = None

    def on_epoch_end(self, args, state, control, **kwargs):
        if not _is_whole_epoch(state.epoch):
            return control
        epoch = round(state.epoch)
        last_eval = next((r for r in reversed(state.log_history) if "eval_loss" in r), None)
        if not self.evaluate:
            self._export(epoch, state, None)
        elif last_eval is not None and last_eval["step"] == state.global_step:
            self._export(epoch, state, last_eval["eval_loss"])
        else:
            self.pending = epoch
            control.should_evaluate = True
            control.should_save = True
        return control

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.pending is not None:
            epoch, self.pending = self.pending, None
            self._export(epoch, state, (metrics or {}).get("eval_loss"))

    def _export(self, epoch: int, state, eval_loss: float | None) -> None:
        meta = {"epoch": epoch, "step": state.global_step, "eval_loss": eval_loss, **self.provenance}
        artifacts.export_adapter(lambda d: self.trainer.save_model(str(d)), self.frozen_dir / f"epoch-{epoch}",
                                 self.expected, meta, state.is_world_process_zero, meta_name="frozen.json")


class StopRecordingEarlyStopping(EarlyStoppingCallback):
    """Early stopping that remembers whether it ended the run (for the stop reason) and leaves alone
    evaluations under another prefix (the re-measure after training, ``final_eval_*``), for which
    transformers' callback would log that early stopping "is disabled"."""

    stopped = False

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        if "eval_loss" not in metrics:
            return
        super().on_evaluate(args, state, control, metrics, **kwargs)
        if control.should_training_stop and self.early_stopping_patience_counter >= self.early_stopping_patience:
            self.stopped = True


class RunStatsCallback(TrainerCallback):
    """Wall time of the training part and peak memory (accelerator memory on GPU, process RSS on CPU)."""

    def __init__(self):
        self.started = 0.0
        self.seconds = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self.started

    @staticmethod
    def peak_memory() -> dict[str, Any]:
        if torch.cuda.is_available():
            return {"kind": "cuda_max_allocated", "bytes": torch.cuda.max_memory_allocated()}
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # ru_maxrss is KiB on Linux, bytes on macOS.
        return {"kind": "cpu_max_rss", "bytes": rss if sys.platform == "darwin" else rss * 1024}


class LearningCurveCallback(TrainerCallback):
    """Every ``every`` optimizer steps (and at the start and the last step) evaluate, run ``measure()``
    (e.g. benchmark generation and metrics) and record a point of :attr:`curve`: step, training
    seconds without the evaluations, mean logged train loss since the last point, eval loss, and
    ``measure()``'s values. Single process (the measure runs where the callback does)."""

    def __init__(self, every: int, measure: Callable[[], dict[str, Any]],
                 on_point: Callable[[dict[str, Any]], None] | None = None):
        if every < 1:
            raise ValueError(f"every: expected a step count >= 1, got {every}")
        self.every, self.measure, self.on_point = every, measure, on_point
        self.curve: list[dict[str, Any]] = []
        self._started = self._paused = self._excluded = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._record({"step": state.global_step, "train_seconds": 0.0})
        self._started, self._excluded = time.perf_counter(), 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            control.should_evaluate = True
            self._paused = time.perf_counter()
        return control

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not self._paused or "eval_loss" not in (metrics or {}):  # not ours (e.g. the final re-measure)
            return
        since = self.curve[-1]["step"]
        losses = [r["loss"] for r in state.log_history if "loss" in r and since < r["step"] <= state.global_step]
        self._record({"step": state.global_step,
                      "train_seconds": round(self._paused - self._started - self._excluded, 1),
                      "answer_loss": round(sum(losses) / len(losses), 3) if losses else None,
                      "eval_loss": round(metrics["eval_loss"], 4)})
        self._excluded += time.perf_counter() - self._paused
        self._paused = 0.0

    def _record(self, point: dict[str, Any]) -> None:
        self.curve.append({**point, **self.measure()})
        if self.on_point:
            self.on_point(self.curve[-1])
