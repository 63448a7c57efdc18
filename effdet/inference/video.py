"""Detection on videos, cameras and network streams: frames in, an annotated video and per-frame
JSON lines out.

Sources are told apart by their spelling (:func:`split_sources`): a file whose suffix is in
:data:`VIDEO_EXTENSIONS` (also inside folders and glob matches) is a video; a plain non-negative
integer that names no file is a camera index (``0``); a URL (``rtsp://``, ``http(s)://``,
``rtmp://``, ``udp://``, ``tcp://``) is a network stream. Frames are read with OpenCV, detected
in batches by any ``detect(list of H x W x 3 uint8 RGB arrays) -> list of detection dicts`` (a
:class:`effdet.inference.predictor.Predictor`, or sliced inference), drawn with
:func:`effdet.inference.draw.draw_detections` and written at the source's frame rate and size.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from effdet.data.images import expand_glob, glob_base, in_output_folder
from effdet.data.results import detections_to_coco
from effdet.fileio import WriteError, atomic_path, atomic_write
from effdet.inference.draw import draw_detections

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp", ".ogv"}
)
"""Lower-case suffixes read as videos (from folders and glob patterns, and when given as files)."""

STREAM_SCHEMES: tuple[str, ...] = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
"""URL schemes read as network streams."""

CODECS: tuple[tuple[str, str], ...] = (("mp4v", ".mp4"), ("MJPG", ".avi"))
"""(fourcc, container suffix) tried in order for annotated videos; the first OpenCV can write wins."""

DEFAULT_FPS = 30.0
"""Frame rate written when a source does not report a usable one (some cameras and streams)."""

MAX_FAILED_READS = 5
"""A video file whose next this-many frames in a row fail to decode is taken to end there."""

CAMERA_INDEX = re.compile(r"[0-9]+")
"""A source spelled like this (and naming no file) is a camera index; ``str.isdigit`` would also
accept ``²``, which ``int`` then rejects."""

Detect = Callable[[Sequence[np.ndarray]], list[dict[str, Any]]]


class VideoReadError(OSError):
    """A video, camera or stream that cannot be opened, or yields no frame at all."""


@dataclass(frozen=True)
class VideoSource:
    """A source of frames: ``target`` is what ``cv2.VideoCapture`` opens (a path string, a
    camera index or a URL); ``live`` for cameras and streams (no known end, no file)."""

    target: str | int
    label: str
    """How messages name it: the path, ``camera 0`` or ``stream URL`` (without user and password)."""
    live: bool
    path: Path | None = None


@dataclass
class VideoResult:
    """What :func:`run_video` did with one source."""

    frames: int = 0
    detections: int = 0
    failed_frames: list[int] = field(default_factory=list)
    """Indices of frames that could not be decoded (skipped)."""
    video_path: Path | None = None
    lines_path: Path | None = None
    fps: float = 0.0
    size: tuple[int, int] = (0, 0)
    """(height, width) of the written frames, pixels."""


def stream_source(text: str) -> VideoSource | None:
    """A camera (``0``, ``1``, ...: ASCII digits only, so ``²`` or ``٣`` is a path) or URL source, or
    None when ``text`` is neither (or names an existing file or folder, which wins)."""
    if Path(text).exists():
        return None
    if CAMERA_INDEX.fullmatch(text):
        return VideoSource(int(text), f"camera {int(text)}", live=True)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in STREAM_SCHEMES:
        return VideoSource(text, "stream " + re.sub(r"//[^/@]*@", "//", text), live=True)  # no password in messages
    return None


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file()


def split_sources(sources: Sequence[str | Path]) -> tuple[list[str], list[VideoSource]]:
    """Split command-line sources into those for image discovery and video sources.

    Returns (image sources: files, folders and patterns for
    :func:`effdet.data.images.find_images`; videos: video files given directly or found in
    folders (recursively) and glob matches, then cameras and streams, each once). Folders and
    patterns go to both lists; an explicit file goes to one of them by its suffix. Videos inside
    a prediction output folder (one holding :data:`~effdet.data.images.OUTPUT_MARKER`) below a
    folder or pattern base are not collected, like images.
    """
    image_sources: list[str] = []
    videos: dict[Path, Path] = {}
    streams: list[VideoSource] = []
    for source in map(str, sources):
        stream = stream_source(source)
        path = Path(source)
        if stream is not None:
            streams.append(stream)
        elif path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
            videos.setdefault(path.resolve(), path)
        else:
            image_sources.append(source)
            if path.is_dir():
                root, found = path, [p for p in path.rglob("*") if is_video_file(p)]
            else:
                root, found = glob_base(source), expand_glob(source)  # never follows a link loop
            for video in found:
                if is_video_file(video) and not in_output_folder(video, root):
                    videos.setdefault(video.resolve(), video)
    files = [VideoSource(str(p), str(p), live=False, path=p) for p in sorted(videos.values(), key=str)]
    return image_sources, files + streams


def stream_name(source: VideoSource) -> str:
    """A file-name stem for a camera or stream: ``camera0``, or the URL's host and path."""
    if isinstance(source.target, int):
        return f"camera{source.target}"
    rest = str(source.target).split("://", 1)[-1].split("@")[-1].split("?")[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", rest).strip("._")[:80] or "stream"


@functools.lru_cache(maxsize=1)
def video_codec() -> tuple[str, str]:
    """(fourcc, suffix) of the first of :data:`CODECS` this OpenCV build can write (probed once,
    by opening a writer in a temporary folder). Raises :class:`WriteError` when none works."""
    with tempfile.TemporaryDirectory() as folder:
        for fourcc, suffix in CODECS:
            writer = cv2.VideoWriter(str(Path(folder) / f"probe{suffix}"), cv2.VideoWriter_fourcc(*fourcc), 10.0,
                                     (32, 32))
            ok = writer.isOpened()
            writer.release()
            if ok:
                if (fourcc, suffix) != CODECS[0]:
                    warnings.warn(f"OpenCV cannot write {CODECS[0][0]} {CODECS[0][1]} here; "
                                  f"annotated videos are {fourcc} {suffix} files", stacklevel=2)
                return fourcc, suffix
    raise WriteError("OpenCV cannot write video files here (tried " + ", ".join(f"{c} {s}" for c, s in CODECS)
                     + "); install opencv-python-headless with FFmpeg, or use --no-images for the JSON lines only")


def open_capture(source: VideoSource) -> cv2.VideoCapture:
    """An opened ``cv2.VideoCapture``; raises :class:`VideoReadError` naming the source. OpenCV's
    own warnings while it tries its backends are held back (its log level is restored after)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        capture = cv2.VideoCapture(source.target)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not capture.isOpened():
        capture.release()
        what = source.label if source.live else f"video file {source.label}"
        raise VideoReadError(f"cannot open {what}: OpenCV could not read it (not a video, corrupt, an unsupported "
                             "codec, or not reachable)")
    return capture


def frame_size(source: VideoSource) -> tuple[int, int] | None:
    """(height, width) of a video file's frames from its header, or None when it does not open or
    does not say (cameras and streams are not opened here)."""
    if source.live:
        return None
    try:
        capture = open_capture(source)
    except VideoReadError:
        return None
    try:
        height, width = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    finally:
        capture.release()
    return (height, width) if height > 0 and width > 0 else None


def read_frames(capture: cv2.VideoCapture, source: VideoSource, total: int | None, failed: list[int]
                ) -> Iterator[tuple[int, np.ndarray]]:
    """(index, H x W x 3 uint8 RGB frame) per decodable frame.

    A video file ends at its last frame, or after :data:`MAX_FAILED_READS` failed reads in a row;
    a camera or stream when it stops delivering frames. Frames of a file that fail to decode
    before its announced end (``total``) are appended to ``failed``, with one warning each when
    a good frame follows, or one warning for the lot when the file stops early (by more than one
    frame: the count in a header can be an estimate).
    """
    index, pending = 0, []
    while True:
        ok, frame = capture.read()
        if ok and frame is not None:
            for bad in pending:
                warnings.warn(f"skipped frame {bad} of {source.label}: it could not be decoded", stacklevel=2)
            failed.extend(pending)
            pending = []
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        elif source.live or total is None or index >= total:
            break
        else:
            pending.append(index)
            if len(pending) >= MAX_FAILED_READS:
                break
        index += 1
    end = pending[0] if pending else index
    if total is not None and total - end > 1:
        warnings.warn(f"skipped frames {end}-{total - 1} of {source.label}: they could not be decoded "
                      f"(the file announces {total} frames)", stacklevel=2)
        failed.extend(range(end, total))


def frame_record(index: int, seconds: float, detections: dict[str, Any], category_ids: Sequence[int],
                 class_names: Sequence[str] | None) -> dict[str, Any]:
    """One JSON line: ``frame`` index, ``time`` in seconds, ``detections`` with ``bbox`` [x, y,
    w, h] in frame pixels, ``score``, ``category_id`` and ``class_name`` (None when unknown)."""
    names = dict(zip(category_ids, class_names)) if class_names is not None else {}
    entries = detections_to_coco([detections], [index], category_ids)
    return {"frame": index, "time": round(seconds, 4),
            "detections": [{"bbox": e["bbox"], "score": e["score"], "category_id": e["category_id"],
                            "class_name": names.get(e["category_id"])} for e in entries]}


def run_video(detect: Detect, source: VideoSource, video_path: Path | None, lines_path: Path,
              category_ids: Sequence[int], class_names: Sequence[str] | None = None, batch_size: int = 8,
              max_frames: int | None = None, progress: bool = True) -> VideoResult:
    """Detect objects in every frame of one video, camera or stream; write the outputs.

    Args:
        detect: list of H x W x 3 uint8 RGB frames -> list of dicts with ``boxes`` (K, 4) xyxy
            in frame pixels, ``scores`` (K,), ``labels`` (K,) class indices.
        source: what to read (:func:`split_sources`).
        video_path: annotated video (its suffix picks the container: :func:`video_codec`), same
            frame rate and size as the source; None: none. Written to a temporary name in its
            folder and renamed at the end.
        lines_path: per-frame JSON lines (:func:`frame_record`), written the same way.
        category_ids: class index -> category id in the records.
        batch_size: frames per ``detect`` call.
        max_frames: stop after this many frames (a camera runs until stopped otherwise).

    Frames that fail to decode are skipped with one warning each and listed in the result. A
    camera or stream that stops delivering frames, or Ctrl-C while reading one, ends the run
    cleanly with complete output files. Raises :class:`VideoReadError` when the source cannot
    be opened or yields no frame.
    """
    capture = open_capture(source)
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        total = count if count > 0 and not source.live else None
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            warnings.warn(f"{source.label} reports no usable frame rate ({fps:g}); writing {DEFAULT_FPS:g} fps",
                          stacklevel=2)
            fps = DEFAULT_FPS
        failed: list[int] = []
        frames = read_frames(capture, source, total, failed)
        first = next(frames, None)
        if first is None:
            raise VideoReadError(f"cannot read video {source.label}: no frame could be decoded")
        result = VideoResult(failed_frames=failed, video_path=video_path, lines_path=lines_path, fps=fps,
                             size=first[1].shape[:2])
        limits = [x for x in (total, max_frames) if x]
        bar = tqdm(total=min(limits) if limits else None, desc=Path(source.label).name, unit="frame",
                   disable=not progress)
        with bar, atomic_write(lines_path, "w", encoding="utf-8") as lines:
            frames = _chain(first, frames)
            if video_path is None:
                _process(detect, frames, source, None, lines, result, category_ids, class_names, batch_size,
                         max_frames, bar)
                return result
            fourcc = video_codec()[0]
            with atomic_path(video_path, suffix=video_path.suffix) as temporary:
                writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*fourcc), fps,
                                         (result.size[1], result.size[0]))
                if not writer.isOpened():
                    raise WriteError(f"could not write video {video_path}: OpenCV's {fourcc} writer did not open; "
                                     "choose another --output folder, or use --no-images")
                try:
                    _process(detect, frames, source, writer, lines, result, category_ids, class_names, batch_size,
                             max_frames, bar)
                finally:
                    writer.release()
    finally:
        capture.release()
    return result


def _chain(first: tuple[int, np.ndarray], rest: Iterator[tuple[int, np.ndarray]]
           ) -> Iterator[tuple[int, np.ndarray]]:
    yield first
    yield from rest


def _process(detect: Detect, frames: Iterator[tuple[int, np.ndarray]], source: VideoSource,
             writer: cv2.VideoWriter | None, lines: IO[str], result: VideoResult, category_ids: Sequence[int],
             class_names: Sequence[str] | None, batch_size: int, max_frames: int | None, bar: tqdm) -> None:
    """Read, detect, draw and write batches of frames until the source or ``max_frames`` ends.
    Ctrl-C ends a camera or stream here (how such a run is stopped), keeping what was written."""
    start = time.monotonic()
    try:
        while True:
            room = batch_size if max_frames is None else min(batch_size, max_frames - result.frames)
            batch = [(index, time.monotonic() - start if source.live else index / result.fps, frame)
                     for index, frame in itertools.islice(frames, max(room, 0))]
            if not batch:
                return
            for (index, seconds, frame), det in zip(batch, detect([frame for _, _, frame in batch]), strict=True):
                _write_frame(index, seconds, frame, det, writer, lines, result, category_ids, class_names)
            bar.update(len(batch))
    except KeyboardInterrupt:
        if not source.live:
            raise
        warnings.warn(f"{source.label}: stopped by Ctrl-C after {result.frames} frames", stacklevel=2)


def _write_frame(index: int, seconds: float, frame: np.ndarray, det: dict[str, Any], writer: cv2.VideoWriter | None,
                 lines: IO[str], result: VideoResult, category_ids: Sequence[int],
                 class_names: Sequence[str] | None) -> None:
    """Append one frame's JSON line and its annotated picture (resized to the video's size if a
    stream changed resolution)."""
    lines.write(json.dumps(frame_record(index, seconds, det, category_ids, class_names)) + "\n")
    result.frames += 1
    result.detections += len(det["scores"])
    if writer is not None:
        drawn = draw_detections(frame, det["boxes"], det["labels"], det["scores"], class_names)
        height, width = result.size
        if drawn.shape[:2] != (height, width):
            drawn = cv2.resize(drawn, (width, height), interpolation=cv2.INTER_AREA)
        writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))


__all__ = ["CAMERA_INDEX", "CODECS", "VIDEO_EXTENSIONS", "VideoReadError", "VideoResult", "VideoSource", "frame_record",
           "frame_size", "is_video_file", "open_capture", "read_frames", "run_video", "split_sources", "stream_name",
           "stream_source", "video_codec"]
