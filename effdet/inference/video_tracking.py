"""Tracking through whole videos: detections (from a detector, or from ``effdet predict``'s JSON
lines) through :class:`~effdet.inference.tracking.Tracker`, and the outputs of each source.

Sources are found and every output checked against every input exactly as ``effdet predict``
does (:func:`effdet.inference.run.prepare_inference`); frames are read with
:mod:`effdet.inference.video`. Each video, camera or stream ``NAME`` gives, in the output folder:

* ``NAME.mp4``: the frames with each tracked box labelled ``id class score`` (one colour per id)
  and a trail through its last :data:`TRAIL_LENGTH` centres;
* ``NAME.txt``: MOTChallenge lines ``frame,id,x,y,w,h,score,-1,-1,-1`` (frames from 1, frame
  pixels, the tracker's box; :func:`effdet.inference.tracking.mot_line`);
* ``NAME.jsonl``: ``effdet predict``'s per-frame lines (:func:`effdet.inference.video.frame_record`)
  with ``track_id`` added to each detection (None: not part of a confirmed track in that frame).

All three are written to temporary names and renamed when the source ends.
"""

from __future__ import annotations

import itertools
import json
import math
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from effdet.fileio import ReadError, WriteError, atomic_path, atomic_write, check_output_spares_inputs, \
    read_text_bounded
from effdet.inference.draw import class_color, draw_detections
from effdet.inference.run import InferenceError, InferencePlan, _mark_output_folders, prepare_inference
from effdet.inference.tracking import Tracker, TrackerSettings, mot_line
from effdet.inference.video import (DEFAULT_FPS, Detect, VideoReadError, VideoSource, frame_record, open_capture,
                                    read_frames, video_codec)

TRAIL_LENGTH = 30
"""Centres drawn behind each track (frames)."""

MAX_DETECTION_LINES_BYTES = 1024**3
"""The largest ``--detections`` file read: 1 GiB (about a million frames of a few detections)."""


@dataclass
class TrackedVideo:
    """What :func:`track_source` did with one source."""

    label: str
    live: bool = False
    """A camera or stream (Ctrl-C ends it, keeping the outputs)."""
    frames: int = 0
    detections: int = 0
    """Detections read (of the ``classes`` kept)."""
    track_ids: set[int] = field(default_factory=set)
    failed_frames: list[int] = field(default_factory=list)
    video_path: Path | None = None
    mot_path: Path | None = None
    lines_path: Path | None = None
    fps: float = DEFAULT_FPS
    size: tuple[int, int] | None = None
    """(height, width) of the annotated video's frames, pixels (None: no video written)."""

    @property
    def tracks(self) -> int:
        return len(self.track_ids)


@dataclass
class TrackPlan:
    """Sources and outputs of a tracking run, checked (:func:`prepare_tracking`)."""

    inference: InferencePlan
    mot_files: list[Path]


@dataclass
class Record:
    """One frame's detections: the JSON line (``frame``, ``time``, ``detections``) and arrays of
    its detections for the tracker."""

    line: dict[str, Any]
    boxes: np.ndarray
    """(K, 4) ``xyxy`` frame pixels."""
    scores: np.ndarray
    category_ids: np.ndarray


def prepare_tracking(sources: Sequence[str | Path], output_dir: str | Path = "runs/track", draw: bool = True,
                     slice_size: int | None = None, slice_overlap: float = 0.2, max_tiles: int = 1024,
                     inputs: Iterable[tuple[str, str | Path | None]] = ()) -> TrackPlan:
    """Find the videos, cameras and streams of ``sources`` and check every output against every
    input (``inputs``: ``(flag, path)`` of the other input files: weights, ``--detections``,
    ``--gt``, the tracker YAML), before any model is loaded.

    Raises:
        InferenceError: no video source (images alone cannot be tracked), or an output that
            would replace an input; :class:`effdet.fileio.WriteError` for an unwritable folder.
    """
    inputs = list(inputs)
    plan = prepare_inference(sources, output_dir if draw else None, frames_dir=output_dir, slice_size=slice_size,
                             slice_overlap=slice_overlap, max_tiles=max_tiles, inputs=inputs)
    if not plan.videos:
        raise InferenceError(f"no video, camera or stream among {', '.join(map(str, sources))}: effdet track "
                             "follows objects through videos (use effdet predict for images)")
    if plan.paths:
        warnings.warn(f"{len(plan.paths)} image(s) among the sources are not tracked (only videos, cameras and "
                      "streams are)", stacklevel=2)
        plan.paths, plan.names, plan.pictures, plan.ids = [], [], [], []
    mot_files = [Path(output_dir) / name.with_suffix(".txt") for name in plan.video_names]
    read = [*inputs, *((f"source {v.path}", v.path) for v in plan.videos if v.path is not None)]
    for mot_file in mot_files:
        check_output_spares_inputs(mot_file, "--output: the MOT file", read)
    return TrackPlan(plan, mot_files)


