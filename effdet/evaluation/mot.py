"""Multi-object tracking metrics: HOTA, MOTA, IDF1 and their counts, by TrackEval.

Tracks and ground truth are read from MOTChallenge text files (:func:`read_mot_file`: one line
per box, ``frame,id,x,y,w,h,score,...``, frames numbered from 1, boxes in frame pixels) and
scored with TrackEval's own metric classes (``trackeval.metrics.HOTA``, ``CLEAR``, ``Identity``),
fed in memory with the IoU of every ground-truth box with every tracked box of each frame
(:func:`evaluate_mot`). The metrics are TrackEval's, the reference implementation of HOTA; the
MOTChallenge preprocessing (distractor classes, crowd regions) does not apply to these files, so
every ground-truth line counts unless its ``conf`` column (7th) is 0.

TrackEval's wheel lists ``opencv-python`` among its requirements, which would install a second
OpenCV beside this project's ``opencv-python-headless``; the metrics need none of it, so it is
installed without its requirements: ``pip install --no-deps trackeval`` (its other needs:
NumPy 2, SciPy, matplotlib, pycocotools, tabulate; all but tabulate come with this project).
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from effdet.fileio import ReadError, read_text_bounded
from effdet.inference.tracking import box_iou

MOT_COLUMNS = ("frame", "id", "x", "y", "w", "h", "score")
"""The columns read (more may follow: MOTChallenge's class, visibility, or -1, -1, -1)."""

INSTALL_HINT = "pip install --no-deps trackeval tabulate"


class MotFileError(ValueError):
    """A MOTChallenge file that cannot be read, or TrackEval missing; names the file and line."""


@dataclass(frozen=True)
class MotBox:
    """One line of a MOTChallenge file."""

    frame: int
    """1, 2, ... (the video's first frame is 1)."""
    track_id: int
    box: tuple[float, float, float, float]
    """``xyxy`` frame pixels (the file holds x, y, w, h)."""
    score: float
    """7th column: the score of a track, 1 (count) or 0 (ignore) in ground truth."""


def read_mot_file(path: str | Path, what: str = "MOT file") -> list[MotBox]:
    """Every line of a MOTChallenge file (``frame,id,x,y,w,h,score[,...]``, commas or spaces).

    Raises:
        MotFileError: missing, not text, or a line with fewer than 7 numbers, a non-integer or
            non-positive frame or id, non-finite values or a negative width or height; the
            message names ``what``, the file and the line number.
    """
    path = Path(path)
    try:
        text = read_text_bounded(path, what)
    except ReadError as error:
        raise MotFileError(str(error)) from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields[:7]]
        except ValueError:
            values = []
        if len(values) < 7 or not all(math.isfinite(v) for v in values):
            raise MotFileError(f"{what} {path} line {number}: expected at least 7 numbers "
                               f"frame,id,x,y,w,h,score, got {line.strip()[:80]!r}")
        frame, track_id, x, y, w, h, score = values
        if frame != int(frame) or frame < 1 or track_id != int(track_id) or track_id < 0:
            raise MotFileError(f"{what} {path} line {number}: frame must be a whole number from 1 and id a "
                               f"whole number from 0, got frame {fields[0]} id {fields[1]}")
        if w < 0 or h < 0:
            raise MotFileError(f"{what} {path} line {number}: negative box width or height ({w:g}, {h:g})")
        out.append(MotBox(int(frame), int(track_id), (x, y, x + w, y + h), score))
    return out


def _trackeval_metrics() -> Any:
    try:
        import trackeval.metrics  # noqa: PLC0415 (optional dependency)
    except ImportError:
        raise MotFileError(f"tracking metrics need TrackEval: {INSTALL_HINT} (without its opencv-python "
                           "requirement, which would clash with opencv-python-headless)") from None
    return trackeval.metrics


