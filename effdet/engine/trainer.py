"""The training loop: epochs of optimizer steps, EMA, periodic evaluation, checkpoints, resume.

:class:`Trainer` runs a :class:`~effdet.engine.task.Task` (detection: :class:`~effdet.engine.detection.DetectionTask`,
made from a :class:`~effdet.engine.train_config.RunConfig`). Everything a run needs is made in
``__init__``: the process group, the run-folder lock, stop-signal handlers, the data, the model, the
optimizer step, the state (restored from ``last.pt`` when resuming) and the callbacks. :meth:`Trainer.fit`
then trains once and releases all of it.

One step (:class:`~effdet.engine.step.TrainStep`): uint8 batch -> normalise on the device -> network
(autocast on CUDA) -> the task's criterion (float32) -> backward -> clip the gradient norm -> optimizer
step at the scheduled LR -> EMA update. Under DDP every rank runs the same number of steps and DDP
averages the gradients (detection normalises each rank's loss by its own batch's positive anchors,
as the official TPU/multi-GPU recipe does per replica).

After each epoch: the metrics row, evaluation on the main process with the EMA weights when due
(``best.pt`` when its fitness is the best so far), ``last.pt``, then the callbacks (``metrics.csv``,
pictures, loggers, the epoch line; :mod:`effdet.engine.callbacks`).

Stops: Ctrl-C / SIGTERM end the run after the current step and save ``last.pt`` (recording the step
inside the epoch); ``Trainer(resume=...)`` continues exactly from there. ``train.patience`` ends it
when the fitness has not improved for that many epochs, ``train.time`` when the time budget is used.
A non-finite loss or gradient norm raises :class:`TrainingDiverged` before the weights change, and
``last.pt`` keeps the last good state.

Fine-tuning (``train.freeze``, ``freeze_epochs``, ``backbone_lr_mult``, ``freeze_backbone_bn``;
:mod:`effdet.engine.freezing`): in the epochs it applies to, a frozen part gets no gradient and keeps
its BatchNorm in eval mode, so it does not change at all; the backbone's optimizer groups run at the
scheduled LR times ``backbone_lr_mult``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import torch
from tqdm import tqdm

from effdet.config import ConfigError
from effdet.data import DatasetError
from effdet.engine import distributed as D
from effdet.engine.callbacks import LOGGERS, Callback, ConsoleLogger, MetricsCsv, StepEnd, fire
from effdet.engine.callbacks.console import plural
from effdet.engine.checkpointing import TrainState, last_checkpoint_parts, restore_training, rng_states
from effdet.engine.detection import DetectionTask
from effdet.engine.freezing import Freezing
from effdet.engine.interrupt import StopSignals
from effdet.engine.optim import WarmupCosine, scaled_lr
from effdet.engine.setup import RunFolderLock, amp_settings, build_train_loader, claim_run_folder, shutdown_workers
from effdet.engine.step import make_train_step
from effdet.engine.task import Task
from effdet.engine.train_config import RunConfig
from effdet.runtime import poll_load


class TrainingDiverged(RuntimeError):
    """The loss or gradient became NaN/inf; the message says where and what to try."""


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did.

    ``status`` is ``"finished"`` or ``"interrupted"``; ``stop`` says why the run ended: ``"epochs"``,
    ``"patience"``, ``"time"``, or the stop request (``"SIGINT"``, ``"SIGTERM"``, ``"KeyboardInterrupt"``).
    ``best_fitness`` is the best evaluation's fitness (detection: mAP@[.5:.95]) or None, and
    ``last_metrics`` the last evaluation's :attr:`~effdet.engine.task.Evaluation.summary` or None.
    """

    status: str
    output: Path
    epoch: int
    global_step: int
    best_fitness: float | None
    last_metrics: dict[str, Any] | None
    stop: str | None = None