def detector_records(detect: Detect, frames: Iterator[tuple[int, np.ndarray]], fps: float, live: bool,
                     category_ids: Sequence[int], class_names: Sequence[str] | None,
                     batch_size: int) -> Iterator[tuple[Record, np.ndarray]]:
    """(record, frame) per frame of ``frames``, detected in batches of ``batch_size``."""
    start = time.monotonic()
    while True:
        batch = list(itertools.islice(frames, batch_size))
        if not batch:
            return
        for (index, frame), det in zip(batch, detect([frame for _, frame in batch]), strict=True):
            seconds = time.monotonic() - start if live else index / fps
            yield parse_record(frame_record(index, seconds, det, category_ids, class_names)), frame


def read_detection_lines(path: str | Path) -> Iterator[Record]:
    """The per-frame JSON lines ``effdet predict`` wrote (:func:`effdet.inference.video.frame_record`),
    one :class:`Record` per line, frames in increasing order.

    Raises:
        InferenceError: the file cannot be read, or a line is not such a record (names the line).
    """
    path = Path(path)
    try:
        text = read_text_bounded(path, "--detections file", MAX_DETECTION_LINES_BYTES)
    except ReadError as error:
        raise InferenceError(f"{error}; give the NAME.jsonl that effdet predict wrote for the video") from None
    previous = -1
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = parse_record(json.loads(line))
        except (ValueError, TypeError, KeyError, RecursionError) as error:
            raise InferenceError(f"--detections {path} line {number} is not a frame record as effdet predict "
                                 f"writes them ({{\"frame\", \"time\", \"detections\": [{{\"bbox\", \"score\", "
                                 f"\"category_id\"}}]}}): {str(error)[:120]}") from None
        if record.line["frame"] <= previous:
            raise InferenceError(f"--detections {path} line {number}: frame {record.line['frame']} after frame "
                                 f"{previous}; frames must increase")
        previous = record.line["frame"]
        yield record


def parse_record(line: Any) -> Record:
    """A :class:`Record` of one JSON line; raises ``ValueError`` naming what is wrong."""
    if not isinstance(line, dict) or not isinstance(line.get("detections"), list):
        raise ValueError("not an object with a detections list")
    frame = line.get("frame")
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
        raise ValueError(f"frame must be an index from 0, got {frame!r}")
    boxes, scores, categories = [], [], []
    for det in line["detections"]:
        x, y, w, h = (float(v) for v in det["bbox"])
        score, category = float(det["score"]), det["category_id"]
        if not all(math.isfinite(v) for v in (x, y, w, h, score)) or w < 0 or h < 0:
            raise ValueError(f"bbox {det['bbox']} score {det['score']}: finite numbers, width and height >= 0")
        if isinstance(category, bool) or not isinstance(category, int):
            raise ValueError(f"category_id must be a whole number, got {category!r}")
        boxes.append((x, y, x + w, y + h))
        scores.append(score)
        categories.append(category)
    return Record(line, np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(scores, dtype=np.float64),
                  np.array(categories, dtype=np.int64))


