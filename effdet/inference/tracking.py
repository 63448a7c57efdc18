"""ByteTrack: identities across video frames from per-frame detections (NumPy and SciPy only).

:class:`Tracker` follows Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every
Detection Box" (ECCV 2022) and the reference implementation's defaults:

* every track carries a constant-velocity Kalman filter over (centre x, centre y, aspect w/h,
  height) (:class:`KalmanBoxFilter`), predicted one step per frame;
* detections scoring at least ``high_threshold`` are matched first, to every track (also those
  lost in recent frames), by IoU (times the detection's score) with
  ``scipy.optimize.linear_sum_assignment``; detections between ``low_threshold`` and
  ``high_threshold`` are then matched to the tracks still unmatched, which recovers occluded,
  low-scored objects without starting tracks on them;
* an unmatched high detection scoring at least ``new_track_threshold`` starts a tentative track,
  confirmed (and given the next id, 1, 2, ...) when it is matched in the next frame; tracks of the
  first frame are confirmed at once;
* a track unmatched for more than ``track_buffer`` frames is dropped; until then it can be found
  again under the same id (short occlusions).

Association is class-agnostic, as in ByteTrack and Ultralytics: a track takes the class of the
detection it was last matched to. Boxes are absolute-pixel ``xyxy`` throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from effdet.config import ConfigError


class TrackerSettingsError(ConfigError):
    """A tracker setting out of its range, or an unknown one; names the setting (``field``)."""


def _require(ok: bool, name: str, reason: str, value: Any) -> None:
    if not ok:
        raise TrackerSettingsError(f"tracker setting {name} {reason}, got {value!r}", field=name, reason=reason)


@dataclass(frozen=True)
class TrackerSettings:
    """ByteTrack's settings (defaults: the reference implementation's, for 30 fps video).

    Attributes:
        high_threshold: detections scoring at least this are matched first and may start tracks.
        low_threshold: detections below this are ignored; those between the two thresholds
            only continue existing tracks (the second association).
        new_track_threshold: an unmatched detection needs this score to start a track.
        match_iou: the least IoU (times the detection score with ``fuse_score``) for a match in
            the first association; the second association needs IoU 0.5, a tentative track 0.3.
        track_buffer: frames a lost track is kept (and can be found again under its id).
        min_box_area: tracks whose box is smaller than this (pixels^2) are not reported.
        fuse_score: weigh the first association's IoU by the detection score.
    """

    high_threshold: float = 0.5
    low_threshold: float = 0.1
    new_track_threshold: float = 0.6
    match_iou: float = 0.2
    track_buffer: int = 30
    min_box_area: float = 10.0
    fuse_score: bool = True

    def __post_init__(self) -> None:
        for name in ("high_threshold", "low_threshold", "new_track_threshold", "match_iou"):
            value = getattr(self, name)
            _require(isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0, name,
                     "must be in [0, 1]", value)
        _require(self.low_threshold <= self.high_threshold, "low_threshold",
                 f"must not exceed high_threshold ({self.high_threshold})", self.low_threshold)
        _require(isinstance(self.track_buffer, int) and not isinstance(self.track_buffer, bool)
                 and self.track_buffer >= 0, "track_buffer", "must be a whole number of frames >= 0", self.track_buffer)
        _require(isinstance(self.min_box_area, (int, float)) and not isinstance(self.min_box_area, bool)
                 and self.min_box_area >= 0, "min_box_area", "must be >= 0 (pixels^2)", self.min_box_area)
        _require(isinstance(self.fuse_score, bool), "fuse_score", "must be true or false", self.fuse_score)

    @classmethod
    def from_mapping(cls, values: dict[str, Any], where: str = "tracker settings") -> TrackerSettings:
        """Settings from a mapping such as a parsed YAML file; unknown keys are refused (naming
        ``where`` and the known keys), missing keys keep their defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrackerSettingsError(f"{where}: unknown tracker setting(s) {', '.join(map(str, unknown))}; "
                                       f"known: {', '.join(sorted(known))}")
        try:
            return cls(**values)
        except TrackerSettingsError as error:
            raise TrackerSettingsError(f"{where}: {error}", error.field, error.reason) from None