class Trainer:
    """Trains a task into a run folder; see the module docstring.

    Args:
        task: what to train: a :class:`~effdet.engine.task.Task`, or a detection
            :class:`~effdet.engine.train_config.RunConfig` (trained as a :class:`DetectionTask`).
        output: folder for ``last.pt``, ``best.pt``, ``metrics.csv``, ``config.yaml`` and the pictures.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or None/"auto" (CUDA if available).
        weights, size_fields: :class:`DetectionTask` arguments, only with a ``RunConfig``.
        resume: a ``last.pt`` to continue from (its run config should be the task's, see
            ``effdet.engine.resume_run_config``).
        progress: show tqdm bars (main process only).
        callbacks: called on the run's events after the built-in ones
            (:class:`~effdet.engine.callbacks.Callback`, ``docs/callbacks.md``).
        exist_ok: train into ``output`` even when it holds another run (replacing its files);
            by default that is refused with a :class:`ConfigError` before anything is read.
        run_lock: the lock of ``output`` when the caller holds it already
            (:func:`~effdet.engine.setup.claim_next_run_folder`). Otherwise the trainer locks
            ``output`` itself; a folder another run is using is refused
            (:class:`~effdet.engine.setup.RunFolderInUse`). Released when :meth:`fit` returns.

    Raises (from the constructor, having released what it took):
        ConfigError, DatasetError, CheckpointError: bad settings, data, weights or ``resume`` file.
    """

    def __init__(self, task: Task | RunConfig, output: str | Path, device: str | None = None,
                 weights: str | Path | None = None, resume: str | Path | None = None, progress: bool = True,
                 callbacks: Sequence[Callback] = (), exist_ok: bool = False, run_lock: RunFolderLock | None = None,
                 size_fields: Collection[str] = ()) -> None:
        if isinstance(task, RunConfig):
            task = DetectionTask(task, weights, size_fields)
        elif weights is not None or size_fields:
            raise TypeError("weights and size_fields are DetectionTask arguments: give them to the task")
        self.task, self.output, self.progress = task, Path(output), progress
        self.resume = Path(resume) if resume else None
        self.clock: Callable[[], float] = time.perf_counter  # wall clock of the run (train.time), seconds
        self.pictures: list[str] = []  # names of the pictures written into the run folder, in order
        self.outputs: list[str] = []  # further outputs for the last line (e.g. "TensorBoard: tensorboard/")
        self.last_eval: dict[str, Any] | None = None
        self._saved_step: int | None = None  # global step of the latest last.pt
        self._in_step = False
        logger = LOGGERS.get(task.train.logger)
        with contextlib.ExitStack() as cleanup:  # on an error below, what was taken is released
            self.ctx = ctx = D.setup_distributed(device)
            cleanup.callback(D.cleanup_distributed, ctx)
            self.stop = cleanup.enter_context(StopSignals(self._on_signal))
            if run_lock is not None:
                cleanup.callback(run_lock.release)
            self.run_lock, opened = self._claim_output(run_lock, exist_ok, logger)
            if self.run_lock is not None:
                cleanup.callback(self.run_lock.release)
            if opened is not None:
                cleanup.callback(opened.close)

            task.prepare(ctx, self.resume is not None, self.log)
            train = task.train
            torch.manual_seed(train.seed)  # the same initial weights on every rank
            self.model = task.build_model(self.resume is not None).to(ctx.device)
            self.loader = build_train_loader(task.train_set, train, ctx, task.collate)
            cleanup.callback(shutdown_workers, self.loader)
            self.sampler = self.loader.batch_sampler
            self.steps_per_epoch: int = self.sampler.batches_per_epoch
            self.min_batch = task.min_batch_size(self.model)
            peak = scaled_lr(train.lr, train.lr_per_64, train.batch_size * ctx.world_size)
            self.schedule = WarmupCosine(peak, train.epochs * self.steps_per_epoch,
                                         round(train.warmup_epochs * self.steps_per_epoch), train.warmup_factor,
                                         train.min_lr_ratio)
            use_amp, amp_dtype = amp_settings(train.amp, ctx.device)
            self.amp_dtype = amp_dtype if use_amp else None
            torch.backends.cudnn.benchmark = ctx.device.type == "cuda"  # fixed input size: pick the fastest kernels

            parts = task.parts(self.model)
            self.freezing = Freezing(parts, train)
            self.train_step = make_train_step(
                self.model, train, peak, task.criterion(self.model, ctx.device), self.amp_dtype,
                wrap=lambda model: D.wrap_model(model, ctx, train.sync_bn),
                any_across_ranks=lambda *flags: D.any_across_ranks(ctx, *flags),
                backbone=torch.nn.ModuleList(parts["backbone"]) if parts.get("backbone") else None)
            self.ema, self.optimizer, self.scaler = self.train_step.ema, self.train_step.optimizer, self.train_step.scaler
            torch.manual_seed(train.seed + ctx.rank)  # per-rank stream for stochastic depth

            self.state = TrainState(steps_per_epoch=self.steps_per_epoch)
            if self.resume is not None:
                self.state = restore_training(self.resume, self.model, self.ema, self.optimizer, self.scaler,
                                              self.steps_per_epoch, ctx.rank, ctx.world_size, self.log)
            if ctx.is_main:
                self.output.mkdir(parents=True, exist_ok=True)
                task.write_config(self.output / "config.yaml")
            self.callbacks: list[Callback] = [MetricsCsv(), *task.callbacks(), *([opened] if opened else []),
                                              ConsoleLogger(progress), *callbacks]
            for callback in self.callbacks:
                if callback is not opened:
                    cleanup.callback(callback.close)
            self._cleanup = cleanup.pop_all()

    def _claim_output(self, lock: RunFolderLock | None, exist_ok: bool, logger: Any
                      ) -> tuple[RunFolderLock | None, Callback | None]:
        """Only rank 0 writes: it alone locks the run folder, for the whole run, and opens the
        ``train.logger`` (before any data is read, so that a missing package or tracking store fails
        fast). Every rank stops when it cannot (none waits for rank 0)."""
        refusal, opened = None, None
        if self.ctx.is_main:
            try:
                if logger is not None:
                    logger.check()  # a missing package fails before the folder is claimed
                lock = claim_run_folder(self.output, self.resume, exist_ok, lock)
                opened = logger(self.output) if logger is not None else None
            except (ConfigError, OSError) as error:
                refusal = error
        if D.any_across_ranks(self.ctx, refusal is not None)[0]:
            if lock is not None:
                lock.release()
            raise refusal or ConfigError(f"rank 0 could not use the run folder {self.output}")
        return lock, opened

    # ------------------------------------------------------------------ loop
    def fit(self) -> TrainResult:
        """Train until ``train.epochs`` are done, an early stop, or a stop signal; release the run's
        resources (lock, workers, process group, signal handlers, callbacks). A trainer fits once."""
        with self._cleanup:
            self._cleanup = contextlib.ExitStack()  # a second fit finds nothing to release
            state, train = self.state, self.task.train
            if self.resume and state.epoch >= train.epochs:
                self.log(f"Nothing left to train: {self.resume} already finished its {plural(train.epochs, 'epoch')}. "
                         f"To train longer, resume with a higher train.epochs (effdet {self.task.command} --resume "
                         f"{self.output} train.epochs={train.epochs * 2}).")
                return TrainResult("finished", self.output, state.epoch, state.global_step, state.best_fitness, None,
                                   "epochs")
            fire(self.callbacks, "on_run_start", self)
            reason = None
            while reason is None and state.epoch < self.task.train.epochs:
                started = self.clock()
                if not self._train_epoch():
                    state.run_time_s += self.clock() - started
                    return self._end_run("interrupted", self.stop.requested)
                reason = self._end_epoch(evaluate=self.stop.requested is None, started=started)
                if self.stop.requested is not None:
                    return self._end_run("interrupted", self.stop.requested)
            return self._end_run("finished", reason or "epochs")

    def _train_epoch(self) -> bool:
        """Run the rest of the current epoch; False when stopped early by a signal."""
        state, names = self.state, self.task.loss_names
        self.sampler.set_epoch(state.epoch, state.step_in_epoch)
        self._train_mode()
        fire(self.callbacks, "on_epoch_start", self)
        start, images_seen = time.perf_counter(), 0
        try:
            for images, targets, skipped in self.loader:
                # Too few readable images (on any rank) for a BatchNorm step: skip it on every rank.
                stop, unusable = D.any_across_ranks(self.ctx, self.stop.requested is not None,
                                                    len(targets) < self.min_batch)
                if stop:
                    return False
                lr = self.schedule(state.global_step)
                poll_load()  # keep to the CPUs other processes leave free
                self._in_step = True  # a KeyboardInterrupt now leaves no consistent state to save
                values = [math.nan] * (len(names) + 1) if unusable else self._step(images, targets, lr)
                self._count(values, 0 if unusable else len(targets), skipped, len(targets))
                self._in_step = False
                images_seen += len(targets) * self.ctx.world_size
                rate = images_seen / max(time.perf_counter() - start, 1e-9)
                fire(self.callbacks, "on_step_end", self,
                     StepEnd(images, targets, dict(zip(names, values)), values[-1], lr, rate, unusable))
        except KeyboardInterrupt:  # raised outside a step (e.g. while loading data): save like a signal
            if self._in_step:
                raise
            self.stop.requested = self.stop.requested or "KeyboardInterrupt"
            return False
        finally:
            state.train_time_s += time.perf_counter() - start
        fire(self.callbacks, "on_train_epoch_end", self)
        return True

    def _train_mode(self) -> None:
        """Train mode for the current epoch, with its parts frozen (:class:`~effdet.engine.freezing.Freezing`).
        DDP reduces the gradients of the parameters that required them when it was built, so the
        step's wrapper is rebuilt when that set changes."""
        epoch = self.state.epoch
        if self.freezing.set_trainable(self.model, epoch):
            if self.ctx.distributed:  # BatchNorm was converted at the first wrap
                self.train_step.net = D.wrap_model(self.model, self.ctx, sync_bn=False)
            if not self.freezing.frozen(epoch) and epoch > 0:
                self.log(f"epoch {epoch + 1}: {self.task.train.freeze} unfrozen, all layers train from now")
        self.train_step.net.train()
        self.freezing.fix_batchnorm(epoch)

    def _step(self, images: torch.Tensor, targets: Sequence[Any], lr: float) -> list[float]:
        """One optimizer step; returns the task's losses and the gradient norm as floats. A
        non-finite loss or gradient norm stops the run."""
        values, problem = self.train_step(images, targets, lr)
        if problem is not None:
            raise TrainingDiverged(self._diverged_message(problem, values, lr))
        return values

    def _count(self, values: list[float], images: int, skipped: int, read: int) -> None:
        state, sums = self.state, self.state.sums
        for key, value in zip(self.task.loss_names, values):
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
        """Metrics row, evaluation (main process, EMA weights), ``best.pt`` / ``last.pt``, callbacks.

        Returns why the run stops after this epoch (``"patience"``, ``"time"``, ``"epochs"``), or
        None to go on. ``started``: :attr:`clock` when the epoch began (``train.time``).
        """
        state, task, train = self.state, self.task, self.task.train
        epoch = state.epoch + 1
        skipped = self._sum_over_ranks(state.sums.get("skipped", 0))
        steps = max(1, state.sums.get("steps", 0))
        row: dict[str, Any] = dict(epoch=epoch, step=state.global_step, lr=self.schedule(state.global_step - 1),
                                   images=int(state.sums.get("images", 0)) * self.ctx.world_size,
                                   skipped_images=skipped, time_s=round(state.train_time_s, 2),
                                   images_per_s=None, **dict.fromkeys(task.metric_names))
        row.update({k: state.sums.get(k, 0.0) / steps for k in task.loss_names})
        read = max(state.sums.get("read", 0), state.sums.get("images", 0))  # "read": checkpoints before it
        (read_any,) = D.any_across_ranks(self.ctx, read > 0)
        if not read_any:
            raise DatasetError(f"epoch {epoch}: none of the training images could be read ({skipped} skipped, see the "
                               f"warnings), so nothing was trained; check {task.data_hint()}; git-lfs pointer "
                               "files, for one, are not images")
        due = (train.eval_interval > 0 and epoch % train.eval_interval == 0) or epoch == train.epochs
        state.epoch, state.step_in_epoch, state.sums = epoch, 0, {}
        if evaluate and due and self.ctx.is_main and task.val_set is not None:
            evaluation = task.evaluate(self.eval_model, self.ctx.device, self.progress)
            row.update(evaluation.columns)
            if state.best_fitness is None or evaluation.fitness > state.best_fitness:
                state.best_fitness, state.best_epoch = evaluation.fitness, epoch
                task.save_checkpoint(self.output / "best.pt", self.eval_model, epoch=epoch,
                                     **{k: evaluation.columns[k] for k in task.metric_names})
            self.last_eval = evaluation.summary
            fire(self.callbacks, "on_eval_end", self, evaluation)
        D.barrier(self.ctx)
        if self.ctx.is_main:
            row["images_per_s"] = round(row["images"] / max(row["time_s"] - self._previous_time(), 1e-9), 2)
        state.run_time_s += self.clock() - started
        reason = self._stop_reason(epoch)
        row.update(epochs=task.train.epochs, stop=reason)
        state.metrics.append(row)
        self._save_last()
        fire(self.callbacks, "on_epoch_end", self, row)
        return reason

    def _stop_reason(self, epoch: int) -> str | None:
        """Why the run ends after ``epoch`` (1-based, just done), or None. Under ``train.time`` the
        number of epochs is first refitted to the time left. Rank 0 decides (it alone evaluates)."""
        train, state = self.task.train, self.state
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
        train, before = self.task.train, self.task.train.epochs
        self.task.train = dataclasses.replace(train, epochs=epochs)
        self.schedule = WarmupCosine(self.schedule.peak, epochs * self.steps_per_epoch, self.schedule.warmup_steps,
                                     train.warmup_factor, train.min_lr_ratio)
        self.log(f"time budget {train.time:g} h: {plural(epochs, 'epoch')} in all (planned so far: {before}); "
                 "the LR schedule now ends with them")

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are evaluated and kept as best: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def _end_run(self, status: str, stop: str | None) -> TrainResult:
        if status == "interrupted" and self._saved_step != self.state.global_step:  # not saved at an epoch end
            self._save_last()
        s = self.state
        result = TrainResult(status, self.output, s.epoch, s.global_step, s.best_fitness, self.last_eval, stop)
        fire(self.callbacks, "on_run_end", self, result)
        return result

    # ------------------------------------------------------------ saving, logs
    def _save_last(self) -> None:
        """Write ``last.pt`` (main process; every rank contributes its RNG state)."""
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise TrainingDiverged("the weights contain NaN/inf; last.pt was not overwritten. "
                                   "Lower the learning rate (train.lr) and check the data.")
        self._saved_step = self.state.global_step
        rngs = D.gather_to_main(self.ctx, rng_states())
        if self.ctx.is_main:
            self.task.save_checkpoint(self.output / "last.pt", self.model, **last_checkpoint_parts(
                self.model, self.ema, self.optimizer, self.scaler, self.state, rngs))
        D.barrier(self.ctx)

    def log(self, message: str) -> None:
        """Print a line on the main process (above any progress bar)."""
        if self.ctx.is_main:
            tqdm.write(message)

    def picture(self, name: str, draw: Callable[..., Path], *args: Any) -> None:
        """Write the picture ``name`` into the run folder with ``draw(*args, path)`` and fire
        ``on_picture_saved``; a failure is a one-line warning, not an error."""
        path = self.output / name
        try:
            draw(*args, path)
            self.pictures.append(name)
            fire(self.callbacks, "on_picture_saved", self, path)
        except Exception as e:  # noqa: BLE001 - a picture must never stop a training run
            self.log(f"Warning: could not write {path} ({type(e).__name__}: {e}); training continues")

    def _on_signal(self, name: str) -> None:
        if self.ctx.is_main:
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
                f"{values[-1]}). The weights were not updated and {saved}. Try a lower learning rate (now {lr:.3g}; "
                f"e.g. train.lr={self.schedule.peak / 4:.3g}), a longer warm-up (train.warmup_epochs), "
                + ("fp32 (train.amp=false), " if self.amp_dtype is not None else "")
                + f"and check the data ({self.task.data_hint()}).")


def train(task: Task | RunConfig, output: str | Path, **kwargs: Any) -> TrainResult:
    """``Trainer(task, output, **kwargs).fit()``; e.g. ``train(run, "runs/x", callbacks=[MyLogger()])``."""
    return Trainer(task, output, **kwargs).fit()


__all__ = ["Trainer", "TrainResult", "TrainingDiverged", "train"]
