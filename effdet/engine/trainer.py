"""The training loop: epochs of SGD steps, EMA, periodic COCO evaluation, checkpoints, resume.

One step: uint8 batch -> normalise on the device -> network (autocast on CUDA) -> anchor
labelling -> focal + Huber loss (float32) -> backward -> clip the gradient norm -> optimizer
step at the scheduled LR -> EMA update. Under DDP every rank runs the same number of steps;
the loss of each rank is normalised by the positive anchors of its own batch (as the
official TPU/multi-GPU recipe does per replica) and DDP averages the gradients.

Stops: Ctrl-C / SIGTERM end the run after the current step and save ``last.pt`` (recording the
step inside the epoch); ``Trainer(resume=...)`` continues exactly from there. A non-finite
loss or gradient norm raises :class:`TrainingDiverged` before the weights change, and
``last.pt`` keeps the last good state.

Fine-tuning (``train.freeze``, ``freeze_epochs``, ``backbone_lr_mult``, ``freeze_backbone_bn``): in the
epochs it applies to, a frozen part gets no gradient and keeps its BatchNorm in eval mode, so it does
not change at all; the backbone's optimizer groups run at the scheduled LR times ``backbone_lr_mult``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection

import torch
from tqdm import tqdm

from effdet.weights.backbones import fetch_backbone_weights
from effdet.weights.checkpoint import load_weights, save_checkpoint
from effdet.config import ConfigError, EfficientDetConfig
from effdet.engine import distributed as D
from effdet.engine.checkpointing import (PER_CLASS_PREFIX, TrainState, load_resume_optimizer,
                                         read_training_checkpoint, rng_states, set_rng_states, write_metrics_csv)
from effdet.evaluation.coco import evaluate_coco, format_ap
from effdet.engine.interrupt import StopSignals
from effdet.engine.optim import WarmupCosine, scaled_lr
from effdet.analysis.labels import plot_training_labels
from effdet.engine.plots import plot_batch_mosaic, plot_results
from effdet.engine.tb_logger import log_epoch, log_picture, log_step, open_tensorboard, tensorboard_writer_class
from effdet.engine.step import build_train_step
from effdet.engine.setup import (RunFolderLock, amp_settings, build_datasets, build_train_loader, build_train_model,
                                 claim_run_folder, fit_to_data, shutdown_workers)
from effdet.engine.train_config import RunConfig, TrainConfig, fit_batch_to_data, with_model, write_run_config
from effdet.data import DatasetError


class TrainingDiverged(RuntimeError):
    """The loss or gradient became NaN/inf; the message says where and what to try."""


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did. ``status`` is ``"finished"`` or ``"interrupted"``."""

    status: str
    output: Path
    epoch: int
    global_step: int
    best_map: float | None
    last_metrics: dict[str, Any] | None


MOSAIC_BATCHES = 3
"""Training batches drawn as ``train_batch0.jpg``, ``train_batch1.jpg``, ... at the start of a run."""


