"""Trainer hooks, in the style of detectron2's ``HookBase``: what the training loop does besides
the optimisation step (logging, evaluation, PreciseBN, closing weak paths, checkpoints).

A hook gets the :class:`~dynviz.train.trainer.Trainer` as ``self.trainer`` when it is
registered, and four calls:

- ``before_train()``: once per :meth:`Trainer.run`, after the run log is open and before the
  first step (``trainer.iteration`` is where this run starts: 0, or the resumed iteration);
- ``before_step()``: before each step; ``trainer.iteration`` is the number of iterations done
  (the 0-based index of the step about to run);
- ``after_step()``: after each step; ``trainer.iteration`` counts it (1 after the first step),
  ``trainer.step`` holds its values (:class:`~dynviz.train.trainer.StepOutput`);
- ``after_train()``: once, after the last step of the run, when no step raised (a run that
  stops with an error is not finished: no final evaluation and no final checkpoint).

Hooks are called in the order they were registered. :meth:`Trainer.default_hooks` gives, in
this order: :class:`MetricsHook`, :class:`PreciseBNHook`, :class:`ClosePathsHook`,
:class:`EvalHook`, :class:`CheckpointHook`. So after a step the ``train`` record is written
before that iteration's evaluation, and the checkpoint is written last; after the last
iteration the BatchNorm statistics are re-estimated, then the weak paths closed, then the
network evaluated, then saved. A user's hooks (``Trainer(config, hooks=[...])`` or
:meth:`Trainer.register_hooks`) come after these. Hooks run on every process of a DDP job
(evaluation and checkpoints are collective); only rank 0 has a run log.

Like detectron2's, ``before_step`` and ``after_step`` run every iteration and should take
negligible time except on the iterations where they act.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from dynviz.inference.evaluate import EvalResult, evaluate
from dynviz.model.checkpoint import BEST, LATEST
from dynviz.support.distributed import broadcast_buffers
from dynviz.train.precise_bn import update_bn_stats
from dynviz.units import format_macs

if TYPE_CHECKING:
    from dynviz.train.trainer import Trainer

__all__ = [
    "CheckpointHook",
    "ClosePathsHook",
    "EvalHook",
    "HookBase",
    "MetricsHook",
    "PreciseBNHook",
]

# the training loop's messages keep the trainer's logger name, as in log.txt before the hooks
logger = logging.getLogger("dynviz.train.trainer")


class HookBase:
    """A training hook: override any of the four calls (each does nothing here).

    ``self.trainer`` is set by :meth:`Trainer.register_hooks`; a hook belongs to one trainer.
    """

    trainer: Trainer

    def before_train(self) -> None:
        """Once per run, before the first step."""

    def after_train(self) -> None:
        """Once per run, after the last step (not when a step raised)."""

    def before_step(self) -> None:
        """Before each step (``trainer.iteration`` steps done)."""

    def after_step(self) -> None:
        """After each step (``trainer.iteration`` counts it)."""


class MetricsHook(HookBase):
    """Every ``period`` iterations and at the run's last one: a ``train`` record in
    ``metrics.jsonl`` (losses, LR, budget weight, images per second over the window), the log
    line or the progress bar's postfix, and (on those multiples of ``period``) a TensorBoard
    histogram of the gates' alphas. Moves the progress bar on every step."""

    def __init__(self, period: int) -> None:
        self.period = period
        self._window_start = time.perf_counter()
        self._window_iters = 0

    def before_train(self) -> None:
        self._window_start, self._window_iters = time.perf_counter(), 0

    def after_step(self) -> None:
        trainer = self.trainer
        step, iteration = trainer.step, trainer.iteration
        self._window_iters += 1
        run_log = trainer.run_log
        if iteration % self.period == 0 and run_log is not None and run_log.has_events:
            alphas = step.gates.float()[:, step.route_mask]  # (B, paths)
            run_log.histogram("gates/alpha", alphas.cpu(), iteration)
        if iteration % self.period == 0 or iteration == trainer.stop_at:
            self._write(dict(step.values))
        if trainer.progress_bar is not None:
            trainer.progress_bar.update(1)

    def _write(self, values: dict[str, Any]) -> None:
        trainer = self.trainer
        elapsed = time.perf_counter() - self._window_start
        values["images_per_s"] = trainer.config.batch * self._window_iters / max(elapsed, 1e-9)
        self._window_start, self._window_iters = time.perf_counter(), 0
        trainer.record({"kind": "train", "iter": trainer.iteration, **values})
        if trainer.progress_bar is not None:
            trainer.progress_bar.set_postfix(
                loss=f"{values['loss']:.4f}", img_s=f"{values['images_per_s']:.1f}"
            )
            return
        logger.info(
            "iter %d/%d loss %.4f (ce %.4f, budget %.4f) lr %.5f %.1f img/s",
            trainer.iteration,
            trainer.config.iters,
            values["loss"],
            values["ce_loss"],
            values["budget_loss"],
            values["lr"],
            values["images_per_s"],
        )