def track_records(records: Iterable[tuple[Record, np.ndarray | None]], tracker: Tracker,
                  classes: Collection[int | str] | None = None) -> Iterator[tuple[Record, np.ndarray | None, list]]:
    """Run ``tracker`` over the records (one ``update`` per frame index, an empty one for each
    frame the records skip); yields (record with ``track_id`` on its detections and only the
    ``classes`` kept, frame, tracks). ``classes``: category ids or class names to keep (None: all)."""
    for record, frame in records:
        while tracker.frame < record.line["frame"]:  # frames that could not be decoded: nothing detected
            tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))
        detections = record.line["detections"]
        keep = np.arange(len(detections))
        if classes is not None:
            keep = np.array([i for i, d in enumerate(detections)
                             if d["category_id"] in classes or d.get("class_name") in classes], dtype=np.int64)
        tracks = tracker.update(record.boxes[keep], record.scores[keep], record.category_ids[keep])
        ids = {int(keep[t.detection]): t.track_id for t in tracks}
        line = dict(record.line, detections=[dict(detections[i], track_id=ids.get(int(i))) for i in keep])
        yield Record(line, record.boxes[keep], record.scores[keep], record.category_ids[keep]), frame, tracks


def draw_tracks(frame: np.ndarray, record: Record, tracks: Sequence[Any], trails: dict[int, deque]) -> np.ndarray:
    """``frame`` (H x W x 3 uint8 RGB) with each track's box labelled ``id class score`` and its
    trail (``trails``: track id -> recent centres, updated here), in one colour per track id."""
    names = {d["category_id"]: d.get("class_name") for d in record.line["detections"]}
    for track in tracks:
        x1, y1, x2, y2 = track.box
        trails.setdefault(track.track_id, deque(maxlen=TRAIL_LENGTH)).append((int((x1 + x2) / 2), int((y1 + y2) / 2)))
    for track_id in set(trails) - {t.track_id for t in tracks}:
        trails[track_id].popleft()  # an unseen track's trail fades, one point per frame
        if not trails[track_id]:
            del trails[track_id]
    out = frame.copy()
    thickness = max(1, round(math.sqrt(frame.shape[0] * frame.shape[1]) / 320))
    for track in tracks:
        points = np.array(trails[track.track_id], dtype=np.int32)
        if len(points) > 1:
            cv2.polylines(out, [points], False, class_color(track.track_id), thickness, cv2.LINE_AA)
    # labels are the track ids, so that a track keeps its colour (class_color(id), as its trail)
    texts = [""] * (max((t.track_id for t in tracks), default=0) + 1)
    for t in tracks:
        texts[t.track_id] = f"{t.track_id} {names.get(t.label) or t.label}"
    return draw_detections(out, np.array([t.box for t in tracks]).reshape(-1, 4), [t.track_id for t in tracks],
                           [t.score for t in tracks], texts)


def track_source(records: Iterable[tuple[Record, np.ndarray | None]], tracker: Tracker, result: TrackedVideo,
                 size: tuple[int, int] | None, classes: Collection[int | str] | None = None,
                 max_frames: int | None = None, bar: tqdm | None = None) -> TrackedVideo:
    """Track ``records`` and write ``result``'s outputs (its ``video_path`` only when ``size``,
    (height, width), is given and frames come with the records; ``mot_path``, ``lines_path``)."""
    mot_lines: list[str] = []
    trails: dict[int, deque] = {}
    result.size = size if result.video_path is not None else None
    with atomic_write(result.lines_path, "w", encoding="utf-8") as lines:
        if result.video_path is None or size is None:
            _write(track_records(itertools.islice(records, max_frames), tracker, classes), None, lines, mot_lines,
                   trails, result, bar)
        else:
            fourcc = video_codec()[0]
            with atomic_path(result.video_path, suffix=result.video_path.suffix) as temporary:
                writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*fourcc), result.fps,
                                         (size[1], size[0]))
                if not writer.isOpened():
                    raise WriteError(f"could not write video {result.video_path}: OpenCV's {fourcc} writer did not "
                                     "open; choose another --output folder, or use --no-images")
                try:
                    _write(track_records(itertools.islice(records, max_frames), tracker, classes), writer, lines,
                           mot_lines, trails, result, bar)
                finally:
                    writer.release()
    with atomic_write(result.mot_path, "w", encoding="utf-8") as f:
        f.write("".join(mot_lines))
    return result


def _write(tracked: Iterator[tuple[Record, np.ndarray | None, list]], writer: cv2.VideoWriter | None, lines: Any,
           mot_lines: list[str], trails: dict[int, deque], result: TrackedVideo, bar: tqdm | None) -> None:
    try:
        for record, frame, tracks in tracked:
            _write_frame(record, frame, tracks, writer, lines, mot_lines, trails, result)
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:  # how a camera or stream run is stopped: keep what was written
        if not result.live:
            raise
        warnings.warn(f"{result.label}: stopped by Ctrl-C after {result.frames} frames", stacklevel=2)


