"""Running a trained detector over image files: load weights, read, predict, draw, write.

``load_predictor`` turns a checkpoint (this project's, or a reference-port state dict plus a
model name) into an :class:`effdet.inference.predictor.Predictor`. ``run_inference`` reads every image of
a list of sources (files, folders, glob patterns), skips unreadable files with a warning, runs
the predictor in batches (or sliced inference, :mod:`effdet.inference.slicing`) and writes
annotated copies and/or a COCO results JSON; videos, cameras and streams among the sources go
frame by frame through :func:`effdet.inference.video.run_video` (annotated video + JSON lines).
"""

from __future__ import annotations

import glob
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from PIL import Image
from tqdm import tqdm

from effdet.config import resolve
from effdet.data.coco import MAX_ANNOTATION_BYTES
from effdet.data.formats import read_class_names
from effdet.data.images import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, OUTPUT_MARKER, ImageReadError, find_images,
                                glob_base, read_image, read_image_reduced)
from effdet.data.results import detections_to_coco, write_results
from effdet.fileio import (ReadError, atomic_write, check_output_file, check_output_folder,
                           check_output_spares_inputs, read_text_bounded)
from effdet.inference.backends import load_network
from effdet.inference.draw import draw_detections
from effdet.inference.predictor import Predictor
from effdet.inference.slicing import MAX_TILES, TileLimitError, check_tile_count, sliced_detector
from effdet.inference.video import (VIDEO_EXTENSIONS, VideoReadError, VideoResult, VideoSource, frame_size,
                                    run_video, split_sources, stream_name, video_codec)
from effdet.modeling.postprocess import PostprocessSettings
from effdet.weights.reference import is_reference_weights_name

SOURCE_SUFFIXES: frozenset[str] = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
"""What a search of a source folder or glob pattern reads: an output there with one of these
suffixes could replace an input (or be read back as one)."""


class InferenceError(ValueError):
    """Bad input to an inference run (class-names file, sources, annotation file); says what to do."""


@dataclass
class InferenceSummary:
    """What ``run_inference`` did."""

    num_images: int = 0
    num_detections: int = 0
    """In images and video frames."""
    skipped: list[str] = field(default_factory=list)
    """Unreadable files (images, videos that cannot be opened), with the reason."""
    output_dir: Path | None = None
    json_path: Path | None = None
    videos: list[VideoResult] = field(default_factory=list)
    """One per video, camera or stream read: frame count, undecodable frames, output files."""

    @property
    def num_frames(self) -> int:
        return sum(video.frames for video in self.videos)

    @property
    def failed_frames(self) -> int:
        """Video frames that could not be decoded (skipped)."""
        return sum(len(video.failed_frames) for video in self.videos)


def load_predictor(weights: str | Path, model: str | None = None, class_names: str | Path | Sequence[str] | None = None,
                   device: str = "cpu", image_size: int | tuple[int, int] | None = None, batch_size: int = 8,
                   settings: PostprocessSettings | None = None, optimize: bool = False,
                   backend: str = "auto") -> Predictor:
    """A :class:`Predictor` for a checkpoint.

    Args:
        weights: this project's checkpoint, or a reference-port state dict (then ``model``, e.g.
            ``tf_efficientdet_d0``, is required; COCO checkpoints get the 90 COCO names and ids).
        model: model name / YAML for reference-port weights (or to override a checkpoint's).
        class_names: list or file (see :func:`effdet.data.formats.read_class_names`); replaces the checkpoint's names.
        image_size: network input (h, w) or side; default the model's. Must be a multiple of
            2^max_level (128 for D0..D7).
        settings: post-processing; default the Predictor's (score threshold 0.05).
        optimize: run a fused copy (:func:`effdet.inference.predictor.optimize_for_inference`) where
            it measures faster (see :class:`Predictor`).
        backend: ``auto`` (by the file: checkpoints run in PyTorch, ``.onnx`` in ONNX Runtime, ``.xml``
            in OpenVINO), ``torch``, ``onnxruntime`` or ``openvino`` (:mod:`effdet.inference.backends`).
    """
    net, info = load_network(weights, model=model, device=device, backend=backend, image_size=image_size)
    cfg = net.config
    size = resolve(cfg, image_size=image_size).image_size if image_size is not None else cfg.image_size
    names = info.get("class_names")
    if class_names is not None:
        names = read_class_names(class_names) if isinstance(class_names, (str, Path)) else list(class_names)
        if len(names) != cfg.num_classes:
            raise InferenceError(f"{len(names)} class names given for a model with {cfg.num_classes} classes "
                                 f"({weights}); give exactly one name per class")
    return Predictor(net, image_size=size, class_names=names, category_ids=info.get("category_ids"), device=device,
                     batch_size=batch_size, settings=settings, optimize=optimize)


