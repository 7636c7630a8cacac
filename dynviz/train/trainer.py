"""The training loop: the official recipe, the budget loss, exact resume and DDP.

Recipe (``research/official_repo.md`` section 7): SGD momentum 0.9, weight decay 1e-4 (0 on
BatchNorm), poly LR (power 0.9) after a linear warm-up from 0.001x (1000 iterations, or 5% of a
shorter run), gradient clipping at total L2 norm 5, cross-entropy ignoring 255 (mean over the
valid pixels), plus the budget loss (:mod:`dynviz.train.budget`) for dynamic networks; at the end,
precise BatchNorm statistics over 200 batches, or a tenth of a shorter run's iterations
(:mod:`dynviz.train.precise_bn`).

Gate warm-up (``gate_warmup``, not in the paper, off by default): for the first share of the
iterations a dynamic network trains with every path open (alpha = 1, its all-open route forced)
while its gates are idle (no gradient, no budget loss); then the gates route and the budget
applies. A gate that starts half open (``gate_bias_init`` 0.5) scales every path by about 0.46
and slows a short run of a network trained from scratch; the warm-up lets the cells learn first.

Closing weak paths (``close_below``, not in the paper, off by default): after the last iteration
and PreciseBN, a dynamic network's active threshold is raised to ``close_below``, so that a path
whose alpha is at most that is closed (skipped) from then on: in the final evaluation, the
checkpoint and every later use. Soft gates trained under a budget keep many paths barely open
(alpha of a few hundredths); such a path costs its full MACs at inference and changes little
(``docs/demo.md``). The BatchNorm statistics stay those of the trained network: re-estimating
them after closing cost the demo's network 4 points of mIoU. The official code drops a cell
below an alpha sum of 1e-4.

BatchNorm over the routed samples (``bn_samples`` ``routed``, not in the paper, off by default):
the training forward skips what is closed, as inference does (:mod:`dynviz.model.skip`), so each
node's BatchNorm takes its batch statistics over the samples routed through it. The official code
(``batch``) runs every cell on the whole batch, and the samples a cell does not reach give it
zeros: a cell that few samples reach then normalises their real inputs by statistics made mostly
of zeros, and its running variance can end far too small (``docs/demo.md``, twelfth round). The
loss and gradients are otherwise those of the soft forward. PreciseBN runs the same forward. Not
with SyncBatchNorm (DDP on CUDA), which needs every rank at every BatchNorm.

Run directory::

    config.yaml            resolved model config, route, training arguments, data specs and the
                           environment (git commit of dynviz when available, package versions);
                           ``dynviz train --config RUN/config.yaml`` trains it again;
                           after ``close_below``, a ``checkpoint`` section gives the active
                           threshold the checkpoint uses (the model section stays as trained)
    metrics.jsonl          one JSON object per logged iteration and per evaluation
    checkpoint_latest.pt   every --checkpoint-every iterations and at the end (atomic)
    checkpoint_best.pt     at the best validation mIoU (atomic)
    log.txt                the run's log messages (appended on resume)
    events.out.tfevents.*  TensorBoard scalars and gate histograms (the tensorboard extra)

Resume is exact: the checkpoint holds the model, optimiser, iteration and RNG states; the learning
rate is a function of the iteration; which samples each iteration reads and how they are augmented
follow from ``(seed, iteration)`` (:class:`dynviz.support.distributed.SampleStream`).

Under ``torchrun`` the same code runs DDP (gloo on CPU, NCCL on CUDA, SyncBatchNorm on CUDA);
``--batch`` is the total over all processes; only rank 0 writes files or shows progress.

The loop runs the optimisation step; everything else it does is a hook
(:mod:`dynviz.train.hooks`, detectron2's ``HookBase``): the metrics and log lines, PreciseBN,
closing weak paths, evaluation and checkpoints, in that order; a user adds one with
``Trainer(config, hooks=[...])`` or :meth:`Trainer.register_hooks`.

This module is over 500 lines: the setup of one run (the resume check, the network, the resolved
defaults, the budget's cost table, the DDP wrapper) builds the state that its step and hooks
share; the parts that stand alone live in the modules named above.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from dynviz.data import IGNORE_INDEX, DataError, build_dataset, train_transforms
from dynviz.errors import error_message
from dynviz.inference.evaluate import EvalResult
from dynviz.interop.official import OFFICIAL_BUDGET_NORMALISER
from dynviz.model import ConfigError, Route, RoutingNetwork, RoutingSpaceConfig, build_model
from dynviz.model.checkpoint import (
    BEST,
    LATEST,
    CheckpointError,
    atomic_write,
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
    remove_stale_temporaries,
    restore_rng,
    route_to_dict,
    save_checkpoint,
)
from dynviz.model.cost import CostTable, Counting, cost_table
from dynviz.model.zoo import training_defaults
from dynviz.support.distributed import (
    DistInfo,
    EpochIndexed,
    SampleStream,
    all_gather_objects,
    all_reduce_sum,
    broadcast_buffers,
    init_distributed,
)
from dynviz.support.environment import environment
from dynviz.train.budget import BudgetLoss, BudgetSchedule
from dynviz.train.config import RESUMABLE_FIELDS, TrainConfig
from dynviz.train.hooks import (
    CheckpointHook,
    ClosePathsHook,
    EvalHook,
    HookBase,
    MetricsHook,
    PreciseBNHook,
)
from dynviz.train.init import init_from
from dynviz.train.optim import (
    PolySchedule,
    build_optimizer,
    default_warmup_iters,
    is_gate_parameter,
)
from dynviz.train.precise_bn import default_precise_bn_batches
from dynviz.train.runlog import RunLog, require_tensorboard
from dynviz.version import __version__

__all__ = [
    "RESUMABLE_FIELDS",
    "HookBase",
    "NonFiniteLossError",
    "StepOutput",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "find_unused_parameters",
    "segmentation_loss",
    "short_run_warnings",
    "train",
]

logger = logging.getLogger(__name__)

LATENCY_FILE = "latency.json"  # the per-node time table of a latency-weighted budget


PRECISE_BN_STEP_COST = 1 / 3
"""The time of one PreciseBN batch in training steps (a forward pass without gradients)."""


def short_run_warnings(config: TrainConfig) -> list[str]:
    """What a resolved config spends mostly on something other than training: a learning-rate
    warm-up of at least half the run, or PreciseBN batches that take about as long as half of
    it (each about a third of a step)."""
    iters, warmup, batches = config.iters, config.warmup_iters or 0, config.precise_bn or 0
    said = []
    if warmup >= iters:
        said.append(
            f"warmup_iters {warmup} >= iters {iters}: the learning rate never reaches its base "
            "value in this run"
        )
    elif 2 * warmup >= iters:
        said.append(f"warmup_iters {warmup} is most of the run's {iters} iterations")
    steps = batches * PRECISE_BN_STEP_COST
    if 2 * steps >= iters:
        said.append(
            f"precise_bn {batches} batches take about as long as {steps:.0f} training steps, "
            f"most of this {iters}-iteration run (precise_bn=0 skips it)"
        )
    return said


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; training stopped."""


