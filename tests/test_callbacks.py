"""The trainer's callbacks: the events and their order, the state each receives, user callbacks
through ``effdet.engine.train``, state made in the constructor, and the MLflow logger."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from effdet.config import ConfigError
from effdet.data import DatasetError
from effdet.engine import train
from effdet.engine.callbacks import EVENTS, Callback, Hook
from effdet.engine.setup import lock_run_folder
from effdet.engine.train_config import load_run_config
from effdet.engine.trainer import Trainer

TINY = {"image_size": 128, "fpn_channels": 16, "fpn_cells": 1, "head_repeats": 1}

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_run(data, **train: object):
    """4 training images, batch 2: 2 steps an epoch; validation on the 2 val images every epoch."""
    overrides = {**TINY, "train_ann": str(data.train_annotations), "train_images": str(data.train_images),
                 "val_ann": str(data.val_annotations), "val_images": str(data.val_images), "epochs": 2,
                 "batch_size": 2, "workers": 0, "lr": 0.01, "ema_decay": 0.9, "eval_interval": 1, "plots": False,
                 **train}
    return load_run_config("efficientdet_d0", overrides)


class Recorder(Callback):
    """Records every event with what it received."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.closed = 0

    def on_run_start(self, trainer):
        self.events.append(("on_run_start", trainer.state.global_step))

    def on_epoch_start(self, trainer):
        self.events.append(("on_epoch_start", trainer.state.epoch))

    def on_step_end(self, trainer, step):
        self.events.append(("on_step_end", trainer.state.global_step, step))
        assert step.lr == trainer.schedule(trainer.state.global_step - 1)

    def on_train_epoch_end(self, trainer):
        self.events.append(("on_train_epoch_end", trainer.state.step_in_epoch))

    def on_eval_end(self, trainer, evaluation):
        self.events.append(("on_eval_end", evaluation))

    def on_epoch_end(self, trainer, row):
        self.events.append(("on_epoch_end", dict(row), (trainer.output / "last.pt").is_file()))

    def on_run_end(self, trainer, result):
        self.events.append(("on_run_end", result))

    def close(self):
        self.closed += 1