def output_names(paths: Sequence[Path], sources: Sequence[str | Path]) -> list[Path]:
    """Relative output path of each image: its path below the folder (or glob base) it came
    from, else its file name; duplicates get ``_1``, ``_2``... suffixes."""
    roots = []
    for source in sources:
        p = Path(source)
        if p.is_dir():
            roots.append(p.resolve())
        elif not p.is_file() and glob.has_magic(str(source)):
            base = _plain_prefix(p.parts)
            roots.append(Path(*base).resolve() if base else Path.cwd())
    names = []
    for path in paths:
        resolved = path.resolve()
        parents = [r for r in roots if resolved.is_relative_to(r)]
        names.append(resolved.relative_to(max(parents, key=lambda r: len(r.parts))) if parents else Path(path.name))
    return unique_names(names)


def unique_names(names: Sequence[Path]) -> list[Path]:
    """``names`` with ``_1``, ``_2``... added to the stem of each repeat of an earlier name."""
    out, used = [], set()
    for name in names:
        candidate, counter = name, 0
        while candidate.as_posix() in used:
            counter += 1
            candidate = name.with_name(f"{name.stem}_{counter}{name.suffix}")
        used.add(candidate.as_posix())
        out.append(candidate)
    return out


def video_output_names(videos: Sequence[VideoSource], sources: Sequence[str | Path], suffix: str) -> list[Path]:
    """Relative output name of each video source, with ``suffix``: a file's as for images
    (:func:`output_names`) with its suffix replaced; a camera's or stream's from
    :func:`effdet.inference.video.stream_name`. Unique (``_1``, ``_2``...)."""
    files = output_names([v.path for v in videos if v.path is not None], sources)
    names, files_left = [], iter(files)
    for video in videos:
        names.append(next(files_left).with_suffix(suffix) if video.path is not None
                     else Path(stream_name(video) + suffix))
    return unique_names(names)


def _plain_prefix(parts: Sequence[str]) -> list[str]:
    """Leading path components without glob wildcards."""
    out = []
    for part in parts:
        if glob.has_magic(part):
            break
        out.append(part)
    return out


def annotation_image_ids(ann_file: str | Path, names: Sequence[Path]) -> list[int | None]:
    """COCO image id of each relative image name, matched by ``file_name`` (then by unique base
    name); None where the annotation file does not list the image (warned once)."""
    ann_file = Path(ann_file)
    try:
        images = json.loads(read_text_bounded(ann_file, "annotation file", MAX_ANNOTATION_BYTES))["images"]
        by_path = {str(im["file_name"]).replace("\\", "/"): int(im["id"]) for im in images}
    except ReadError as error:
        raise InferenceError(f"{error}; check the --ann path") from None
    except (json.JSONDecodeError, RecursionError, KeyError, TypeError, ValueError) as error:
        raise InferenceError(f"{ann_file} is not a COCO annotation file with 'images' entries "
                             f"(id, file_name): {str(error)[:200]}") from None
    by_base: dict[str, int | None] = {}
    for file_name, image_id in by_path.items():
        base = file_name.rsplit("/", 1)[-1]
        by_base[base] = None if base in by_base else image_id  # None: ambiguous
    ids = [by_path.get(name.as_posix(), by_base.get(name.name)) for name in names]
    missing = [name.as_posix() for name, image_id in zip(names, ids) if image_id is None]
    if len(missing) == len(names):
        raise InferenceError(f"none of the {len(names)} images is listed in {ann_file} (matched by file_name); "
                             "run on the images the annotation file lists, or drop --ann")
    if missing:
        warnings.warn(f"{len(missing)} image(s) are not (uniquely) listed in {ann_file}, e.g. {missing[:3]}; "
                      "they are drawn but left out of the results JSON", stacklevel=2)
    return ids