@dataclass
class TrainResult:
    """What a training run ends with.

    Attributes:
        iteration: iterations completed.
        run_dir: the run directory.
        last_loss: the last iteration's total loss (averaged over ranks).
        best_miou: best validation mIoU (None without validation).
        last_eval: the last evaluation (None without validation).
        seconds: wall time of this call.
    """

    iteration: int
    run_dir: Path
    last_loss: float | None
    best_miou: float | None
    last_eval: EvalResult | None
    seconds: float


@dataclass(frozen=True)
class StepOutput:
    """One training step, for the hooks.

    Attributes:
        values: ``loss``, ``ce_loss``, ``budget_loss`` (averaged over ranks),
            ``expected_cost_ratio`` (None for a network without a budget), ``lr`` and
            ``budget_weight``.
        gates: the step's gate alphas ``(B, nodes)``, detached.
        route_mask: the nodes that are paths of the network.
    """

    values: dict[str, Any]
    gates: torch.Tensor
    route_mask: torch.Tensor


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the non-ignored pixels (0 when every pixel is ignored).

    Args:
        logits: ``(B, K, H, W)``.
        labels: ``(B, H, W)`` int64, 255 = ignore.
    """
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    valid = (labels != IGNORE_INDEX).sum()
    return total / valid.clamp(min=1)


def find_unused_parameters(model: RoutingNetwork) -> list[str]:
    """Parameters that the training (soft) forward pass never reaches.

    In soft mode every existing cell, transform and gate runs whatever the alphas, so the graph
    does not depend on the data; but a static route that does not end at the coarsest scale
    leaves the coarser decoder laterals unused (DDP must then look for unused parameters). Probed
    on a copy with a small input, so the model's BatchNorm statistics are untouched.
    """
    probe = copy.deepcopy(model).cpu().train()
    side = 2 * model.config.max_stride
    out = probe(torch.zeros(2, 3, side, side))
    params = [(n, p) for n, p in probe.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(
        out.logits.sum() + out.gates.sum(), [p for _, p in params], allow_unused=True
    )
    return [name for (name, _), grad in zip(params, grads, strict=True) if grad is None]


def _collate(items: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([i["image"] for i in items]), torch.stack([i["label"] for i in items])


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(err.errno, f"cannot create run directory {path}: {err.strerror}") from err
    if not os.access(path, os.W_OK):
        raise OSError(13, f"run directory {path} is not writable")


def _on_main(info: DistInfo, action: Callable[[], Any]) -> None:
    """Run ``action`` on rank 0; if it fails, every rank raises (no rank is left waiting)."""
    error: BaseException | None = None
    if info.is_main:
        try:
            action()
        except Exception as err:  # re-raised below, after telling the other ranks
            error = err
    if info.distributed:
        flag = all_reduce_sum(torch.tensor([0.0 if error is None else 1.0]))
        if error is None and flag.item() > 0:
            raise RuntimeError("rank 0 failed to write to the run directory; see its error")
    if error is not None:
        raise error


class Trainer:
    """Train one network as :class:`TrainConfig` says.

    Args:
        config: the training arguments.
        resume: continue the run in ``config.out`` from its ``checkpoint_latest.pt``.
        dist_info: this process's place in a torchrun job (default: from the environment).
        network: the network to build instead of ``config.model`` (a run config's saved
            network, :mod:`dynviz.train.runconfig`).
        hooks: more hooks (:class:`~dynviz.train.hooks.HookBase`), called after the default
            ones (:meth:`default_hooks`); :meth:`register_hooks` adds more later.

    What hooks read: ``iteration`` (iterations done), ``step`` (the last step's
    :class:`StepOutput`), ``stop_at`` (where this run stops), ``finished`` (``config.iters``
    reached), ``model``, ``config`` (resolved), ``val_set``, ``last_eval``, ``best_miou``,
    ``run_log`` (rank 0) and ``progress_bar`` (None when off); and what they call:
    :meth:`record`, :meth:`save`, :meth:`loader`, :meth:`autocast`.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: bool = False,
        dist_info: DistInfo | None = None,
        network: RoutingSpaceConfig | Route | None = None,
        hooks: Sequence[HookBase] = (),
    ) -> None:
        self.network = network  # a run config's saved network (default: config.model)
        self.info = dist_info or init_distributed(config.device)
        self.device = self.info.device
        self.run_dir = Path(config.out)
        if config.tensorboard and self.info.is_main:
            require_tensorboard()  # before any work: a one-line error naming the extra
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self._seed_everything(config.seed)
        _check_writable(self.run_dir)
        checkpoint = self._resume_checkpoint(config) if resume else None
        if checkpoint is not None and self.info.is_main:
            remove_stale_temporaries(self.run_dir)
        if checkpoint is None:
            for name in (LATEST, BEST):
                if (self.run_dir / name).exists():
                    raise ConfigError(
                        f"{self.run_dir} already holds {name}; pass --resume to "
                        "continue that run or choose another --out"
                    )
        self.train_set = build_dataset(
            config.data,
            split="train",
            transform=train_transforms(crop=config.crop, scale=config.scale),
            transform_seed=config.seed,
        )
        self.model = self._build_model(config, checkpoint)
        self.config = self._resolve(config)
        self.val_set = self._build_val_set()
        world = self.info.world_size
        if self.config.batch % world:
            raise ConfigError(
                f"--batch {self.config.batch} is the total over {world} processes "
                "and must be divisible by it"
            )
        self.stream = SampleStream(
            len(self.train_set),
            self.config.batch // world,
            seed=self.config.seed,
            rank=self.info.rank,
            world_size=world,
        )
        self.optimizer = build_optimizer(
            self.model,
            lr=self.config.lr,
            momentum=self.config.momentum,
            weight_decay=self.config.weight_decay,
            gate_lr_mult=self.config.gate_lr_mult,
        )
        self.schedule = PolySchedule(
            self.config.lr,
            self.config.iters,
            warmup_iters=int(self.config.warmup_iters or 0),
            warmup_factor=self.config.warmup_factor,
            power=self.config.poly_power,
        )
        self.budget = self._build_budget()
        self.iteration = 0
        self.best_miou: float | None = None
        if checkpoint is not None:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.iteration = int(checkpoint["iteration"])
            self.best_miou = checkpoint.get("best_metric")
            if checkpoint.get("rng") is not None:
                restore_rng(checkpoint["rng"])
            logger.info("resuming %s at iteration %d", self.run_dir, self.iteration)
        self.ddp = self._wrap(self.model)
        self.last_eval: EvalResult | None = None
        self.run_log: RunLog | None = None
        self.progress_bar: Any = None  # tqdm's bar while run() shows one
        self.step: StepOutput | None = None
        self.stop_at = self.saved_at = self.iteration
        self.hooks: list[HookBase] = []
        self.register_hooks([*self.default_hooks(), *hooks])

    # ------------------------------------------------------------------------------ hooks
    def default_hooks(self) -> list[HookBase]:
        """The training loop's own hooks, in their order (:mod:`dynviz.train.hooks`):
        metrics, PreciseBN, closing weak paths, evaluation, checkpoint."""
        cfg = self.config
        return [
            MetricsHook(cfg.log_every),
            PreciseBNHook(int(cfg.precise_bn or 0)),
            ClosePathsHook(cfg.close_below),
            EvalHook(cfg.eval_every),
            CheckpointHook(cfg.checkpoint_every),
        ]

    def register_hooks(self, hooks: Sequence[HookBase]) -> None:
        """Add ``hooks`` after those registered, in order; each gets ``hook.trainer``."""
        for hook in hooks:
            if not isinstance(hook, HookBase):
                raise TypeError(f"{hook!r} is not a HookBase")
            hook.trainer = self
            self.hooks.append(hook)

    @property
    def finished(self) -> bool:
        """Whether training reached ``config.iters`` (the run's end hooks then act)."""
        return self.iteration == self.config.iters

    # ------------------------------------------------------------------------------ setup
    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global state, for third parties)
        torch.manual_seed(seed)

    def _resume_checkpoint(self, config: TrainConfig) -> dict[str, Any]:
        path = self.run_dir / LATEST
        if not path.is_file():
            raise CheckpointError(f"{path}: nothing to resume (no checkpoint in {self.run_dir})")
        checkpoint = load_checkpoint(path)
        saved = checkpoint.get("train_args")
        if not isinstance(saved, dict):
            raise CheckpointError(f"{path}: records no training arguments; cannot resume")
        current = config.to_dict()
        differ = [
            f"{k} ({saved[k]!r} saved, {current[k]!r} now)"
            for k in current
            if k not in RESUMABLE_FIELDS
            and k in saved
            and current[k] is not None
            and current[k] != saved[k]
        ]
        if differ:
            raise ConfigError(
                f"cannot resume {self.run_dir} with different training arguments: "
                + "; ".join(differ)
            )
        return checkpoint

    def _build_model(
        self, config: TrainConfig, checkpoint: dict[str, Any] | None
    ) -> RoutingNetwork:
        if checkpoint is not None:
            model = model_from_checkpoint(checkpoint, source=str(self.run_dir / LATEST))
            saved_model = (checkpoint.get("train_args") or {}).get("model")
            if saved_model is not None and config.model != saved_model:
                logger.warning(
                    "resuming %s: the network comes from its checkpoint (%s), not %s",
                    self.run_dir,
                    saved_model,
                    config.model,
                )
        else:
            overrides: dict[str, Any] = {
                "num_classes": config.num_classes or self.train_set.num_classes
            }
            model = build_model(config.model if self.network is None else self.network, **overrides)
            if config.init is not None:
                init_from(model, config.init)
        if model.config.num_classes < self.train_set.num_classes:
            raise ConfigError(
                f"the network predicts {model.config.num_classes} classes but the "
                f"training data has {self.train_set.num_classes}"
            )
        # probed before SyncBN conversion (SyncBN refuses CPU tensors); the names do not change
        self._unused = find_unused_parameters(model) if self.info.distributed else []
        if self.info.distributed and config.gate_warmup > 0 and model.is_dynamic:
            # the gates take no part in the forward pass while they are idle
            self._unused += [n for n, _ in model.named_parameters() if is_gate_parameter(n)]
        if self.info.distributed and self.device.type == "cuda" and config.bn_samples == "routed":
            raise ConfigError(
                "bn_samples: routed cannot train under DDP on CUDA: SyncBatchNorm needs every "
                "rank at every BatchNorm, and each rank skips the nodes its samples do not reach "
                "(use batch)"
            )
        model.to(self.device)
        if self.device.type == "cuda" and self.info.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def _resolve(self, config: TrainConfig) -> TrainConfig:
        """Fill in the ``None`` defaults (saved resolved, so a resume compares like with like)."""
        model_config = self.model.config
        defaults = _training_defaults(config.model)  # e.g. Dynamic-A's lambda 0.8, mu 0.1
        lam = config.budget_lambda
        lam = defaults.get("budget_lambda", 0.0) if lam is None else lam
        mu = defaults.get("budget_mu", 0.0) if config.budget_mu is None else config.budget_mu
        if not self.model.is_dynamic and lam > 0:
            logger.info(
                "%s is %s: no budget loss",
                model_config.name,
                "static" if self.model.is_static else "gate-free",
            )
        resolved = config.replace(
            num_classes=model_config.num_classes,
            budget_lambda=lam,
            budget_mu=mu,
            warmup_iters=(
                default_warmup_iters(config.iters)
                if config.warmup_iters is None
                else config.warmup_iters
            ),
            precise_bn=(
                default_precise_bn_batches(config.iters)
                if config.precise_bn is None
                else config.precise_bn
            ),
            amp=self.device.type == "cuda" if config.amp is None else config.amp,
            progress=(sys.stderr.isatty() if config.progress is None else config.progress),
        )
        if resolved.amp and self.device.type != "cuda":
            logger.warning("bf16 autocast is only used on CUDA; training in fp32")
            resolved = resolved.replace(amp=False)
        for warning in short_run_warnings(resolved):
            logger.warning(warning)
        return resolved

    def _build_val_set(self) -> Any:
        spec = self.config.val_data or self.config.data
        try:
            return build_dataset(spec, split="val")
        except DataError as err:
            if self.config.val_data is not None:
                raise
            logger.warning("no validation data (%s); training without evaluation", err)
            return None

    def _build_budget(self) -> BudgetLoss | None:
        if not self.model.is_dynamic:
            return None
        official = self.config.budget_normaliser == "official"
        if self.config.budget_cost == "latency":
            table = self._latency_table()
        else:  # E where --budget-flops-size says (default the crop), counted as C_all is
            size = self.config.budget_flops_size or self.config.crop
            table = cost_table(
                self.model.config, size, counting=Counting.OFFICIAL if official else Counting.PAPER
            )
        budget = BudgetLoss(
            table,
            lam=float(self.config.budget_lambda or 0.0),
            mu=float(self.config.budget_mu or 0.0),
            schedule=BudgetSchedule(self.config.budget_start, self.config.budget_ramp),
            normaliser=OFFICIAL_BUDGET_NORMALISER if official else None,
        )
        if budget.lam > 0 and self.config.budget_cost == "macs":
            h, w = table.size
            logger.info(
                "budget: E measured at %dx%d, C_all %.1f MMACs (%s); all open E / C_all = %.4g",
                h,
                w,
                budget.normaliser / 1e6,
                "the official 26300" if official else "all open at that size",
                table.backbone_all_open() / budget.normaliser,
            )
        return budget

    def _latency_table(self) -> CostTable:
        """Per-node time at the training crop, measured once on this machine (rank 0) and kept
        in the run directory, so a resumed run and every rank use the same table."""
        from dynviz.inference.latency import NodeLatency, latency_cost_table, measure_node_latency

        config, crop = self.model.config, self.config.crop
        path = self.run_dir / LATENCY_FILE
        data = None
        if self.info.is_main:
            if path.is_file():
                data = json.loads(path.read_text(encoding="utf-8"))
            else:
                logger.info(
                    "measuring per-node latency at %dx%d on %s for the budget", *crop, self.device
                )
                data = measure_node_latency(  # per image, on the device the network trains on
                    config, crop, repeats=3, batch=1, device=self.device
                ).state()
                atomic_write(path, lambda h: h.write(json.dumps(data, indent=2).encode()))
        latency = NodeLatency.from_state(config, all_gather_objects(data)[0])
        return latency_cost_table(config, crop, latency=latency, normalise=True)

    def _wrap(self, model: RoutingNetwork) -> nn.Module:
        if not self.info.distributed:
            return model
        unused = self._unused
        if unused:
            logger.info(
                "%d parameters are unused in training (e.g. %s): DDP will look for "
                "unused parameters",
                len(unused),
                unused[0],
            )
        cuda = self.device.type == "cuda"
        return DistributedDataParallel(
            model,
            device_ids=[self.device.index] if cuda else None,
            find_unused_parameters=bool(unused) or self.routed_bn,  # routed: any node may skip
            broadcast_buffers=not cuda,  # CPU has no SyncBN: keep rank 0's BN statistics
        )

    # ------------------------------------------------------------------------------ files
    def _open_log(self) -> None:
        if not self.info.is_main:
            return
        doc = {
            "dynviz_version": __version__,
            "torch_version": str(torch.__version__),
            "world_size": self.info.world_size,
            "environment": environment(),
            "model": self.model.config.to_dict(),
            "route": route_to_dict(self.model.route),
            "train": self.config.to_dict(),
            "data": {
                "train": self.config.data,
                "val": None if self.val_set is None else self.config.val_data or self.config.data,
                "val_split": "val",
                "num_classes": self.train_set.num_classes,
                "class_names": list(self.train_set.class_names),
            },
        }
        self.run_log = RunLog(
            self.run_dir, doc, iteration=self.iteration, tensorboard=self.config.tensorboard
        )

    def record(self, record: dict[str, Any]) -> None:
        """Append ``record`` to ``metrics.jsonl`` (rank 0; no-op elsewhere)."""
        if self.run_log is not None:
            self.run_log.record(record)

    def save(self, name: str, metrics: dict[str, Any] | None = None) -> None:
        """Write checkpoint ``name`` (``LATEST`` or ``BEST``) in the run directory, atomically;
        collective under DDP (rank 0 writes)."""

        def write() -> None:
            checkpoint = make_checkpoint(
                self.model,
                optimizer=self.optimizer,
                iteration=self.iteration,
                best_metric=self.best_miou,
                train_args=self.config.to_dict(),
                metrics=metrics,
            )
            save_checkpoint(self.run_dir / name, checkpoint)

        broadcast_buffers(self.model)
        _on_main(self.info, write)
        if name == LATEST:
            self.saved_at = self.iteration

    # ------------------------------------------------------------------------------- loop
    def loader(self, start: int, stop: int) -> DataLoader:
        """The batches of iterations ``start`` to ``stop`` of the sample stream."""
        return DataLoader(
            EpochIndexed(self.train_set),
            batch_sampler=self.stream.batches(start, stop),
            num_workers=self.config.workers,
            generator=torch.Generator().manual_seed(self.config.seed),  # keeps global RNG intact
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
        )

    @property
    def routed_bn(self) -> bool:
        """Whether the training forward skips what is closed (``bn_samples`` ``routed``), so
        that each node's BatchNorm sees only the samples routed through it."""
        return self.config.bn_samples == "routed"

    def gates_idle(self, iteration: int) -> bool:
        """Whether ``iteration`` (0-based) is in the gate warm-up: every path open, no budget."""
        warmup = round(self.config.gate_warmup * self.config.iters)
        return self.model.is_dynamic and iteration < warmup

    def autocast(self) -> torch.autocast:
        """bf16 autocast on the training device when ``config.amp`` (else a no-op context)."""
        return torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=bool(self.config.amp)
        )

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> StepOutput:
        cfg = self.config
        lr = self.schedule.apply(self.optimizer, self.iteration)
        idle = self.gates_idle(self.iteration)
        with self.autocast():
            route = self.model.route_mask if idle else None
            out = self.ddp(images, route=route, skip=self.routed_bn)
        ce = segmentation_loss(out.logits, labels)
        loss = ce
        zero = ce.new_zeros(())
        budget_loss, ratio, weight = zero, zero, 0.0
        if self.budget is not None and not idle:
            terms = self.budget(out.gates, self.iteration, cfg.iters)
            ratio, weight = terms.ratio, terms.weight
            if self.budget.lam > 0:
                budget_loss = terms.loss
                loss = loss + budget_loss
        if self.routed_bn and self.info.distributed:
            # a cell whose paths all close runs nothing after its gate, whose alphas then reach
            # no loss but the budget's: DDP waits for a gradient of every parameter they reach
            loss = loss + 0.0 * out.gates.sum()
        stats = torch.stack([loss.detach(), ce.detach(), budget_loss.detach(), ratio]).float()
        stats = all_reduce_sum(stats.clone()) / self.info.world_size
        if not bool(torch.isfinite(stats).all()):
            raise NonFiniteLossError(
                f"non-finite loss at iteration {self.iteration + 1} (loss {stats[0].item()}, "
                f"cross-entropy {stats[1].item()}, budget {stats[2].item()}); stopped without "
                f"saving, the last good checkpoint is {self.run_dir / LATEST}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            if not bool(torch.isfinite(norm)):
                raise NonFiniteLossError(
                    f"non-finite gradient norm at iteration {self.iteration + 1}; stopped without "
                    f"saving, the last good checkpoint is {self.run_dir / LATEST}"
                )
        self.optimizer.step()
        values = dict(
            zip(
                ("loss", "ce_loss", "budget_loss", "expected_cost_ratio"),
                stats.tolist(),
                strict=True,
            )
        )
        values.update(lr=lr, budget_weight=weight)
        if self.budget is None:
            values["expected_cost_ratio"] = None
        return StepOutput(values=values, gates=out.gates.detach(), route_mask=out.route_mask)

    def _keep_after_data_error(self, err: DataError) -> DataError:
        """A bad sample stopped training: keep the iterations done since the last checkpoint
        (one process only: other ranks may be inside a collective) and say so in the one-line
        error, which names the file (also when a DataLoader worker raised it)."""
        message = error_message(err)
        kind = type(err)  # a bad file stays a bad file (exit status 3)
        if self.info.distributed or self.iteration <= self.saved_at:
            return kind(message)
        self.save(LATEST)
        return kind(
            f"{message} (the {self.iteration} iterations done are saved in "
            f"{self.run_dir / LATEST}; fix the file and continue with --resume)"
        )

    def run(
        self, *, until: int | None = None, label: str = "train", position: int | None = None
    ) -> TrainResult:
        """Train to ``config.iters`` (or stop after iteration ``until``, checkpointing there).

        ``label`` and ``position`` name the progress bar and its line, for several trainings
        shown at once (``tqdm``'s ``desc`` and ``position``).

        Returns:
            The :class:`TrainResult`.

        Raises:
            NonFiniteLossError: the loss or gradient became NaN/inf (no checkpoint is written).
            OSError: the run directory cannot be written (the message names the path).
            DataError: a sample cannot be read (the message names the file; the iterations done
                are checkpointed first in a single-process run).
        """
        cfg = self.config
        stop = cfg.iters if until is None else min(int(until), cfg.iters)
        started = time.perf_counter()
        self.model.train()
        _on_main(self.info, self._open_log)
        bar = None
        if cfg.progress and self.info.is_main:
            from tqdm import tqdm

            bar = tqdm(
                total=cfg.iters,
                initial=self.iteration,
                desc=label,
                unit="it",
                dynamic_ncols=True,
                position=position,
                leave=position is None,
            )
        self.stop_at, self.saved_at = stop, self.iteration
        self.progress_bar = bar
        last_loss: float | None = None
        try:
            for hook in self.hooks:
                hook.before_train()
            for images, labels in self.loader(self.iteration, stop):
                for hook in self.hooks:
                    hook.before_step()
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                self.step = self._step(images, labels)
                self.iteration += 1
                last_loss = self.step.values["loss"]
                for hook in self.hooks:
                    hook.after_step()
            for hook in self.hooks:
                hook.after_train()
            if self.info.is_main:
                logger.info(
                    "stopped at iteration %d/%d after %.1f s; best val mIoU %s",
                    self.iteration,
                    cfg.iters,
                    time.perf_counter() - started,
                    "n/a" if self.best_miou is None else f"{self.best_miou:.4f}",
                )
        except DataError as err:
            raise self._keep_after_data_error(err) from None
        finally:
            if bar is not None:
                bar.close()
            self.progress_bar = None
            if self.run_log is not None:
                self.run_log.close()
                self.run_log = None
        return TrainResult(
            iteration=self.iteration,
            run_dir=self.run_dir,
            last_loss=last_loss,
            best_miou=self.best_miou,
            last_eval=self.last_eval,
            seconds=time.perf_counter() - started,
        )


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    until: int | None = None,
    label: str = "train",
    position: int | None = None,
) -> TrainResult:
    """Build a :class:`Trainer` and run it (see :meth:`Trainer.run`)."""
    return Trainer(config, resume=resume).run(until=until, label=label, position=position)


def _training_defaults(model: str) -> dict[str, float]:
    """The training defaults the model's preset or YAML carries (none when it has none)."""
    try:
        return training_defaults(model)
    except ConfigError:
        return {}  # resolved from the checkpoint on resume, or no file: the CLI defaults