class KalmanBoxFilter:
    """Constant-velocity Kalman filter over ``(cx, cy, a, h, vcx, vcy, va, vh)``: box centre,
    aspect ratio w/h and height (pixels), and their change per frame; noise scales with the
    height (ByteTrack's ``KalmanFilter``, weights 1/20 for position and 1/160 for velocity)."""

    std_position = 1.0 / 20
    std_velocity = 1.0 / 160

    def __init__(self) -> None:
        self.motion = np.eye(8)
        self.motion[:4, 4:] = np.eye(4)
        self.observe = np.eye(4, 8)

    def initiate(self, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean (8,), covariance (8, 8)) of a new track from one ``(cx, cy, a, h)`` measurement."""
        h = measurement[3]
        std = np.array([2 * self.std_position * h, 2 * self.std_position * h, 1e-2, 2 * self.std_position * h,
                        10 * self.std_velocity * h, 10 * self.std_velocity * h, 1e-5, 10 * self.std_velocity * h])
        return np.r_[measurement, np.zeros(4)], np.diag(std**2)

    def predict(self, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame ahead for N tracks at once: ``mean`` (N, 8), ``covariance`` (N, 8, 8)."""
        h = mean[:, 3]
        std = np.stack([self.std_position * h, self.std_position * h, np.full_like(h, 1e-2), self.std_position * h,
                        self.std_velocity * h, self.std_velocity * h, np.full_like(h, 1e-5),
                        self.std_velocity * h], axis=1)
        noise = np.einsum("ni,ij->nij", std**2, np.eye(8))
        return mean @ self.motion.T, self.motion @ covariance @ self.motion.T + noise

    def update(self, mean: np.ndarray, covariance: np.ndarray,
               measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Correct one track's (8,) mean and (8, 8) covariance with a ``(cx, cy, a, h)`` measurement."""
        h = mean[3]
        std = np.array([self.std_position * h, self.std_position * h, 1e-1, self.std_position * h])
        projected = self.observe @ mean
        projected_cov = self.observe @ covariance @ self.observe.T + np.diag(std**2)
        gain = np.linalg.solve(projected_cov, self.observe @ covariance).T
        return mean + gain @ (measurement - projected), covariance - gain @ projected_cov @ gain.T


def xyxy_to_xyah(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) ``xyxy`` -> (N, 4) ``(cx, cy, w / h, h)`` (height at least 1e-6 px)."""
    w, h = boxes[:, 2] - boxes[:, 0], np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)
    return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w / h, h], axis=1)


def xyah_to_xyxy(states: np.ndarray) -> np.ndarray:
    """(N, >=4) Kalman states ``(cx, cy, a, h, ...)`` -> (N, 4) ``xyxy``."""
    w, h = states[:, 2] * states[:, 3], states[:, 3]
    return np.stack([states[:, 0] - w / 2, states[:, 1] - h / 2, states[:, 0] + w / 2, states[:, 1] + h / 2], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of (N, 4) and (M, 4) ``xyxy`` boxes (0 where a union is empty)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def associate(similarity: np.ndarray, min_similarity: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Optimal one-to-one matching of rows (tracks) to columns (detections) maximising the total
    ``similarity`` (N, M), keeping pairs with similarity at least ``min_similarity``.

    Returns (matched (row, column) pairs, unmatched rows, unmatched columns), each sorted."""
    rows, cols = range(similarity.shape[0]), range(similarity.shape[1])
    if similarity.size == 0:
        return [], list(rows), list(cols)
    # pairs below the threshold are forbidden, so that they cannot pull the assignment elsewhere
    cost = np.where(similarity >= min_similarity, 1.0 - similarity, 1e6)
    picked = [(int(r), int(c)) for r, c in zip(*linear_sum_assignment(cost)) if cost[r, c] < 1e6]
    matched_rows, matched_cols = {r for r, _ in picked}, {c for _, c in picked}
    return sorted(picked), [r for r in rows if r not in matched_rows], [c for c in cols if c not in matched_cols]


@dataclass(frozen=True)
class Track:
    """One tracked object in one frame."""

    track_id: int
    """1, 2, ... in the order tracks were confirmed; kept through short occlusions."""
    box: np.ndarray
    """(4,) ``xyxy`` pixels: the Kalman filter's estimate after this frame's detection."""
    score: float
    """The matched detection's score."""
    label: int
    """The matched detection's class index."""
    detection: int
    """Index of the matched detection in this frame's ``update`` input."""


@dataclass(eq=False)
class _State:
    mean: np.ndarray
    covariance: np.ndarray
    score: float
    label: int
    first_frame: int
    last_frame: int
    track_id: int = 0  # 0: tentative (not confirmed yet)
    lost: bool = False
    detection: int = -1


@dataclass
class Tracker:
    """ByteTrack over the frames of one video (module docstring); one instance per video.

    Usage with a :class:`~effdet.inference.predictor.Predictor`::

        tracker = Tracker(TrackerSettings(track_buffer=60))
        for frame in frames:
            det = predictor([frame])[0]
            for track in tracker.update(det["boxes"], det["scores"], det["labels"]):
                print(track.track_id, track.box, track.label)
    """

    settings: TrackerSettings = field(default_factory=TrackerSettings)
    frame: int = 0
    """Frames seen (``update`` calls)."""
    _tracks: list[_State] = field(default_factory=list)
    _next_id: int = 1
    _kalman: KalmanBoxFilter = field(default_factory=KalmanBoxFilter)

    def update(self, boxes: Any, scores: Any, labels: Any) -> list[Track]:
        """Advance one frame with its detections; returns the confirmed tracks matched in it.

        Args:
            boxes: (K, 4) ``xyxy`` pixels (NumPy array, CPU tensor or nested sequence).
            scores: (K,) detection scores in [0, 1].
            labels: (K,) class indices.

        Returns:
            One :class:`Track` per confirmed track that a detection continued in this frame and
            whose box is at least ``min_box_area``, sorted by ``track_id``. Lost tracks are not
            reported (they are kept for up to ``track_buffer`` frames).

        Raises:
            ValueError: the three inputs disagree in length, or boxes are not (K, 4).
        """
        s = self.settings
        boxes, scores, labels = _as_arrays(boxes, scores, labels)
        self.frame += 1
        first_frame = self.frame == 1
        if self._tracks:
            means, covariances = self._kalman.predict(np.stack([t.mean for t in self._tracks]),
                                                      np.stack([t.covariance for t in self._tracks]))
            for track, mean, covariance in zip(self._tracks, means, covariances):
                track.mean, track.covariance, track.detection = mean, covariance, -1
                if track.lost:  # as ByteTrack: a lost box does not keep growing or shrinking
                    track.mean[7] = 0.0
        high = np.flatnonzero(scores >= s.high_threshold)
        low = np.flatnonzero((scores >= s.low_threshold) & (scores < s.high_threshold))
        confirmed = [t for t in self._tracks if t.track_id]
        tentative = [t for t in self._tracks if not t.track_id]

        # 1: confirmed tracks (also lost ones) with the high detections
        similarity = box_iou(self._boxes(confirmed), boxes[high])
        if s.fuse_score:
            similarity = similarity * scores[high][None, :]
        pairs, left_tracks, left_high = associate(similarity, s.match_iou)
        self._match(confirmed, high, pairs, boxes, scores, labels)
        # 2: the confirmed tracks seen in the previous frame, still unmatched, with the low detections
        remaining = [confirmed[i] for i in left_tracks if not confirmed[i].lost]
        pairs, left_tracks, _ = associate(box_iou(self._boxes(remaining), boxes[low]), 0.5)
        self._match(remaining, low, pairs, boxes, scores, labels)
        for i in left_tracks:
            remaining[i].lost = True
        # 3: tentative tracks (one frame old) with the high detections left; unmatched ones end
        high = high[left_high]
        pairs, _, left_high = associate(box_iou(self._boxes(tentative), boxes[high]) * scores[high][None, :]
                                        if s.fuse_score else box_iou(self._boxes(tentative), boxes[high]), 0.3)
        self._match(tentative, high, pairs, boxes, scores, labels)
        for track in tentative:
            if track.last_frame == self.frame:
                track.track_id, self._next_id = self._next_id, self._next_id + 1
        self._tracks = [t for t in self._tracks if t.track_id or t.last_frame == self.frame]
        # 4: new tracks from confident unmatched detections
        for d in high[left_high]:
            if scores[d] >= s.new_track_threshold:
                mean, covariance = self._kalman.initiate(xyxy_to_xyah(boxes[d : d + 1])[0])
                track = _State(mean, covariance, float(scores[d]), int(labels[d]), self.frame, self.frame,
                               detection=int(d))
                if first_frame:
                    track.track_id, self._next_id = self._next_id, self._next_id + 1
                self._tracks.append(track)
        # 5: forget tracks lost for longer than the buffer
        self._tracks = [t for t in self._tracks if self.frame - t.last_frame <= s.track_buffer]
        return self._report()

    @property
    def active_tracks(self) -> int:
        """Confirmed tracks kept (seen in the last frame or lost within ``track_buffer`` frames)."""
        return sum(1 for t in self._tracks if t.track_id)

    def _boxes(self, tracks: Sequence[_State]) -> np.ndarray:
        return xyah_to_xyxy(np.stack([t.mean for t in tracks])) if tracks else np.zeros((0, 4))

    def _match(self, tracks: Sequence[_State], detections: np.ndarray, pairs: list[tuple[int, int]],
               boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> None:
        for t, d in pairs:
            track, index = tracks[t], int(detections[d])
            track.mean, track.covariance = self._kalman.update(track.mean, track.covariance,
                                                               xyxy_to_xyah(boxes[index : index + 1])[0])
            track.score, track.label, track.last_frame, track.lost = float(scores[index]), int(labels[index]), \
                self.frame, False
            track.detection = index

    def _report(self) -> list[Track]:
        out = []
        for t in self._tracks:
            if not t.track_id or t.last_frame != self.frame:
                continue
            box = xyah_to_xyxy(t.mean[None])[0]
            if (box[2] - box[0]) * (box[3] - box[1]) >= self.settings.min_box_area:
                out.append(Track(t.track_id, box, t.score, t.label, t.detection))
        return sorted(out, key=lambda track: track.track_id)


def mot_line(frame: int, track_id: int, box: Sequence[float], score: float) -> str:
    """One MOTChallenge line ``frame,id,x,y,w,h,score,-1,-1,-1`` (with its newline) of an
    ``xyxy`` box in frame pixels; ``frame`` counts from 1."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return f"{frame},{track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{score:.4f},-1,-1,-1\n"


def _as_arrays(boxes: Any, scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(f"Tracker.update: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels; "
                         "give one score and one label per box")
    return boxes, scores, labels


__all__ = ["KalmanBoxFilter", "Track", "Tracker", "TrackerSettings", "TrackerSettingsError", "associate", "box_iou", "mot_line",
           "xyah_to_xyxy", "xyxy_to_xyah"]