def picture_names(names: Sequence[Path]) -> list[Path]:
    """The relative file each image's annotated copy is written to: its name when Pillow can write
    that suffix, else the name with ``.png`` added (``scan.dat`` -> ``scan.dat.png``, so that it
    cannot take the place of ``scan.png``); any remaining repeat gets ``_1``, ``_2``..."""
    writable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    return unique_names([name if name.suffix.lower() in writable else name.with_name(name.name + ".png")
                         for name in names])


def save_image_atomic(image: Image.Image, path: Path) -> Path:
    """Save ``image`` in the format of ``path``'s suffix (PNG for unknown suffixes), atomically."""
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        path, fmt = path.with_suffix(".png"), "PNG"
    with atomic_write(path, suffix=path.suffix) as f:
        image.save(f, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return path


def check_weights_path(weights: str | Path) -> None:
    """Before any work: ``--weights`` is an existing file or folder (the loader says what is wrong
    with it) or the name of released reference weights; raises :class:`InferenceError`."""
    if not is_reference_weights_name(str(weights)) and not Path(weights).exists():
        raise InferenceError(f"--weights {weights} does not exist (check the path)")


@dataclass
class InferencePlan:
    """What :func:`run_plan` will read and write, found and checked by :func:`prepare_inference`."""

    paths: list[Path]
    """Image files, sorted."""
    names: list[Path]
    """Each image's relative name (``file_name`` in the results JSON, matched against ``--ann``)."""
    pictures: list[Path]
    """Each image's annotated copy, relative to ``output_dir`` (:func:`picture_names`)."""
    ids: list[int | None]
    videos: list[VideoSource]
    video_names: list[Path]
    frame_files: list[Path]
    output_dir: Path | None
    frames_dir: Path | None
    json_path: Path | None
    slice_size: int | None = None
    slice_overlap: float = 0.2
    max_tiles: int = MAX_TILES
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    """Images whose file claims more pixels are skipped as unreadable, before decoding."""


def prepare_inference(sources: Sequence[str | Path], output_dir: str | Path | None = "runs/predict",
                      json_path: str | Path | None = None, ann_file: str | Path | None = None,
                      frames_dir: str | Path | None = None, slice_size: int | None = None, slice_overlap: float = 0.2,
                      max_tiles: int = MAX_TILES, inputs: Iterable[tuple[str, str | Path | None]] = (),
                      max_pixels: int | None = DEFAULT_MAX_PIXELS) -> InferencePlan:
    """Find the sources' images and videos and check every output against every input, before a
    model is loaded (see :func:`run_inference` for the arguments; ``inputs``: further input files
    as ``(flag, path)``, e.g. ``("--weights", ...)``, that no output may replace).

    With ``slice_size``, each image's size is read from its header and an image that would be cut into
    more than ``max_tiles`` tiles stops the run here (:func:`effdet.inference.slicing.check_tile_count`);
    so does a video file's frame size. Raises :class:`InferenceError` or
    :class:`effdet.fileio.WriteError`, naming the file and what to do."""
    image_sources, videos = split_sources(sources)
    try:
        paths = find_images(image_sources) if image_sources else []
    except FileNotFoundError as error:
        raise InferenceError(f"{error}; pass image or video files, folders, glob patterns, a camera index or a "
                             "stream URL") from None
    if not paths and not videos:
        raise InferenceError(f"no image files found in {', '.join(map(str, sources))} "
                             "(looked for .jpg .jpeg .png .bmp .webp .tif .tiff, and for videos: "
                             f"{' '.join(sorted(VIDEO_EXTENSIONS))})")
    frames_dir = Path(frames_dir) if frames_dir is not None else Path(output_dir) if output_dir is not None else None
    if videos and frames_dir is None:
        raise InferenceError("videos need a folder for their per-frame JSON lines: give frames_dir")
    names = output_names(paths, sources)
    video_names = video_output_names(videos, sources, video_codec()[1] if videos and output_dir is not None
                                     else ".mp4")
    frame_files = [frames_dir / name.with_suffix(".jsonl") for name in video_names] if frames_dir is not None else []
    plan = InferencePlan(paths, names, picture_names(names), [], videos, video_names, frame_files,
                         Path(output_dir) if output_dir is not None else None, frames_dir,
                         Path(json_path) if json_path is not None else None, slice_size, slice_overlap, max_tiles,
                         max_pixels)
    named = [*inputs, ("--ann", ann_file)]
    folders = [(f"source folder {source}" if Path(source).is_dir() else f"pattern {source}",
                Path(source) if Path(source).is_dir() else glob_base(str(source)))
               for source in image_sources if not Path(source).is_file()]
    check_plan_outputs(plan, named, folders)
    if videos:
        check_output_folder(frames_dir, "--output")
    plan.ids = annotation_image_ids(ann_file, names) if ann_file is not None and paths else \
        list(range(1, len(paths) + 1))
    if slice_size is not None:
        check_tiles(plan)
    return plan


def check_outputs(outputs: Sequence[tuple[str, Path]], inputs: Sequence[tuple[str, str | Path | None]],
                  input_files: Iterable[Path] = ()) -> None:
    """Refuse, before any work (never relaxed), an output that would replace an input or another output.

    ``outputs``: (what, path) of every file a job will write, e.g. ``("--json", path)``;
    ``inputs``: (flag, path) of the named input files (``("--weights", path)``; None: not given);
    ``input_files``: the other files read (images, videos). Paths are compared resolved (through links).

    Raises:
        InferenceError: naming the output and the input (or the other output) it would replace.
    """
    taken = {Path(p).resolve(): f"the input {p}" for p in input_files}
    taken.update({Path(p).resolve(): f"the {flag} input {p}" for flag, p in inputs if p is not None})
    claimed: dict[Path, str] = {}
    for what, path in outputs:
        resolved = Path(path).resolve()
        if resolved in taken:
            raise InferenceError(f"{what} {path} would replace {taken[resolved]}; writing there would destroy it: "
                                 "choose an output that is none of the inputs")
        if resolved in claimed:
            raise InferenceError(f"{what} {path} is also {claimed[resolved]}; give them different names")
        claimed[resolved] = f"{what} {path}"


def check_plan_outputs(plan: InferencePlan, named: Sequence[tuple[str, str | Path | None]],
                       folders: Sequence[tuple[str, Path]] = ()) -> None:
    """The outputs of a run (:func:`check_outputs`): no annotated copy, video, JSON lines file or
    results JSON replaces an input image or video, a ``named`` input (``--weights``,
    ``--class-names``, ``--ann``) or another output; the results JSON is not a folder and does not lie
    in a source folder (or a pattern's base folder) with a suffix the search reads; ``--output`` is
    a folder. Raises :class:`InferenceError` or :class:`effdet.fileio.WriteError` naming both files."""
    if plan.output_dir is not None and plan.output_dir.is_file():
        raise InferenceError(f"--output {plan.output_dir} is a file; annotated images go to a folder: choose a "
                             "folder name (or --no-images)")
    if plan.json_path is not None and plan.json_path.is_dir():
        raise InferenceError(f"--json {plan.json_path} is a folder; give a file name such as "
                             f"{plan.json_path / 'detections.json'}")
    outputs = [("--output: the video JSON lines", frame_file) for frame_file in plan.frame_files]
    if plan.output_dir is not None:
        outputs += [("--output: the annotated copy", plan.output_dir / picture) for picture in plan.pictures]
        outputs += [("--output: the annotated video", plan.output_dir / name) for name in plan.video_names]
    if plan.json_path is not None:
        check_output_spares_inputs(plan.json_path, "--json", [*named, *folders], SOURCE_SUFFIXES)
        outputs.append(("--json", plan.json_path))
    check_outputs(outputs, named, [*plan.paths, *(video.path for video in plan.videos if video.path)])
    if plan.json_path is not None:
        check_output_file(plan.json_path, "--json")
    if plan.output_dir is not None:
        check_output_folder(plan.output_dir, "--output")


def check_tiles(plan: InferencePlan) -> None:
    """Sliced inference: refuse, before any work, an image (size from its header) or video file
    (its frame size) that ``plan.slice_size`` would cut into more than ``plan.max_tiles`` tiles. Files
    whose size cannot be read are left to the run, which skips them as unreadable."""
    assert plan.slice_size is not None
    for path in plan.paths:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Exception:  # noqa: BLE001 - unreadable: skipped and counted by the run
            continue
        _check_tiles(plan, height, width, f"image {path}")
    for video in plan.videos:
        size = frame_size(video) if not video.live else None
        if size is not None:
            _check_tiles(plan, *size, f"video {video.label}")


def _check_tiles(plan: InferencePlan, height: int, width: int, what: str) -> None:
    try:
        check_tile_count(height, width, plan.slice_size, plan.slice_overlap, plan.max_tiles, what)
    except TileLimitError as error:
        raise InferenceError(str(error)) from None


def run_inference(predictor: Predictor, sources: Sequence[str | Path], output_dir: str | Path | None = "runs/predict",
                  json_path: str | Path | None = None, ann_file: str | Path | None = None,
                  progress: bool = True, frames_dir: str | Path | None = None, slice_size: int | None = None,
                  slice_overlap: float = 0.2, max_frames: int | None = None, max_tiles: int = MAX_TILES,
                  inputs: Iterable[tuple[str, str | Path | None]] = (),
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> InferenceSummary:
    """Detect objects in every image and video of ``sources`` and write the outputs:
    :func:`prepare_inference` then :func:`run_plan`.

    Args:
        predictor: its settings (score threshold, NMS) decide what is drawn and written.
        sources: files, folders (recursive) and glob patterns (``effdet.data.images.find_images``);
            video files among them (by suffix, :data:`~effdet.inference.video.VIDEO_EXTENSIONS`),
            camera indices (``0``) and stream URLs (``rtsp://...``) are read frame by frame
            (:func:`effdet.inference.video.split_sources`).
        output_dir: annotated copies go here, at each image's relative path (:func:`picture_names`),
            and annotated videos (``NAME.mp4``, the source's frame rate and size) beside them
            (None: neither; then, without ``slice_size``, large JPEGs are decoded at 1/2-1/8 of their
            resolution, :func:`effdet.data.images.read_image_reduced`, boxes still in original pixels).
        json_path: COCO results JSON of the images (``image_id``, ``file_name``,
            ``category_id``, ``bbox`` xywh in original pixels, ``score``). Category ids are the
            checkpoint's dataset ids when it has them, else the class indices.
        ann_file: take ``image_id`` from this COCO annotation file (matched by file name);
            otherwise images are numbered 1, 2, ... in sorted path order. Images the file does
            not list are left out of the JSON (with a warning).
        frames_dir: each video's per-frame JSON lines (``NAME.jsonl``, see
            :func:`effdet.inference.video.frame_record`); default ``output_dir``.
        slice_size, slice_overlap: sliced inference (:func:`effdet.inference.slicing.sliced_predict`)
            with tiles of ``slice_size`` original pixels overlapping by ``slice_overlap``, plus a
            full-image pass, for images and frames alike; None: one letterboxed pass.
        max_frames: read at most this many frames of each video, camera or stream.
        max_tiles: the most tiles sliced inference cuts one image or frame into.
        inputs: further input files, ``(flag, path)``, that no output may replace (the weights,
            the class-names file).
        max_pixels: an image whose file claims more pixels (width x height) is skipped as
            unreadable before it is decoded (:func:`effdet.data.images.read_image`; None: no budget).

    Unreadable files (images, videos that cannot be opened) are skipped with a warning and listed
    in the summary; undecodable frames are skipped and counted. When nothing at all could be read,
    the run is an :class:`InferenceError` and ``json_path`` is left as it was. Outputs never
    replace an input (:func:`check_plan_outputs`). ``output_dir`` (and ``frames_dir``) get the marker
    file :data:`~effdet.data.images.OUTPUT_MARKER`, so that a later run over a folder that contains
    it does not read the annotated copies back as input.
    """
    plan = prepare_inference(sources, output_dir, json_path, ann_file, frames_dir, slice_size, slice_overlap, max_tiles,
                             inputs, max_pixels)
    return run_plan(predictor, plan, progress, max_frames)


def run_plan(predictor: Predictor, plan: InferencePlan, progress: bool = True,
             max_frames: int | None = None) -> InferenceSummary:
    """Read, detect and write what :func:`prepare_inference` found (see :func:`run_inference`)."""
    summary = InferenceSummary(output_dir=plan.output_dir)
    created = _mark_output_folders({plan.output_dir, plan.frames_dir if plan.videos else None} - {None})
    detect = predictor if plan.slice_size is None else sliced_detector(
        predictor, plan.slice_size, plan.slice_overlap, merge_iou=predictor.settings.nms_iou, max_tiles=plan.max_tiles)
    try:
        results = _predict_images(predictor, detect, plan, summary, progress)
        categories = predictor.category_ids or list(range(predictor.config.num_classes))
        for video, name, frame_file in zip(plan.videos, plan.video_names, plan.frame_files):
            try:
                summary.videos.append(run_video(detect, video, plan.output_dir / name if plan.output_dir else None,
                                                frame_file, categories, predictor.class_names, predictor.batch_size,
                                                max_frames, progress))
            except VideoReadError as error:
                warnings.warn(f"skipped: {error}", stacklevel=2)
                summary.skipped.append(str(error))
                continue
            summary.num_detections += summary.videos[-1].detections
    except TileLimitError as error:  # a frame, or an image whose header told another size
        raise InferenceError(str(error)) from None
    if summary.num_images == 0 and not summary.num_frames:
        _unmark(created)
        kept = f"; --json {plan.json_path} was not written" if plan.json_path is not None else ""
        raise InferenceError(f"nothing could be read: {len(summary.skipped)} source(s) skipped as unreadable (see the "
                             f"warnings){kept}. Check the sources (files, camera index, stream URL)")
    if plan.json_path is not None:
        if not plan.paths:
            warnings.warn(f"--json {plan.json_path} holds image detections only, and there are no images; the "
                          "videos' detections are in their JSON lines files", stacklevel=2)
        summary.json_path = write_results(results, plan.json_path)
    return summary


def _mark_output_folders(folders: Iterable[Path]) -> list[tuple[Path, Path]]:
    """Write :data:`OUTPUT_MARKER` into each folder; returns (folder, first folder this made) for
    the folders that did not exist, for :func:`_unmark`."""
    created = []
    for folder in folders:
        first = None
        for parent in [folder, *folder.parents]:
            if parent.exists():
                break
            first = parent
        with atomic_write(folder / OUTPUT_MARKER, "w", encoding="utf-8") as f:
            f.write("annotated images written by effdet predict; folder searches for input images skip this folder\n")
        if first is not None:
            created.append((folder, first))
    return created


def _unmark(created: Sequence[tuple[Path, Path]]) -> None:
    """Remove the markers and the (still empty) folders that a run which read nothing made."""
    for folder, first in created:
        (folder / OUTPUT_MARKER).unlink(missing_ok=True)
        for parent in [folder, *folder.parents]:
            try:
                os.rmdir(parent)
            except OSError:
                break
            if parent == first:
                break


def _predict_images(predictor: Predictor, detect: Callable[[list[Any]], list[dict[str, Any]]], plan: InferencePlan,
                    summary: InferenceSummary, progress: bool) -> list[dict[str, Any]]:
    """Read, detect (in batches of ``predictor.batch_size``), draw and write the images; returns
    their COCO results entries and counts them (and the unreadable files) in ``summary``."""
    paths, names, ids = plan.paths, plan.names, plan.ids
    if not paths:
        return []
    categories = predictor.category_ids or list(range(predictor.config.num_classes))
    results: list[dict[str, Any]] = []
    # Without drawings or tiles only the network input is needed: large JPEGs are decoded at 1/2-1/8
    # (the predictor maps their boxes to full-image pixels); drawings and tiles need every pixel.
    reduced = summary.output_dir is None and plan.slice_size is None
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not progress)
    for start in range(0, len(paths), predictor.batch_size):
        batch = []
        for index in range(start, min(start + predictor.batch_size, len(paths))):
            try:
                batch.append((index, read_image_reduced(paths[index], predictor.image_size, plan.max_pixels)
                              if reduced else read_image(paths[index], plan.max_pixels)))
            except ImageReadError as error:
                warnings.warn(f"skipped: {error}", stacklevel=2)
                summary.skipped.append(str(error))
        bar.update(min(predictor.batch_size, len(paths) - start))
        if not batch:
            continue
        detections = detect([image for _, image in batch])
        for (index, image), det in zip(batch, detections):
            summary.num_images += 1
            summary.num_detections += len(det["scores"])
            if ids[index] is not None:
                results.extend(detections_to_coco([det], [ids[index]], categories, [names[index].as_posix()]))
            if summary.output_dir is not None:
                drawn = draw_detections(Image.fromarray(image), det["boxes"], det["labels"], det["scores"],
                                        predictor.class_names)
                save_image_atomic(drawn, summary.output_dir / plan.pictures[index])
    bar.close()
    return results
