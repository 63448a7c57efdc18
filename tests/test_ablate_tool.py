"""tools/ablate.py: variant parsing, resumable runs and the summary of mAP per set and seed."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import ablate


def write_metrics(run: Path, maps: list[float]) -> None:
    run.mkdir(parents=True)
    with open(run / "metrics.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["epoch", "map", "map50", "class_loss", "time_s"])
        writer.writeheader()
        for epoch, value in enumerate(maps, 1):
            writer.writerow(dict(epoch=epoch, map=value, map50=2 * value, class_loss=0.5, time_s=60 * epoch))


def test_variants_are_name_then_arguments() -> None:
    assert ablate.parse_variants(["base:", "bn: model.bn_momentum=0.1 --lr 4e-3 train.scale_range=[0.8,1.2]"]) == {
        "base": [], "bn": ["model.bn_momentum=0.1", "--lr", "4e-3", "train.scale_range=[0.8,1.2]"]}
    with pytest.raises(SystemExit):
        ablate.parse_variants(["no colon here"])


def test_summary_is_the_mean_of_seeds_with_the_spread(tmp_path: Path) -> None:
    write_metrics(tmp_path / "base" / "a" / "seed0", [0.1, 0.2])
    write_metrics(tmp_path / "base" / "a" / "seed1", [0.1, 0.4])
    write_metrics(tmp_path / "base" / "b" / "seed0", [0.5, 0.6])
    write_metrics(tmp_path / "base" / "b" / "seed1", [0.9])  # still running: not a result
    text = ablate.summarise(tmp_path, {"base": []}, {"a": tmp_path, "b": tmp_path}, [0, 1], epochs=2)
    assert "| base `(common arguments only)` | 0.300 (0.200-0.400; AP50 0.600) | 0.600 (0.600-0.600; AP50 1.200) " \
           "[1 of 2 seeds] | 0.450 |" in text
    assert (tmp_path / "summary.md").read_text() == text
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_complete_runs_are_not_trained_again(tmp_path: Path) -> None:
    write_metrics(tmp_path / "run", [0.1, 0.2, 0.3])
    minutes = ablate.train_one(tmp_path / "run", tmp_path / "no-data", 0, ["--epochs", "3"], [], 3, tmp_path / "log")
    assert minutes == pytest.approx(3.0) and not (tmp_path / "log").exists()
