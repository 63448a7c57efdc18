"""The run's lines on the terminal (main process): what is trained and how, a tqdm bar per epoch
(or, without progress bars, a line every ``train.log_interval`` steps), a line per epoch, and how
the run ended with where its outputs are."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from effdet.engine.callbacks.base import Callback, StepEnd, log_due
from effdet.engine.freezing import finetune_summary, is_finetuning

if TYPE_CHECKING:
    from effdet.engine.trainer import Trainer, TrainResult


def plural(count: int, word: str, plural_form: str | None = None) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{count} {word if count == 1 else (plural_form or word + 's')}"


class ConsoleLogger(Callback):
    """Prints the run's progress; ``progress``: tqdm bars (else a line per logged step)."""

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress
        self.bar: Any = None

    def on_run_start(self, trainer: Trainer) -> None:
        task, t, ctx = trainer.task, trainer.task.train, trainer.ctx
        what, start, *notes = task.describe(trainer.model, trainer.resume is not None)
        amp = f", AMP {str(trainer.amp_dtype).replace('torch.', '')}" if trainer.amp_dtype is not None else ""
        trainer.log(f"Training {what}; {plural(t.epochs, 'epoch')} x {plural(trainer.steps_per_epoch, 'step')}, "
                    f"batch {t.batch_size} x {ctx.world_size} process(es), {t.optimizer} peak LR "
                    f"{trainer.schedule.peak:.4g}, EMA {t.ema_decay or 'off'}, device {ctx.device}{amp}. "
                    f"Outputs -> {trainer.output}")
        trainer.log(f"Initialisation: {'resumed from ' + str(trainer.resume) if trainer.resume else start}")
        for note in notes:
            trainer.log(note)
        if is_finetuning(t):
            trainer.log(f"Fine-tuning: {finetune_summary(t)}")

    def on_epoch_start(self, trainer: Trainer) -> None:
        state, epochs = trainer.state, trainer.task.train.epochs
        self.bar = tqdm(total=trainer.steps_per_epoch, initial=state.step_in_epoch, unit="step", dynamic_ncols=True,
                        desc=f"epoch {state.epoch + 1}/{epochs}", disable=not (self.progress and trainer.ctx.is_main))

    def on_step_end(self, trainer: Trainer, step: StepEnd) -> None:
        state = trainer.state
        self.bar.update(1)
        if log_due(trainer):
            loss = step.losses["loss"]
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{step.lr:.3g}", img_s=f"{step.images_per_s:.1f}",
                                 skipped=state.skipped_images, refresh=False)
            if not self.progress:
                trainer.log(f"epoch {state.epoch + 1} step {state.step_in_epoch}/{trainer.steps_per_epoch}: "
                            f"loss {loss:.4f}, lr {step.lr:.3g}, {step.images_per_s:.1f} img/s")

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        self.close()

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        task = trainer.task
        metrics = f", {task.format_metrics(row)}" if all(row.get(k) is not None for k in task.metric_names) \
            and task.metric_names else ""
        skipped = row["skipped_images"]
        trainer.log(f"epoch {row['epoch']}/{task.train.epochs}: {task.format_losses(row)}, lr {row['lr']:.3g}"
                    f"{metrics}" + (f", {skipped} unreadable image(s) skipped" if skipped else ""))

    def on_run_end(self, trainer: Trainer, result: TrainResult) -> None:
        self.close()
        s, out, task = trainer.state, trainer.output, trainer.task
        if result.status == "interrupted":
            trainer.log(f"Stopped by {result.stop}: saved {out / 'last.pt'} at epoch {s.epoch + 1}, "
                        f"step {s.step_in_epoch}/{trainer.steps_per_epoch}. Continue with: "
                        f"effdet {task.command} --resume {out}")
            return
        train = task.train
        if s.best_fitness is not None:
            best = f"best.pt (EMA weights, {task.format_fitness(s.best_fitness)} at epoch {s.best_epoch})"
        else:
            best = "no best.pt (no validation set)" if task.val_set is None else "best.pt"
        last = result.last_metrics
        if last is not None:
            images = f", {last['num_images']} images" if "num_images" in last else ""
            trainer.log(f"Validation {task.format_metrics(last)} (EMA weights, epoch {s.epoch}{images})")
        pictures = sorted(dict.fromkeys(trainer.pictures), key=lambda name: name != "results.png")
        extras = (f"; pictures: {', '.join(pictures)}" if pictures else "") + \
            "".join(f"; {line}" for line in trainer.outputs)
        why = (f"early stop: no better {task.fitness_label} for {plural(train.patience, 'epoch')} since epoch "
               f"{s.best_epoch}" if result.stop == "patience" else f"time budget of {train.time:g} h used"
               if result.stop == "time" else f"all {plural(train.epochs, 'epoch')} done")
        trainer.log(f"Finished {plural(s.epoch, 'epoch')} ({why}; {plural(s.global_step, 'step')}, "
                    f"{s.train_time_s / 60:.1f} min training). "
                    f"Outputs in {out}: {best}, last.pt, metrics.csv, config.yaml{extras}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


__all__ = ["ConsoleLogger", "plural"]