def sequence_data(ground_truth: Iterable[MotBox], tracks: Iterable[MotBox],
                  num_frames: int | None = None) -> dict[str, Any]:
    """TrackEval's per-sequence input: ids renumbered 0..n-1, IoU similarity per frame.

    ``num_frames``: the sequence length (default: the last frame either file mentions).
    Ground-truth lines with score 0 are left out (MOTChallenge: not to be counted)."""
    gt = [b for b in ground_truth if b.score != 0]
    tr = list(tracks)
    frames = num_frames or max([b.frame for b in gt + tr], default=0)
    gt_ids = {i: n for n, i in enumerate(sorted({b.track_id for b in gt}))}
    tr_ids = {i: n for n, i in enumerate(sorted({b.track_id for b in tr}))}
    per_gt: list[list[MotBox]] = [[] for _ in range(frames)]
    per_tr: list[list[MotBox]] = [[] for _ in range(frames)]
    for b in gt:
        if b.frame <= frames:
            per_gt[b.frame - 1].append(b)
    for b in tr:
        if b.frame <= frames:
            per_tr[b.frame - 1].append(b)
    data: dict[str, Any] = {"num_timesteps": frames, "gt_ids": [], "tracker_ids": [], "similarity_scores": [],
                            "num_gt_ids": len(gt_ids), "num_tracker_ids": len(tr_ids),
                            "num_gt_dets": sum(map(len, per_gt)), "num_tracker_dets": sum(map(len, per_tr))}
    for g, t in zip(per_gt, per_tr):
        data["gt_ids"].append(np.array([gt_ids[b.track_id] for b in g], dtype=int))
        data["tracker_ids"].append(np.array([tr_ids[b.track_id] for b in t], dtype=int))
        data["similarity_scores"].append(box_iou(np.array([b.box for b in g]).reshape(-1, 4),
                                              np.array([b.box for b in t]).reshape(-1, 4)))
    return data


def evaluate_mot(ground_truth: Iterable[MotBox], tracks: Iterable[MotBox],
                 num_frames: int | None = None) -> dict[str, float]:
    """HOTA, MOTA and IDF1 of ``tracks`` against ``ground_truth`` (one sequence), by TrackEval.

    Returns a dict: ``HOTA``, ``DetA``, ``AssA``, ``LocA`` (averaged over TrackEval's IoU
    thresholds 0.05..0.95), ``MOTA``, ``MOTP``, ``IDF1``, ``IDP``, ``IDR`` (fractions, not
    percent), and the counts ``IDSW``, ``FP``, ``FN`` (misses), ``MT``, ``ML``, ``Frag``,
    ``GT_IDs``, ``IDs`` (track ids), ``GT_Dets``, ``Dets``; CLEAR and Identity match at IoU 0.5.

    Raises:
        MotFileError: TrackEval is not installed (with the command that installs it).
    """
    metrics = _trackeval_metrics()
    data = sequence_data(ground_truth, tracks, num_frames)
    with contextlib.redirect_stdout(io.StringIO()):  # TrackEval prints its configuration
        hota = metrics.HOTA().eval_sequence(data)
        clear = metrics.CLEAR({"THRESHOLD": 0.5, "PRINT_CONFIG": False}).eval_sequence(data)
        identity = metrics.Identity({"THRESHOLD": 0.5, "PRINT_CONFIG": False}).eval_sequence(data)
    return {"HOTA": float(np.mean(hota["HOTA"])), "DetA": float(np.mean(hota["DetA"])),
            "AssA": float(np.mean(hota["AssA"])), "LocA": float(np.mean(hota["LocA"])),
            "MOTA": float(clear["MOTA"]), "MOTP": float(clear["MOTP"]), "IDF1": float(identity["IDF1"]),
            "IDP": float(identity["IDP"]), "IDR": float(identity["IDR"]), "IDSW": int(clear["IDSW"]),
            "FP": int(clear["CLR_FP"]), "FN": int(clear["CLR_FN"]), "MT": int(clear["MT"]), "ML": int(clear["ML"]),
            "Frag": int(clear["Frag"]), "GT_IDs": data["num_gt_ids"], "IDs": data["num_tracker_ids"],
            "GT_Dets": data["num_gt_dets"], "Dets": data["num_tracker_dets"]}


def format_metrics(metrics: Mapping[str, float]) -> str:
    """One line: ``HOTA 71.2  MOTA 80.1  IDF1 77.5  IDSW 3  FP 10  FN 50 ...`` (percent for the ratios)."""
    ratios = ("HOTA", "DetA", "AssA", "MOTA", "IDF1")
    counts = ("IDSW", "FP", "FN", "GT_IDs", "IDs")
    return "  ".join([f"{k} {100 * metrics[k]:.1f}" for k in ratios] + [f"{k} {int(metrics[k])}" for k in counts])


__all__ = ["INSTALL_HINT", "MOT_COLUMNS", "MotBox", "MotFileError", "evaluate_mot", "format_metrics",
           "read_mot_file", "sequence_data"]