def _write_frame(record: Record, frame: np.ndarray | None, tracks: list, writer: cv2.VideoWriter | None, lines: Any,
                 mot_lines: list[str], trails: dict[int, deque], result: TrackedVideo) -> None:
    """Append one frame's JSON line, MOT lines and annotated picture."""
    lines.write(json.dumps(record.line) + "\n")
    number = record.line["frame"] + 1
    mot_lines.extend(mot_line(number, t.track_id, t.box, t.score) for t in tracks)
    result.track_ids.update(t.track_id for t in tracks)
    result.frames += 1
    result.detections += len(record.line["detections"])
    if writer is not None and frame is not None and result.size is not None:
        drawn = draw_tracks(frame, record, tracks, trails)
        if drawn.shape[:2] != result.size:  # a stream that changed resolution
            drawn = cv2.resize(drawn, (result.size[1], result.size[0]), interpolation=cv2.INTER_AREA)
        writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))


def _with_frames(records: Iterator[Record], frames: Iterator[tuple[int, np.ndarray]] | None
                 ) -> Iterator[tuple[Record, np.ndarray | None]]:
    """Pair file records with the video's frames by frame index (a frame without a record has no
    detections; a record without a frame is tracked but not drawn)."""
    if frames is None:
        yield from ((record, None) for record in records)
        return
    pending = next(frames, None)
    for record in records:
        while pending is not None and pending[0] < record.line["frame"]:
            index, frame = pending
            yield parse_record({"frame": index, "time": None, "detections": []}), frame
            pending = next(frames, None)
        if pending is not None and pending[0] == record.line["frame"]:
            yield record, pending[1]
            pending = next(frames, None)
        else:
            yield record, None


def track(detector: Any, sources: Sequence[str | Path], output_dir: str | Path = "runs/track",
          settings: TrackerSettings = TrackerSettings(), detections: str | Path | None = None,
          classes: Collection[int | str] | None = None, draw: bool = True, max_frames: int | None = None,
          progress: bool = True) -> list[TrackedVideo]:
    """Track objects through whole videos, cameras and streams (the Python side of ``effdet track``).

    Example::

        from effdet.config import PostprocessSettings
        from effdet.inference import track
        from effdet.inference.run import load_predictor

        predictor = load_predictor("runs/train/best.pt", settings=PostprocessSettings(score_threshold=0.1))
        for video in track(predictor, ["clip.mp4"], "runs/track"):
            print(video.label, video.tracks, video.mot_path)

    Args:
        detector: a :class:`~effdet.inference.predictor.Predictor` (its category ids and class
            names go into the JSON lines; keep its score threshold at or below the tracker's
            ``low_threshold``), or None with ``detections``.
        sources: video files, folders, glob patterns, camera indices, stream URLs (as
            :func:`effdet.inference.run.prepare_inference` finds them; images are not tracked).
        output_dir: each source's ``NAME.mp4`` (with ``draw``), ``NAME.txt`` and ``NAME.jsonl``.
        settings, detections, classes, max_frames: see :func:`run_tracking`.

    Returns:
        One :class:`TrackedVideo` per source read. Raises :class:`InferenceError` (no video,
        an output that would replace an input, nothing readable) or
        :class:`effdet.fileio.WriteError`.
    """
    plan = prepare_tracking(sources, output_dir, draw, inputs=[("--detections", detections)])
    categories, names = (), None
    if detector is not None:
        categories = detector.category_ids or list(range(detector.config.num_classes))
        names = detector.class_names
    return run_tracking(detector, plan, settings, categories, names, detections, classes, detector.batch_size
                        if detector is not None else 8, max_frames, progress)