class Trainer:
    """Trains an EfficientDet on a COCO-format dataset as described by a :class:`RunConfig`.

    Args:
        run: model, data and training settings; ``num_classes`` is taken from the training set.
        output: folder for ``last.pt``, ``best.pt``, ``metrics.csv`` and ``config.yaml``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or None/"auto" (CUDA if available).
        weights: initialise from this checkpoint (project or reference port; class head
            re-initialised when the class count differs). Ignored when resuming.
        resume: a ``last.pt`` to continue from (its run config should be ``run``, see
            ``effdet.engine.resume_run_config``).
        progress: show tqdm bars (rank 0 only).
        on_step: called as ``on_step(trainer, global_step)`` after every optimizer step.
        exist_ok: train into ``output`` even when it holds another run (replacing its files);
            by default that is refused with a :class:`ConfigError` before anything is read.
        size_fields: fields fitted to the training set once it is read (``effdet train --model X``
            passes those not given explicitly): :data:`~effdet.engine.train_config.SIZED_FIELDS` and
            :data:`~effdet.engine.setup.ANCHOR_FIELDS` (:func:`~effdet.engine.setup.fit_to_data`).
        run_lock: the lock of ``output`` when the caller holds it already
            (:func:`~effdet.engine.setup.claim_next_run_folder`). Otherwise :meth:`fit` locks
            ``output`` itself; a folder another run is using is refused
            (:class:`~effdet.engine.setup.RunFolderInUse`). Released when :meth:`fit` returns.
    """

    def __init__(self, run: RunConfig, output: str | Path, device: str | None = None,
                 weights: str | Path | None = None, resume: str | Path | None = None, progress: bool = True,
                 on_step: Callable[["Trainer", int], None] | None = None, exist_ok: bool = False,
                 run_lock: RunFolderLock | None = None, size_fields: Collection[str] = ()) -> None:
        self.run, self.output, self.device_arg, self.exist_ok = run, Path(output), device, exist_ok
        self.size_fields = frozenset(size_fields)
        self.run_lock = run_lock
        self.weights, self.resume, self.progress, self.on_step = weights, resume, progress, on_step
        self.state = TrainState()
        self.last_eval: dict[str, Any] | None = None
        self._saved_step: int | None = None  # global step of the latest last.pt
        self.clock: Callable[[], float] = time.perf_counter  # wall clock of the run (train.time), seconds
        self._in_step = False

    # ----------------------------------------------------------------- setup
    def _setup(self, ctx: D.DistContext) -> None:
        self.ctx, train = ctx, self.run.train
        refusal = None
        if ctx.is_main:  # only rank 0 writes: it alone locks the run folder, for the whole run
            try:
                if train.logger == "tensorboard":
                    tensorboard_writer_class()  # a missing package fails before the folder or any data
                self.run_lock = claim_run_folder(self.output, Path(self.resume) if self.resume else None,
                                                 self.exist_ok, self.run_lock)
            except (ConfigError, OSError) as error:
                refusal = error
        if D.any_across_ranks(ctx, refusal is not None)[0]:  # every rank stops, none waits for rank 0
            raise refusal or ConfigError(f"rank 0 could not use the run folder {self.output}")
        # Before any data is read: a missing weights file or an offline download fails fast.
        self.backbone_init = None
        if self.run.train.pretrained_backbone and not self.resume and self.weights is None:
            self.backbone_init = fetch_backbone_weights(self.run.train.backbone_weights, self.run.model.backbone)
        self.train_set, self.val_set = build_datasets(self.run, with_val=ctx.is_main)
        self.run = with_model(self.run, num_classes=self.train_set.num_classes)
        self.run, notice = fit_batch_to_data(self.run, len(self.train_set), ctx.world_size)
        if notice:
            self._log(notice)
        if self.size_fields and not self.resume:
            self.run, lines = fit_to_data(self.run, len(self.train_set), ctx.world_size, self.size_fields)
            for line in lines:
                self._log(line)
        train = self.run.train
        self.class_names, self.category_ids = self.train_set.class_names, self.train_set.category_ids
        torch.manual_seed(train.seed)  # the same initial weights on every rank
        self.model = build_train_model(self.run.model, None if self.resume else self.weights,
                                       self.backbone_init).to(ctx.device)
        self.loader = build_train_loader(self.train_set, self.run, ctx)
        self.sampler = self.loader.batch_sampler
        self.steps_per_epoch = self.sampler.batches_per_epoch
        self.min_batch = min_batch_size(self.run.model)
        if train.batch_size < self.min_batch:
            raise ConfigError(f"batch_size {train.batch_size} is too small for image_size {self.run.model.image_size}: "
                              f"level {self.run.model.max_level} is 1x1 and BatchNorm needs 2 values per channel; "
                              "use batch_size >= 2 or a larger image_size")
        self.global_batch = train.batch_size * ctx.world_size
        peak = scaled_lr(train.lr, train.lr_per_64, self.global_batch)
        self.schedule = WarmupCosine(peak, train.epochs * self.steps_per_epoch,
                                     round(train.warmup_epochs * self.steps_per_epoch), train.warmup_factor,
                                     train.min_lr_ratio)
        self.use_amp, self.amp_dtype = amp_settings(train.amp, ctx.device)
        torch.backends.cudnn.benchmark = ctx.device.type == "cuda"  # fixed input size: pick the fastest kernels
        cfg = self.run.model
        self.train_step = build_train_step(self.model, train, peak, cfg.image_size,
                                           self.amp_dtype if self.use_amp else None,
                                           wrap=lambda model: D.wrap_model(model, ctx, train.sync_bn),
                                           any_across_ranks=lambda *flags: D.any_across_ranks(ctx, *flags))
        step = self.train_step
        self.net, self.ema, self.optimizer, self.scaler = step.net, step.ema, step.optimizer, step.scaler
        torch.manual_seed(train.seed + ctx.rank)  # per-rank stream for stochastic depth
        self.state = TrainState(steps_per_epoch=self.steps_per_epoch)
        if self.resume:
            self._restore(Path(self.resume))
        if ctx.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            write_run_config(self.run, self.output / "config.yaml")
        self.tb = open_tensorboard(self.output) if train.logger == "tensorboard" and ctx.is_main else None
        # train_batch0..2.jpg: the first MOSAIC_BATCHES batches this process trains on
        self._batches_plotted = MOSAIC_BATCHES if not (train.plots and ctx.is_main) else 0
        if train.plots and ctx.is_main:
            self._plot("labels.png", plot_training_labels, self.train_set, self.model.anchors(cfg.image_size),
                       cfg.image_size)

    def _restore(self, path: Path) -> None:
        ckpt = read_training_checkpoint(path)
        load_weights(self.model, ckpt["model"], source=str(path))
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict({"module": ckpt["ema"], "num_updates": ckpt.get("ema_updates", 0)})
        load_resume_optimizer(self.optimizer, ckpt["optimizer"], self.model, path)
        if ckpt.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        state = TrainState.from_dict(ckpt["train_state"])
        if state.steps_per_epoch != self.steps_per_epoch and state.step_in_epoch:
            self._log(f"Notice: an epoch now has {self.steps_per_epoch} steps (was {state.steps_per_epoch}: the "
                      "batch size, process count or data changed); resuming at the same fraction of the epoch.")
            state.step_in_epoch = min(self.steps_per_epoch - 1,
                                      round(state.step_in_epoch * self.steps_per_epoch / state.steps_per_epoch))
        state.steps_per_epoch = self.steps_per_epoch
        state.global_step = state.epoch * self.steps_per_epoch + state.step_in_epoch
        self.state = state
        rngs = ckpt.get("rng") or []
        if rngs:
            set_rng_states(rngs[self.ctx.rank] if len(rngs) == self.ctx.world_size else rngs[0])
        self._log(f"Resumed from {path}: epoch {state.epoch + 1}, step {state.step_in_epoch}/{self.steps_per_epoch} "
                  f"(global step {state.global_step}).")

    # ------------------------------------------------------------------ loop
    def fit(self) -> TrainResult:
        """Train until ``train.epochs`` are done or a stop signal arrives; see the module docstring."""
        ctx = D.setup_distributed(self.device_arg)
        try:
            with StopSignals(self._on_signal) as stop:
                self.stop = stop
                self._setup(ctx)
                if self.resume and self.state.epoch >= self.run.train.epochs:
                    self._log(f"Nothing left to train: {self.resume} already finished its "
                              f"{plural(self.run.train.epochs, 'epoch')}. To train longer, resume with a higher "
                              f"train.epochs (effdet train --resume {self.output} "
                              f"train.epochs={self.run.train.epochs * 2}).")
                    return TrainResult("finished", self.output, self.state.epoch, self.state.global_step,
                                       self.state.best_map, None)
                self._log_start()
                reason = None
                while reason is None and self.state.epoch < self.run.train.epochs:
                    started = self.clock()
                    if not self._train_epoch():
                        self.state.run_time_s += self.clock() - started
                        return self._interrupted()
                    reason = self._end_epoch(evaluate=stop.requested is None, started=started)
                    if stop.requested is not None:
                        return self._interrupted()
                return self._finished(reason or "epochs")
        finally:
            shutdown_workers(getattr(self, "loader", None))
            if getattr(self, "tb", None) is not None:
                self.tb.close()
            if self.run_lock is not None:
                self.run_lock.release()
            D.cleanup_distributed(ctx)

    def _train_epoch(self) -> bool:
        """Run the rest of the current epoch; False when stopped early by a signal."""
        state, train = self.state, self.run.train
        self.sampler.set_epoch(state.epoch, state.step_in_epoch)
        self._train_mode()
        bar = tqdm(total=self.steps_per_epoch, initial=state.step_in_epoch, unit="step", dynamic_ncols=True,
                   desc=f"epoch {state.epoch + 1}/{train.epochs}", disable=not (self.progress and self.ctx.is_main))
        start, images_seen = time.perf_counter(), 0
        try:
            for images, targets, skipped in self.loader:
                if self._batches_plotted < MOSAIC_BATCHES and targets:
                    self._plot(f"train_batch{self._batches_plotted}.jpg", plot_batch_mosaic, images, targets,
                               self.class_names)
                    self._batches_plotted += 1
                # Too few readable images (on any rank) for a BatchNorm step: skip it on every rank.
                stop, unusable = D.any_across_ranks(self.ctx, self.stop.requested is not None,
                                                    len(targets) < self.min_batch)
                if stop:
                    return False
                lr = self.schedule(state.global_step)
                self._in_step = True  # a KeyboardInterrupt now leaves no consistent state to save
                values = [math.nan] * 4 if unusable else self._step(images, targets, lr)
                self._count(values, 0 if unusable else len(targets), skipped, len(targets))
                self._in_step = False
                images_seen += len(targets) * self.ctx.world_size
                bar.update(1)
                if state.step_in_epoch % train.log_interval == 0 or state.step_in_epoch == self.steps_per_epoch:
                    if self.tb is not None and not unusable:
                        log_step(self.tb, state.global_step, values, lr)
                    rate = images_seen / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(loss=f"{values[0]:.4f}", lr=f"{lr:.3g}", img_s=f"{rate:.1f}",
                                    skipped=state.skipped_images, refresh=False)
                    if not self.progress:
                        self._log(f"epoch {state.epoch + 1} step {state.step_in_epoch}/{self.steps_per_epoch}: "
                                  f"loss {values[0]:.4f}, lr {lr:.3g}, {rate:.1f} img/s")
                if self.on_step is not None:
                    self.on_step(self, state.global_step)
        except KeyboardInterrupt:  # raised outside a step (e.g. while loading data): save like a signal
            if self._in_step:
                raise
            self.stop.requested = self.stop.requested or "KeyboardInterrupt"
            return False
        finally:
            state.train_time_s += time.perf_counter() - start
            bar.close()
        return True

    def _frozen_parts(self, epoch: int) -> list[torch.nn.Module]:
        """The modules kept fixed in ``epoch`` (0-based): ``train.freeze`` while ``epoch < freeze_epochs``."""
        train = self.run.train
        if train.freeze == "none" or (train.freeze_epochs is not None and epoch >= train.freeze_epochs):
            return []
        return [self.model.backbone] if train.freeze == "backbone" else [self.model.backbone, self.model.fpn]

    def _train_mode(self) -> None:
        """Train mode for the current epoch; frozen parts get no gradient and their BatchNorm stays in eval mode.

        A frozen part does not change at all (weights, BatchNorm statistics; the EMA copy follows).
        Call after every ``train()`` of the network. DDP reduces the gradients of the parameters
        that required them when it was built, so the wrapper is rebuilt when that set changes.
        """
        frozen = self._frozen_parts(self.state.epoch)
        fixed = {id(p) for part in frozen for p in part.parameters()}
        changed = [p for p in self.model.parameters() if p.requires_grad == (id(p) in fixed)]
        for p in changed:
            p.requires_grad_(id(p) not in fixed)
        if changed and self.ctx.distributed:
            self.net = D.wrap_model(self.model, self.ctx, sync_bn=False)  # BatchNorm was converted at the first wrap
        if changed and not frozen and self.state.epoch > 0:
            self._log(f"epoch {self.state.epoch + 1}: {self.run.train.freeze} unfrozen, all layers train from now")
        self.net.train()
        parts = frozen + ([self.model.backbone] if self.run.train.freeze_backbone_bn else [])
        for module in (m for part in parts for m in part.modules()):
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()

    def _step(self, images: torch.Tensor, targets: list[dict[str, Any]], lr: float) -> list[float]:
        """One optimizer step (:class:`effdet.engine.step.TrainStep`); returns [loss, class_loss,
        box_loss, grad_norm] as floats. A non-finite loss or gradient norm stops the run."""
        self.train_step.net = self.net  # the DDP wrapper is rebuilt when frozen parts thaw
        values, problem = self.train_step(images, targets, lr)
        if problem is not None:
            raise TrainingDiverged(self._diverged_message(problem, values, lr))
        return values

    def _count(self, values: list[float], images: int, skipped: int, read: int) -> None:
        state, sums = self.state, self.state.sums
        for key, value in zip(("loss", "class_loss", "box_loss"), values):
            if math.isfinite(value):
                sums[key] = sums.get(key, 0.0) + value
        sums["steps"] = sums.get("steps", 0) + int(math.isfinite(values[0]))
        sums["images"] = sums.get("images", 0) + images
        sums["skipped"] = sums.get("skipped", 0) + skipped
        sums["read"] = sums.get("read", 0) + read
        state.skipped_images += skipped
        state.step_in_epoch += 1
        state.global_step += 1

    def _end_epoch(self, evaluate: bool, started: float) -> str | None:
        """Metrics row, evaluation (rank 0, EMA weights), ``best.pt`` / ``last.pt``, ``metrics.csv``.

        Returns why the run stops after this epoch (``"patience"``, ``"time"``, ``"epochs"``), or
        None to go on. ``started``: :attr:`clock` when the epoch began (``train.time``).
        """
        state, train = self.state, self.run.train
        epoch = state.epoch + 1
        skipped = self._sum_over_ranks(state.sums.get("skipped", 0))
        steps = max(1, state.sums.get("steps", 0))
        row: dict[str, Any] = dict(epoch=epoch, step=state.global_step, lr=self.schedule(state.global_step - 1),
                                   images=int(state.sums.get("images", 0)) * self.ctx.world_size,
                                   skipped_images=skipped, time_s=round(state.train_time_s, 2),
                                   images_per_s=None, map=None, map50=None)
        row.update({k: state.sums.get(k, 0.0) / steps for k in ("loss", "class_loss", "box_loss")})
        read = max(state.sums.get("read", 0), state.sums.get("images", 0))  # "read": checkpoints before it
        (read_any,) = D.any_across_ranks(self.ctx, read > 0)
        if not read_any:
            data = self.run.data
            raise DatasetError(f"epoch {epoch}: none of the training images could be read ({skipped} skipped, see the "
                               f"warnings), so nothing was trained; check the files in {data.train_images} (listed in "
                               f"{data.train_ann}); git-lfs pointer files, for one, are not images")
        due = (train.eval_interval > 0 and epoch % train.eval_interval == 0) or epoch == train.epochs
        state.epoch, state.step_in_epoch, state.sums = epoch, 0, {}
        if evaluate and due and self.ctx.is_main and self.val_set is not None:
            result = self._evaluate()
            row.update(map=result["map"], map50=result["map50"])
            row.update(per_class_columns(result.get("per_class") or []))
            if state.best_map is None or result["map"] > state.best_map:
                state.best_map, state.best_epoch = result["map"], epoch
                save_checkpoint(self.output / "best.pt", self.eval_model, self.run.model, self.class_names,
                                self.category_ids, epoch=epoch, map=result["map"], map50=result["map50"],
                                run_config=self.run.to_dict())
            self.last_eval = {k: v for k, v in result.items() if k != "results"}
        D.barrier(self.ctx)
        if self.ctx.is_main:
            row["images_per_s"] = round(row["images"] / max(row["time_s"] - self._previous_time(), 1e-9), 2)
        state.run_time_s += self.clock() - started
        reason = self._stop_reason(epoch)
        row.update(epochs=self.run.train.epochs, stop=reason)
        state.metrics.append(row)
        self._save_last()
        if self.ctx.is_main:
            write_metrics_csv(state.metrics, self.output / "metrics.csv")
            if train.plots:
                self._plot("results.png", plot_results, self.output / "metrics.csv")
            if self.tb is not None:
                log_epoch(self.tb, row)
            ap = f", mAP@[.5:.95] {format_ap(row['map'])}, AP50 {format_ap(row['map50'])}" if row["map"] is not None else ""
            self._log(f"epoch {epoch}/{train.epochs}: loss {row['loss']:.4f} (class {row['class_loss']:.4f}, "
                      f"box {row['box_loss']:.5f}), lr {row['lr']:.3g}{ap}"
                      + (f", {skipped} unreadable image(s) skipped" if skipped else ""))
        return reason

    def _stop_reason(self, epoch: int) -> str | None:
        """Why the run ends after ``epoch`` (1-based, just done), or None. Under ``train.time`` the
        number of epochs is first refitted to the time left. Rank 0 decides (it alone evaluates)."""
        train, state = self.run.train, self.state
        fitted, reason = train.epochs, None
        if train.time is not None:  # epochs of this run so far: the metrics rows, plus this one
            per_epoch = state.run_time_s / (len(state.metrics) + 1)
            fitted = max(epoch, epoch + int((train.time * 3600.0 - state.run_time_s) // max(per_epoch, 1e-9)))
        if epoch >= fitted:
            reason = "time" if train.time is not None else "epochs"
        elif train.patience and state.best_epoch is not None and epoch - state.best_epoch >= train.patience:
            reason = "patience"
        fitted, reason = D.broadcast_from_main(self.ctx, (fitted, reason))
        if fitted != train.epochs:
            self._refit_epochs(fitted)
        return reason

    def _refit_epochs(self, epochs: int) -> None:
        """Plan ``epochs`` epochs in all (``train.time``): the LR schedule is rebuilt to end with them,
        at the same peak and warm-up; the steps already taken keep the LR they had."""
        train, before = self.run.train, self.run.train.epochs
        self.run = dataclasses.replace(self.run, train=dataclasses.replace(train, epochs=epochs))
        self.schedule = WarmupCosine(self.schedule.peak, epochs * self.steps_per_epoch, self.schedule.warmup_steps,
                                     train.warmup_factor, train.min_lr_ratio)
        self._log(f"time budget {train.time:g} h: {plural(epochs, 'epoch')} in all (planned so far: {before}); "
                  "the LR schedule now ends with them")

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are evaluated and kept as best: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def _evaluate(self) -> dict[str, Any]:
        train, details = self.run.train, {}
        result = evaluate_coco(self.eval_model, self.val_set, batch_size=train.eval_batch_size or train.batch_size,
                               device=self.ctx.device, workers=train.workers, progress=self.progress,
                               details=details)
        if train.plots:
            images, labels, predictions = val_batch_pictures(self.val_set, details["results"], self.category_ids)
            if images is not None:
                self._plot("val_batch0_labels.jpg", plot_batch_mosaic, images, labels, self.class_names)
                self._plot("val_batch0_pred.jpg", plot_batch_mosaic, images, predictions, self.class_names)
        return result

    # ------------------------------------------------------------ saving, logs
    def _save_last(self) -> None:
        """Write ``last.pt`` (rank 0; every rank contributes its RNG state)."""
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise TrainingDiverged("the weights contain NaN/inf; last.pt was not overwritten. "
                                   "Lower the learning rate (train.lr) and check the data.")
        self._saved_step = self.state.global_step
        rngs = D.gather_to_main(self.ctx, rng_states())
        if self.ctx.is_main:
            ema = self.ema.state_dict() if self.ema is not None else None
            save_checkpoint(self.output / "last.pt", self.model, self.run.model, self.class_names, self.category_ids,
                            ema=ema["module"] if ema else None, ema_updates=ema["num_updates"] if ema else 0,
                            optimizer=self.optimizer.state_dict(),
                            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
                            train_state=self.state.to_dict(), run_config=self.run.to_dict(), rng=rngs)
        D.barrier(self.ctx)

    def _interrupted(self) -> TrainResult:
        s = self.state
        if self._saved_step != s.global_step:  # not saved at an epoch end just now
            self._save_last()
        self._log(f"Stopped by {self.stop.requested}: saved {self.output / 'last.pt'} at epoch {s.epoch + 1}, "
                  f"step {s.step_in_epoch}/{self.steps_per_epoch}. Continue with: "
                  f"effdet train --resume {self.output}")
        return TrainResult("interrupted", self.output, s.epoch, s.global_step, s.best_map, self.last_eval)

    def _finished(self, reason: str) -> TrainResult:
        s, out, train = self.state, self.output, self.run.train
        if s.best_map is not None:
            best = f"best.pt (EMA weights, mAP@[.5:.95] {format_ap(s.best_map)} at epoch {s.best_epoch})"
        else:
            best = "no best.pt (no validation set)" if self.val_set is None else "best.pt"
        if self.last_eval is not None:
            self._log(f"Validation mAP@[.5:.95] {format_ap(self.last_eval['map'])}, "
                      f"AP50 {format_ap(self.last_eval['map50'])} "
                      f"(EMA weights, epoch {s.epoch}, {self.last_eval['num_images']} images)")
        pictures = [p.name for p in [out / "results.png", out / "labels.png", *sorted(out.glob("train_batch*.jpg")),
                                     *sorted(out.glob("val_batch0_*.jpg"))] if p.is_file()]
        extras = (f"; pictures: {', '.join(pictures)}" if pictures else "") + \
            ("; TensorBoard: tensorboard/" if self.tb is not None else "")
        why = (f"early stop: no better mAP for {plural(train.patience, 'epoch')} since epoch {s.best_epoch}"
               if reason == "patience" else f"time budget of {train.time:g} h used" if reason == "time"
               else f"all {plural(train.epochs, 'epoch')} done")
        self._log(f"Finished {plural(s.epoch, 'epoch')} ({why}; {plural(s.global_step, 'step')}, "
                  f"{s.train_time_s / 60:.1f} min training). "
                  f"Outputs in {out}: {best}, last.pt, metrics.csv, config.yaml{extras}")
        return TrainResult("finished", out, s.epoch, s.global_step, s.best_map, self.last_eval)

    def _log_start(self) -> None:
        cfg, t, ctx = self.run.model, self.run.train, self.ctx
        params = sum(p.numel() for p in self.model.parameters())
        self._log(f"Training {cfg.name} ({params / 1e6:.2f}M params, {cfg.image_size[0]}x{cfg.image_size[1]}) on "
                  f"{plural(len(self.train_set), 'image')}, {plural(cfg.num_classes, 'class', 'classes')}; "
                  f"{plural(t.epochs, 'epoch')} x {plural(self.steps_per_epoch, 'step')}, batch {t.batch_size} x {ctx.world_size} process(es), "
                  f"{t.optimizer} peak LR {self.schedule.peak:.4g}, EMA {t.ema_decay or 'off'}, device {ctx.device}"
                  f"{', AMP ' + str(self.amp_dtype).replace('torch.', '') if self.use_amp else ''}. "
                  f"Outputs -> {self.output}")
        if self.resume:
            start = "resumed from " + str(self.resume)
        elif self.weights is not None:
            start = f"all weights from {self.weights}"
        elif self.backbone_init is not None:
            start = f"ImageNet backbone {self.backbone_init.source}, BiFPN and heads random"
        else:
            start = "random weights (from scratch)"
        self._log(f"Initialisation: {start}")
        if t.freeze != "none" or t.backbone_lr_mult != 1.0 or t.freeze_backbone_bn:
            self._log(f"Fine-tuning: {finetune_summary(t)}")

    def _log(self, message: str) -> None:
        if self.ctx.is_main:
            tqdm.write(message)

    def _plot(self, name: str, draw: Callable[..., Path], *args: Any) -> None:
        """Write the picture ``name`` into the run folder; a failure is a one-line warning, not an error."""
        try:
            draw(*args, self.output / name)
            if self.tb is not None:
                log_picture(self.tb, Path(name).stem, self.output / name, self.state.epoch)
        except Exception as e:  # noqa: BLE001 - a picture must never stop a training run
            self._log(f"Warning: could not write {self.output / name} ({type(e).__name__}: {e}); training continues")

    def _on_signal(self, name: str) -> None:
        if getattr(self, "ctx", None) is None or self.ctx.is_main:
            tqdm.write(f"\n{name} received: finishing the current step, then saving last.pt "
                       "(press Ctrl-C again to abort without saving).")

    def _previous_time(self) -> float:
        rows = self.state.metrics
        return float(rows[-1]["time_s"]) if rows else 0.0

    def _sum_over_ranks(self, value: int) -> int:
        values = D.gather_to_main(self.ctx, int(value))
        return sum(values) if values is not None else int(value)

    def _diverged_message(self, what: str, values: list[float], lr: float) -> str:
        s, last = self.state, self.output / "last.pt"
        saved = f"{last} holds the state saved at the end of epoch {s.epoch}" if last.is_file() and s.epoch else \
            (f"{last} holds the last saved state" if last.is_file() else "no checkpoint had been saved yet")
        return (f"training diverged at epoch {s.epoch + 1}, step {s.step_in_epoch + 1}/{self.steps_per_epoch} "
                f"(global step {s.global_step + 1}): the {what} is not finite (loss {values[0]}, grad norm "
                f"{values[3]}). The weights were not updated and {saved}. Try a lower learning rate (now {lr:.3g}; "
                f"e.g. train.lr={self.schedule.peak / 4:.3g}), a longer warm-up (train.warmup_epochs), "
                + ("fp32 (train.amp=false), " if self.use_amp else "")
                + "and check the data (COCO bbox must be [x, y, width, height] in pixels).")


def plural(count: int, word: str, plural_form: str | None = None) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{count} {word if count == 1 else (plural_form or word + 's')}"


def per_class_columns(per_class: list[dict[str, Any]]) -> dict[str, float | None]:
    """``{"ap_<name>": AP@[.5:.95]}`` of each class for ``metrics.csv`` (None: no ground truth)."""
    return {f"{PER_CLASS_PREFIX}{entry['name']}": entry["ap"] for entry in per_class}


def val_batch_pictures(val_set: Any, results: list[dict[str, Any]], category_ids: list[int],
                       count: int = 16, score_threshold: float = 0.25
                       ) -> tuple[torch.Tensor | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """The first ``count`` readable validation images (network input, uint8 B x 3 x H x W), their
    ground truth and the evaluated detections scored ``score_threshold`` or more (``effdet predict``'s
    default), both as ``{"boxes", "labels"[, "scores"]}`` in input pixels: what
    ``val_batch0_labels.jpg`` and ``val_batch0_pred.jpg`` show. ``(None, [], [])`` when no image reads."""
    index = {cid: i for i, cid in enumerate(category_ids)}
    images, labels, predictions = [], [], []
    for i in range(len(val_set)):
        item = val_set[i]
        if item is None:
            continue
        image, target = item
        found = [r for r in results if r["image_id"] == target["image_id"] and r["score"] >= score_threshold
                 and r["category_id"] in index]
        xywh = torch.tensor([r["bbox"] for r in found], dtype=torch.float32).reshape(-1, 4) * target["scale"]
        images.append(image)
        labels.append({"boxes": target["boxes"], "labels": target["labels"]})
        predictions.append({"boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
                            "labels": torch.tensor([index[r["category_id"]] for r in found], dtype=torch.int64),
                            "scores": torch.tensor([r["score"] for r in found], dtype=torch.float32)})
        if len(images) == count:
            break
    return (torch.stack(images) if images else None), labels, predictions


def min_batch_size(cfg: EfficientDetConfig) -> int:
    """Smallest batch BatchNorm can train on: 2 when the coarsest feature map is 1 x 1, else 1."""
    h, w = cfg.image_size
    stride = 2 ** cfg.max_level
    return 2 if math.ceil(h / stride) * math.ceil(w / stride) == 1 else 1


def finetune_summary(train: TrainConfig) -> str:
    """One line on the fine-tuning controls: what is frozen until when, the backbone LR, backbone BN."""
    if train.freeze == "none" or train.freeze_epochs == 0:
        freeze = "freeze: none"
    elif train.freeze_epochs is None or train.freeze_epochs >= train.epochs:
        freeze = f"freeze: {train.freeze} for the whole run"
    else:
        epochs = "epoch 1" if train.freeze_epochs == 1 else f"epochs 1-{train.freeze_epochs}"
        freeze = f"freeze: {train.freeze} for {epochs}, all layers train from epoch {train.freeze_epochs + 1}"
    bn = ", backbone BN frozen" if train.freeze_backbone_bn else ""
    return f"{freeze}, backbone LR x{train.backbone_lr_mult:g}{bn}"


def train(run: RunConfig, output: str | Path, **kwargs: Any) -> TrainResult:
    """``Trainer(run, output, **kwargs).fit()``."""
    return Trainer(run, output, **kwargs).fit()


__all__ = ["Trainer", "TrainResult", "TrainingDiverged", "train"]