class EvalHook(HookBase):
    """Evaluate on the validation set every ``period`` iterations before the last (0: never)
    and after the last; keep the best mIoU's checkpoint (``checkpoint_best.pt``). Does
    nothing without validation data."""

    def __init__(self, period: int) -> None:
        self.period = period

    def after_step(self) -> None:
        iteration = self.trainer.iteration
        if self.period and iteration % self.period == 0 and iteration < self.trainer.config.iters:
            self.evaluate()

    def after_train(self) -> None:
        if self.trainer.finished:
            self.evaluate()

    def evaluate(self) -> EvalResult | None:
        """Evaluate now: an ``eval`` record, a log line, ``trainer.last_eval`` and, at a new
        best mIoU, ``trainer.best_miou`` and the best checkpoint."""
        trainer = self.trainer
        if trainer.val_set is None:
            return None
        broadcast_buffers(trainer.model)
        result = evaluate(
            trainer.model,
            trainer.val_set,
            device=trainer.device,
            limit=trainer.config.eval_limit,
            amp=bool(trainer.config.amp),
        )
        trainer.model.train()
        trainer.last_eval = result
        trainer.record(
            {
                "kind": "eval",
                "iter": trainer.iteration,
                "val_miou": result.miou,
                "val_pixel_accuracy": result.pixel_accuracy,
                "real_gmacs": result.real_gmacs.mean,
                "real_gmacs_max": result.real_gmacs.max,
                "real_gmacs_min": result.real_gmacs.min,
                "expected_gmacs": result.expected_gmacs.mean,
                "expected_cost_ratio": result.expected_cost_ratio,
                "val_images": result.num_images,
            }
        )
        ratio = result.expected_cost_ratio
        logger.info(
            "iter %d: val mIoU %.4f, real %s, expected %s%s",
            trainer.iteration,
            result.miou,
            format_macs(result.real_gmacs.mean),
            format_macs(result.expected_gmacs.mean),
            "" if ratio is None else f", E/C_all {ratio:.3f}",
        )
        best = trainer.best_miou
        if math.isfinite(result.miou) and (best is None or result.miou > best):
            trainer.best_miou = result.miou
            trainer.save(BEST, metrics=result.to_dict())
        return result


class PreciseBNHook(HookBase):
    """After the last iteration, re-estimate the BatchNorm statistics with the final weights
    (:mod:`dynviz.train.precise_bn`) over the next ``batches`` batches of the sample stream
    (deterministic, so resume stays exact); 0: off."""

    def __init__(self, batches: int) -> None:
        self.batches = batches

    def after_train(self) -> None:
        trainer = self.trainer
        if not trainer.finished or self.batches < 1:
            return
        iters = trainer.config.iters

        def forward(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
            with trainer.autocast():
                images = batch[0].to(trainer.device, non_blocking=True)
                trainer.model(images, skip=trainer.routed_bn)

        started = time.perf_counter()
        used = update_bn_stats(
            trainer.model,
            trainer.loader(iters, iters + self.batches),
            num_batches=self.batches,
            forward=forward,
            world_size=trainer.info.world_size,
        )
        trainer.record(
            {
                "kind": "precise_bn",
                "iter": trainer.iteration,
                "batches": used,
                "seconds": time.perf_counter() - started,
            }
        )


class ClosePathsHook(HookBase):
    """After the last iteration (and PreciseBN), raise a dynamic network's active threshold to
    ``below``: the paths whose alpha is at most that are closed from then on (in the final
    evaluation, the checkpoint and every later use of it). Nothing when ``below`` is not above
    the network's threshold."""

    def __init__(self, below: float) -> None:
        self.below = below

    def after_train(self) -> None:
        trainer, below = self.trainer, self.below
        config = trainer.model.config
        if not trainer.finished or not trainer.model.is_dynamic:
            return
        if below <= config.active_threshold:
            return
        trainer.model.config = replace(
            config,
            active_threshold=below,
            description=(f"{config.description}; " if config.description else "")
            + f"paths with alpha <= {below:g} closed after training",
        )
        trainer.record({"kind": "close", "iter": trainer.iteration, "active_threshold": below})
        if trainer.run_log is not None:  # the model section stays the network as trained
            trainer.run_log.add_section(
                "checkpoint",
                {
                    "active_threshold": below,
                    "note": f"close_below raised the active threshold from "
                    f"{config.active_threshold:g} to {below:g} after training: the checkpoint "
                    "and its records close every path with alpha <= it",
                },
            )
        logger.info("closing the paths whose alpha is at most %g from now on", below)


class CheckpointHook(HookBase):
    """``checkpoint_latest.pt`` every ``period`` iterations before the run's last, and at its
    end (with the last evaluation's metrics)."""

    def __init__(self, period: int) -> None:
        self.period = period

    def after_step(self) -> None:
        iteration = self.trainer.iteration
        if iteration % self.period == 0 and iteration < self.trainer.stop_at:
            self.trainer.save(LATEST)

    def after_train(self) -> None:
        last = self.trainer.last_eval
        self.trainer.save(LATEST, metrics=None if last is None else last.to_dict())