def test_events_come_in_order_with_the_run_state(tiny_shapes, tmp_path: Path) -> None:
    recorder = Recorder()
    result = train(tiny_run(tiny_shapes), tmp_path / "run", progress=False, callbacks=[recorder])
    names = [e[0] for e in recorder.events]
    epoch = ["on_epoch_start", "on_step_end", "on_step_end", "on_train_epoch_end", "on_eval_end", "on_epoch_end"]
    assert names == ["on_run_start", *epoch, *epoch, "on_run_end"]
    assert recorder.closed == 1
    assert recorder.events[0][1] == 0  # before the first step
    steps = [e for e in recorder.events if e[0] == "on_step_end"]
    assert [e[1] for e in steps] == [1, 2, 3, 4]
    for _, _, step in steps:
        assert set(step.losses) == {"loss", "class_loss", "box_loss"} and not step.skipped
        assert step.images.shape == (2, 3, 128, 128) and len(step.targets) == 2
        assert step.grad_norm > 0 and step.images_per_s > 0
    with open(tmp_path / "run" / "metrics.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    rows = [e[1] for e in recorder.events if e[0] == "on_epoch_end"]
    assert [r["epoch"] for r in rows] == [1, 2] and all(e[2] for e in recorder.events if e[0] == "on_epoch_end")
    assert [float(t["loss"]) for t in table] == pytest.approx([r["loss"] for r in rows], rel=1e-5)
    first_two = [s.losses["loss"] for _, _, s in steps[:2]]
    assert rows[0]["loss"] == pytest.approx(sum(first_two) / 2, rel=1e-9)  # the epoch's mean step loss
    evaluations = [e[1] for e in recorder.events if e[0] == "on_eval_end"]
    assert [ev.fitness for ev in evaluations] == [r["map"] for r in rows]
    assert "results" in evaluations[0].details and "results" not in evaluations[0].summary
    end = recorder.events[-1][1]
    assert end is not None and (end.status, end.stop, end.global_step) == ("finished", "epochs", 4)
    assert end == result and result.best_fitness == max(r["map"] for r in rows)


def test_a_callback_can_stop_the_run(tiny_shapes, tmp_path: Path) -> None:
    stop = Hook(on_step_end=lambda trainer, step: setattr(trainer.stop, "requested", "my reason"))
    result = Trainer(tiny_run(tiny_shapes), tmp_path, progress=False, callbacks=[stop]).fit()
    assert (result.status, result.stop, result.global_step) == ("interrupted", "my reason", 1)
    assert (tmp_path / "last.pt").is_file()


def test_hook_names_only_known_events() -> None:
    assert Hook(on_run_end=print).on_run_end is print
    with pytest.raises(TypeError, match="unknown event.*on_step_begin.*the events are on_run_start"):
        Hook(on_step_begin=print)
    assert EVENTS[0] == "on_run_start" and all(hasattr(Callback, name) for name in EVENTS)


def test_the_constructor_makes_the_state_and_fit_releases_it(tiny_shapes, tmp_path: Path) -> None:
    trainer = Trainer(tiny_run(tiny_shapes, epochs=1), tmp_path, progress=False)
    assert trainer.state.global_step == 0 and trainer.steps_per_epoch == 2
    assert (tmp_path / "config.yaml").is_file() and trainer.task.class_names
    with pytest.raises(ConfigError, match="in use by another training run"):
        lock_run_folder(tmp_path)  # held until fit() ends
    assert trainer.fit().status == "finished"
    lock_run_folder(tmp_path).release()  # free again


def test_a_failing_constructor_releases_the_run_folder(tiny_shapes, tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        Trainer(tiny_run(tiny_shapes, train_ann=str(tmp_path / "missing.json")), tmp_path / "out", progress=False)
    lock_run_folder(tmp_path / "out").release()  # not left locked


def test_weights_go_to_the_detection_task_not_to_another_task(tiny_shapes, tmp_path: Path) -> None:
    from effdet.engine.detection import DetectionTask

    with pytest.raises(TypeError, match="DetectionTask arguments"):
        Trainer(DetectionTask(tiny_run(tiny_shapes)), tmp_path, weights="x.pt")


# ------------------------------------------------------------------------------------------- MLflow
# MLflow runs in a fresh interpreter: imported into the pytest process after everything the suite has
# loaded before (ONNX Runtime, OpenVINO, LiteRT, the reference port), its native libraries crashed it.
needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason='MLflow is an optional extra: pip install -e ".[mlflow]"')

MLFLOW_RUN = """
import json, sys
from pathlib import Path
from types import SimpleNamespace
from effdet.config import ConfigError
from effdet.engine.trainer import Trainer
from tests.test_callbacks import tiny_run
data = SimpleNamespace(train_annotations=sys.argv[1], train_images=sys.argv[2], val_annotations=sys.argv[3],
                       val_images=sys.argv[4])
out, store = Path(sys.argv[5]), sys.argv[6]
try:
    Trainer(tiny_run(data, logger="mlflow", plots=True), out, progress=False).fit()
except ConfigError as error:
    print(json.dumps({"error": str(error)}))
    raise SystemExit(0)
from mlflow.tracking import MlflowClient
client = MlflowClient(store)
(run,) = client.search_runs([client.get_experiment_by_name("effdet-test").experiment_id])
history = client.get_metric_history(run.info.run_id, "train/loss")
print(json.dumps({"name": run.info.run_name, "status": run.info.status, "params": run.data.params,
                  "loss": [(m.step, m.value) for m in history],
                  "map_steps": [m.step for m in client.get_metric_history(run.info.run_id, "val/map")],
                  "artifacts": [a.path for a in client.list_artifacts(run.info.run_id)]}))
"""


def run_mlflow(data, out: Path, store: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", MLFLOW_RUN, str(data.train_annotations), str(data.train_images),
                           str(data.val_annotations), str(data.val_images), str(out), store.as_uri()],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_mlflow
def test_mlflow_logger_records_params_metrics_and_artifacts(tiny_shapes, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "effdet-test")
    out = tmp_path / "run"
    run = run_mlflow(tiny_shapes, out, store)
    assert run["name"] == "run" and run["status"] == "FINISHED"
    assert run["params"]["train.epochs"] == "2" and run["params"]["model.image_size"] == "[128, 128]"
    with open(out / "metrics.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [step for step, _ in run["loss"]] == [1, 2]
    assert [value for _, value in run["loss"]] == pytest.approx([float(r["loss"]) for r in table], rel=1e-5)
    assert run["map_steps"] == [1, 2]
    assert {"metrics.csv", "best.pt", "results.png", "labels.png", "train_batch0.jpg"} <= set(run["artifacts"])


def test_missing_mlflow_is_a_config_error_before_the_run_folder(tiny_shapes, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[mlflow\]"'):
        Trainer(tiny_run(tiny_shapes, logger="mlflow"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@needs_mlflow
def test_an_unusable_mlflow_store_is_a_config_error(tiny_shapes, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")
    result = run_mlflow(tiny_shapes, tmp_path / "out", tmp_path / "mlruns")
    assert re.search("cannot log to .*set MLFLOW_TRACKING_URI", result.get("error", "")), result
    lock_run_folder(tmp_path / "out").release()  # not left locked