def run_tracking(detect: Detect | None, plan: TrackPlan, settings: TrackerSettings = TrackerSettings(),
          category_ids: Sequence[int] = (), class_names: Sequence[str] | None = None,
          detections: str | Path | None = None, classes: Collection[int | str] | None = None, batch_size: int = 8,
          max_frames: int | None = None, progress: bool = True,
          on_video: Callable[[TrackedVideo], None] | None = None) -> list[TrackedVideo]:
    """Track objects through every video, camera and stream of ``plan`` (:func:`prepare_tracking`).

    Args:
        detect: list of H x W x 3 uint8 RGB frames -> list of dicts with ``boxes`` (K, 4) xyxy
            frame pixels, ``scores`` (K,), ``labels`` (K,) class indices (a
            :class:`~effdet.inference.predictor.Predictor` or a sliced detector); None with
            ``detections``.
        settings: the tracker's; a fresh :class:`Tracker` per source.
        category_ids: class index -> category id, as in the JSON lines (required with ``detect``).
        class_names: name per class index.
        detections: re-track this ``effdet predict`` JSON lines file (:func:`read_detection_lines`)
            instead of detecting; the plan must hold one video, whose frames are drawn when the
            plan writes videos.
        classes: track only these category ids or class names.
        max_frames: at most this many frames per source.
        on_video: called with each source's result when it is done.

    Returns:
        One :class:`TrackedVideo` per source that could be read; unreadable sources are skipped
        with a warning. Raises :class:`InferenceError` when none could be read.
    """
    inference = plan.inference
    if detections is not None and len(inference.videos) != 1:
        raise InferenceError(f"--detections re-tracks one video: give that one video as the source, got "
                             f"{len(inference.videos)} sources")
    _mark_output_folders({inference.frames_dir} - {None})
    results, skipped = [], []
    for video, name, lines_path, mot_path in zip(inference.videos, inference.video_names, inference.frame_files,
                                                 plan.mot_files):
        draw = inference.output_dir is not None
        result = TrackedVideo(video.label, video.live, video_path=inference.output_dir / name if draw else None,
                              mot_path=mot_path, lines_path=lines_path)
        try:
            results.append(_track_one(detect, video, result, settings, category_ids or None, class_names, detections,
                                      classes, batch_size, max_frames, progress, draw))
        except VideoReadError as error:
            warnings.warn(f"skipped: {error}", stacklevel=2)
            skipped.append(str(error))
            continue
        if on_video is not None:
            on_video(results[-1])
    if not results:
        raise InferenceError(f"nothing could be read: {len(skipped)} source(s) skipped as unreadable (see the "
                             "warnings). Check the sources (files, camera index, stream URL)")
    return results


def _track_one(detect: Detect | None, video: VideoSource, result: TrackedVideo, settings: TrackerSettings,
               category_ids: Sequence[int] | None, class_names: Sequence[str] | None, detections: str | Path | None,
               classes: Collection[int | str] | None, batch_size: int, max_frames: int | None, progress: bool,
               draw: bool) -> TrackedVideo:
    tracker = Tracker(settings)
    bar = tqdm(total=max_frames, desc=Path(video.label).name, unit="frame", disable=not progress)
    if detections is not None and not draw:  # the tracker alone: the video is not decoded
        with bar:
            return track_source(_with_frames(read_detection_lines(detections), None), tracker, result, None, classes,
                                max_frames, bar)
    capture = open_capture(video)
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        total = count if count > 0 and not video.live else None
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        result.fps = fps if math.isfinite(fps) and 0 < fps <= 1000 else DEFAULT_FPS
        frames = read_frames(capture, video, total, result.failed_frames)
        first = next(frames, None)
        if first is None:
            raise VideoReadError(f"cannot read video {video.label}: no frame could be decoded")
        frames = itertools.chain([first], frames)
        if detections is not None:
            records = _with_frames(read_detection_lines(detections), frames)
        else:
            if detect is None or not category_ids:
                raise ValueError("track: give a detector and its category ids, or a detections file")
            records = detector_records(detect, frames, result.fps, video.live, category_ids, class_names, batch_size)
        limits = [x for x in (total, max_frames) if x]
        bar.total = min(limits) if limits else None
        with bar:
            return track_source(records, tracker, result, first[1].shape[:2] if draw else None, classes, max_frames,
                                bar)
    finally:
        capture.release()


__all__ = ["MAX_DETECTION_LINES_BYTES", "Record", "TRAIL_LENGTH", "TrackPlan", "TrackedVideo", "detector_records",
           "draw_tracks", "parse_record", "prepare_tracking", "read_detection_lines", "run_tracking", "track",
           "track_records", "track_source"]
