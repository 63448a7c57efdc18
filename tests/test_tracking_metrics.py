"""MOTChallenge files and tracking metrics (effdet.evaluation.mot): reading and its errors, and
HOTA / MOTA / IDF1 / ID switches / FP / FN by TrackEval on hand-counted sequences."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from effdet.evaluation.mot import MotBox, MotFileError, evaluate_mot, format_metrics, read_mot_file

needs_trackeval = pytest.mark.skipif(importlib.util.find_spec("trackeval") is None,
                                     reason="tracking metrics need TrackEval: pip install --no-deps trackeval tabulate")


def _walk(track_id: int, frames: range, x0: float, step: float = 5.0, score: float = 1.0) -> list[MotBox]:
    return [MotBox(f, track_id, (x0 + step * f, 10.0, x0 + step * f + 30, 40.0), score) for f in frames]


GT = _walk(1, range(1, 11), 0.0) + _walk(2, range(1, 11), 200.0)


def test_read_mot_file(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("1,3,10.5,20,30,40,0.9,-1,-1,-1\n\n2 3 11 20 30 40 1 1 0.5\n")
    assert read_mot_file(path) == [MotBox(1, 3, (10.5, 20.0, 40.5, 60.0), 0.9), MotBox(2, 3, (11.0, 20.0, 41.0, 60.0),
                                                                                         1.0)]


@pytest.mark.parametrize("text, message", [
    ("1,2,3,4,5\n", "line 1: expected at least 7 numbers"),
    ("1,1,0,0,5,5,1\n0,1,0,0,5,5,1\n", "line 2: frame must be a whole number from 1"),
    ("1.5,1,0,0,5,5,1\n", "line 1: frame must be a whole number from 1"),
    ("1,1,0,0,-5,5,1\n", "line 1: negative box width or height"),
    ("1,1,0,0,nan,5,1\n", "line 1: expected at least 7 numbers"),
    ("1,one,0,0,5,5,1\n", "line 1: expected at least 7 numbers"),
])
def test_bad_mot_lines_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gt.txt"
    path.write_text(text)
    with pytest.raises(MotFileError, match=message) as error:
        read_mot_file(path, "--gt file")
    assert str(error.value).startswith(f"--gt file {path} line")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MotFileError, match="does not exist"):
        read_mot_file(tmp_path / "none.txt")


@needs_trackeval
def test_perfect_tracks_score_one() -> None:
    metrics = evaluate_mot(GT, [MotBox(b.frame, b.track_id + 40, b.box, 0.9) for b in GT])
    assert {k: metrics[k] for k in ("HOTA", "MOTA", "IDF1", "IDSW", "FP", "FN")} == \
        {"HOTA": pytest.approx(1.0), "MOTA": 1.0, "IDF1": 1.0, "IDSW": 0, "FP": 0, "FN": 0}


@needs_trackeval
def test_an_id_switch_is_counted_once() -> None:
    # track 8 follows object 1 throughout; object 2 is track 9 for frames 1-5, then track 7
    tracks = _walk(8, range(1, 11), 0.0) + _walk(9, range(1, 6), 200.0) + _walk(7, range(6, 11), 200.0)
    metrics = evaluate_mot(GT, tracks)
    assert metrics["IDSW"] == 1 and metrics["FP"] == 0 and metrics["FN"] == 0
    assert metrics["MOTA"] == pytest.approx(1 - 1 / 20)
    assert metrics["IDF1"] == pytest.approx(2 * 15 / 40)  # 15 of 20 boxes keep their best-matching id
    assert metrics["AssA"] == pytest.approx(0.75) and metrics["DetA"] == pytest.approx(1.0)
    assert metrics["HOTA"] == pytest.approx(math.sqrt(0.75))
    assert metrics["IDs"] == 3 and metrics["GT_IDs"] == 2


@needs_trackeval
def test_false_positives_and_misses() -> None:
    tracks = _walk(1, range(1, 11), 0.0) + _walk(2, range(1, 8), 200.0) + [MotBox(4, 5, (500, 500, 520, 520), 0.5)]
    metrics = evaluate_mot(GT, tracks)
    assert (metrics["FP"], metrics["FN"], metrics["IDSW"]) == (1, 3, 0)
    assert metrics["MOTA"] == pytest.approx(1 - 4 / 20)
    # a box overlapping its object at IoU < 0.5 is both a miss and a false positive
    shifted = _walk(1, range(1, 11), 0.0) + _walk(2, range(1, 11), 220.0)
    assert (evaluate_mot(GT, shifted)["FP"], evaluate_mot(GT, shifted)["FN"]) == (10, 10)


@needs_trackeval
def test_ground_truth_marked_zero_is_ignored() -> None:
    gt = GT + [MotBox(3, 9, (400, 400, 430, 430), 0.0)]
    assert evaluate_mot(gt, GT)["FN"] == 0


@needs_trackeval
def test_format_metrics() -> None:
    line = format_metrics(evaluate_mot(GT, GT))
    assert line == "HOTA 100.0  DetA 100.0  AssA 100.0  MOTA 100.0  IDF1 100.0  IDSW 0  FP 0  FN 0  GT_IDs 2  IDs 2"


def test_without_trackeval_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trackeval", None)
    monkeypatch.setitem(sys.modules, "trackeval.metrics", None)
    with pytest.raises(MotFileError, match="pip install --no-deps trackeval tabulate"):
        evaluate_mot(GT, GT)
