"""Training that stops when it should (``train.patience``, ``train.time``) and shows what it
learned (``val_batch0_labels.jpg`` / ``val_batch0_pred.jpg``, per-class AP in ``metrics.csv`` and
``results.png``), on a tiny model and a few synthetic 128 px images."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from effdet.config import ConfigError
from effdet.engine.train_config import RunConfig, load_run_config
from effdet.engine.detection import DetectionTask, val_batch_pictures
from effdet.engine.task import Evaluation
from effdet.engine.trainer import Trainer

TINY = {"image_size": 128, "fpn_channels": 16, "fpn_cells": 1, "head_repeats": 1}

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_run(data, **train: object) -> RunConfig:
    overrides = {**TINY, "train_ann": str(data.train_annotations), "train_images": str(data.train_images),
                 "val_ann": str(data.val_annotations), "val_images": str(data.val_images),
                 "epochs": 2, "batch_size": 2, "workers": 0, "lr": 0.01, "warmup_epochs": 0.5, "ema_decay": 0.99,
                 "log_interval": 1, **train}
    return load_run_config("efficientdet_d0", overrides)


def rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_patience_stops_when_map_stops_improving(tiny_shapes, tmp_path: Path, monkeypatch, capsys) -> None:
    """mAP 0.5, 0.6 (best), 0.55, 0.58: with patience 2 the run stops after epoch 4 of 10, says so,
    and metrics.csv records it; best.pt is epoch 2's."""
    maps = iter([0.5, 0.6, 0.55, 0.58, 0.9, 0.9])
    monkeypatch.setattr(DetectionTask, "evaluate", lambda self, model, device, progress: Evaluation(
        (m := next(maps)), {"map": m, "map50": m}, {"map": m, "map50": m, "num_images": 2}, {"results": []}))
    run = tiny_run(tiny_shapes, epochs=10, patience=2, plots=False)
    result = Trainer(run, tmp_path / "run", progress=False).fit()
    assert result.status == "finished" and result.epoch == 4 and result.best_fitness == 0.6
    table = rows(tmp_path / "run")
    assert [r["map"] for r in table] == ["0.5", "0.6", "0.55", "0.58"]
    assert [r["stop"] for r in table] == ["", "", "", "patience"]
    assert all(r["epochs"] == "10" for r in table)
    out = capsys.readouterr().out
    assert "Finished 4 epochs (early stop: no better mAP for 2 epochs since epoch 2;" in out


def test_time_budget_refits_the_epochs_and_the_schedule(tiny_shapes, tmp_path: Path, capsys) -> None:
    """Each epoch takes 10 s of the run's clock (faked); a budget of 35 s allows 3 of the planned 8,
    and the LR schedule is rebuilt so that its cosine ends at the last step of epoch 3."""
    run = tiny_run(tiny_shapes, epochs=8, time=35 / 3600, min_lr_ratio=0.0, plots=False)
    trainer = Trainer(run, tmp_path / "run", progress=False)
    ticks = iter(range(0, 1000, 10))  # read twice an epoch: at its start and its end
    trainer.clock = lambda: float(next(ticks))
    result = trainer.fit()
    assert result.status == "finished" and result.epoch == 3
    table = rows(tmp_path / "run")
    assert [r["epochs"] for r in table] == ["3", "3", "3"] and [r["stop"] for r in table] == ["", "", "time"]
    assert trainer.schedule.total_steps == 3 * trainer.steps_per_epoch
    assert trainer.schedule(trainer.schedule.total_steps - 1) == pytest.approx(0.0, abs=1e-12)
    out = capsys.readouterr().out
    assert "time budget 0.00972222 h: 3 epochs in all (planned so far: 8)" in out
    assert "Finished 3 epochs (time budget of 0.00972222 h used;" in out


def test_time_and_patience_are_validated() -> None:
    with pytest.raises(ConfigError, match="train.patience"):
        load_run_config("efficientdet_d0", {"patience": -1})
    with pytest.raises(ConfigError, match="train.time"):
        load_run_config("efficientdet_d0", {"time": 0})


def test_each_evaluation_draws_labels_and_predictions_and_records_per_class_ap(tiny_shapes, tmp_path: Path) -> None:
    run = tiny_run(tiny_shapes, epochs=1)
    Trainer(run, tmp_path / "run", progress=False).fit()
    out = tmp_path / "run"
    for name in ("val_batch0_labels.jpg", "val_batch0_pred.jpg", "results.png"):
        with Image.open(out / name) as image:
            assert image.size[0] > 100 and image.size[1] > 100
    table = rows(out)
    per_class = [k for k in table[0] if k.startswith("ap_")]
    names = [c["name"] for c in __import__("json").loads(Path(tiny_shapes.val_annotations).read_text())["categories"]]
    assert per_class == [f"ap_{n}" for n in names]


def test_val_batch_pictures_map_detections_into_the_network_input(tiny_shapes) -> None:
    """Detections in original pixels (COCO xywh) come out in network-input pixels (xyxy, times the
    letterbox scale), with their class index and score; those under 0.25 are not drawn."""
    from effdet.data import CocoDetection, eval_transform

    dataset = CocoDetection(tiny_shapes.val_annotations, tiny_shapes.val_images, transform=eval_transform((96, 96)))
    image, target = dataset[0]
    cid = dataset.category_ids[1]
    results = [{"image_id": target["image_id"], "category_id": cid, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.9},
               {"image_id": target["image_id"], "category_id": cid, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.1}]
    images, labels, predictions = val_batch_pictures(dataset, results, dataset.category_ids)
    assert images.shape == (len(dataset), 3, 96, 96) and images.dtype == torch.uint8
    s = target["scale"]
    assert torch.allclose(predictions[0]["boxes"], torch.tensor([[10 * s, 20 * s, 40 * s, 60 * s]]))
    assert predictions[0]["labels"].tolist() == [1] and predictions[0]["scores"].tolist() == [pytest.approx(0.9)]
    assert torch.equal(labels[0]["boxes"], target["boxes"])
