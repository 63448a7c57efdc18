"""``effdet data``: dataset tools (flags: :mod:`effdet.cli.parsers.data`).

``effdet data demo`` writes the built-in synthetic shapes demo set (COCO format, no download).
``effdet data convert`` / ``check`` / ``split``: Pascal VOC and YOLO to COCO and COCO to YOLO
(:mod:`effdet.data.formats`), a data set's summary and a train/val split (:mod:`effdet.data.summary`).
``effdet data anchors``: how well the model's anchors cover a data set's boxes, and better anchor
settings (:mod:`effdet.analysis.anchor_fit`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from effdet.data.coco import CocoDetection, DatasetError
from effdet.data.images import IMAGE_EXTENSIONS
from effdet.data.formats import (CLASSES_FILE, Conversion, coco_to_yolo, read_class_names, read_coco, voc_to_coco,
                                 write_yolo, yolo_to_coco)
from effdet.data.results import write_json
from effdet.data.summary import format_summary, split_coco, summarize
from effdet.data.synthetic import make_synthetic_coco
from effdet.config import parse_overrides
from effdet.engine.train_config import load_run_config, split_overrides
from effdet.fileio import WriteError, check_output_file, check_output_folder, check_output_spares_inputs


def run(args: argparse.Namespace) -> int:
    return {"demo": demo, "convert": convert, "check": check, "split": split, "anchors": anchors}[args.task](args)


def demo(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        data = make_synthetic_coco(args.output, num_train=args.num_train, num_val=args.num_val,
                                   image_size=(args.image_size, args.image_size), seed=args.seed,
                                   overwrite=args.overwrite)
    except (FileExistsError, OSError) as error:
        print(f"effdet data demo: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.num_train} train + {args.num_val} val images in {time.perf_counter() - start:.1f} s")
    print(f"  train images:      {data.train_images}")
    print(f"  train annotations: {data.train_annotations}")
    print(f"  val images:        {data.val_images}")
    print(f"  val annotations:   {data.val_annotations}")
    return 0


def convert(args: argparse.Namespace) -> int:
    """``effdet data convert``: VOC or YOLO to COCO or YOLO, COCO to YOLO."""
    start = time.perf_counter()
    source, output = Path(args.source), Path(args.output)
    images = Path(args.images) if args.images else None
    _check_convert_arguments(args, source, output)
    progress = not args.no_progress
    if args.from_format == "voc":
        names = read_class_names(args.class_names) if args.class_names else None
        conversion = voc_to_coco(source, images, names, progress=progress)
    elif args.from_format == "yolo":
        conversion = yolo_to_coco(source, images, _yolo_class_names(args, source), progress=progress)
    else:
        conversion = Conversion(read_coco(source))
    coco = conversion.coco
    if args.to_format == "coco":
        write_json(coco, output)
        CocoDetection(output, images or output.parent, check_files=images is not None)  # loads as training will
        notes = conversion.notes
    else:
        labels = coco_to_yolo(coco)
        for name in [*labels.files, CLASSES_FILE]:  # before the first file is written
            _spare_inputs(args, source, output / name)
        write_yolo(labels, output, progress=progress)
        notes = conversion.notes + labels.notes
    print(f"converted {args.from_format} -> {args.to_format} in {time.perf_counter() - start:.1f} s: "
          f"{len(coco['images'])} images, {len(coco['annotations'])} boxes, {len(coco['categories'])} classes")
    if conversion.skipped_images:
        print(f"  skipped {len(conversion.skipped_images)} unreadable or missing image(s) (warnings above)")
    for note in notes:
        print(f"  {note}")
    where = "annotations" if args.to_format == "coco" else f"labels + {CLASSES_FILE}"
    print(f"  {where}: {output}")
    return 0


def _check_convert_arguments(args: argparse.Namespace, source: Path, output: Path) -> None:
    """Before any work: a supported pair, the inputs each format needs, an output that may be written."""
    if args.from_format == args.to_format:
        raise DatasetError(f"--from and --to are both {args.to_format}; nothing to convert")
    if args.from_format == "yolo" and not args.images:
        raise DatasetError("--from yolo needs --images DIR: the image files give the images' list and sizes")
    if args.from_format == "coco" and (args.images or args.class_names):
        raise DatasetError("--images and --class-names are not used with --from coco (the JSON has the sizes "
                           "and categories); leave them out")
    if output.resolve() == source.resolve():
        raise WriteError(f"--output {output} is the input; choose another path")
    if args.to_format == "coco":
        check_output_file(output, "--output")
        _spare_inputs(args, source, output)
        if output.exists() and not args.overwrite:
            raise WriteError(f"--output {output} exists; pass --overwrite to replace it or choose another file")
    else:
        check_output_folder(output, "--output")
        if output.is_dir() and any(output.iterdir()) and not args.overwrite:
            raise WriteError(f"--output {output} is not empty; pass --overwrite to write the label files into it "
                             "(same-named files are replaced, others kept) or choose another folder")


def _spare_inputs(args: argparse.Namespace, source: Path, output: Path) -> None:
    """The one rule (:func:`effdet.fileio.check_output_spares_inputs`): the output file ``output`` is
    none of the inputs (SRC, --class-names, SRC/classes.txt) and would replace no file read from SRC's
    folder (.xml, .txt) or --images (images); --overwrite does not change that."""
    read = {"voc": {".xml"}, "yolo": {".txt"}, "coco": None}[args.from_format]
    check_output_spares_inputs(output, "--output", [("SRC", source)], read)
    check_output_spares_inputs(output, "--output", [("--images", args.images)], IMAGE_EXTENSIONS)
    check_output_spares_inputs(output, "--output", [("--class-names", args.class_names)])


def _yolo_class_names(args: argparse.Namespace, labels: Path) -> list[str]:
    if args.class_names:
        return read_class_names(args.class_names)
    if (labels / CLASSES_FILE).is_file():
        return read_class_names(labels / CLASSES_FILE)
    raise DatasetError(f"no class names: give --class-names FILE (one name per line, or a data.yaml with names:), "
                       f"or put {CLASSES_FILE} in {labels}")


def check(args: argparse.Namespace) -> int:
    """``effdet data check``: the summary; exit code 2 with one line when training cannot use the data."""
    summary = summarize(args.annotations, args.images, read_images=args.read_images, progress=not args.no_progress)
    print(format_summary(summary))
    reason = summary.unusable_reason()
    if reason is not None:
        raise DatasetError(reason)
    return 0


def split(args: argparse.Namespace) -> int:
    """``effdet data split``: DIR/train.json and DIR/val.json, never over the input."""
    source, folder = Path(args.annotations), check_output_folder(args.output_dir, "--output-dir")
    outputs = (folder / "train.json", folder / "val.json")
    for path in outputs:
        check_output_spares_inputs(path, "--output-dir", [("ANN", source)])
        if path.exists() and not args.overwrite:
            raise WriteError(f"{path} exists; pass --overwrite to replace it or choose another --output-dir")
    train, val = split_coco(read_coco(source), args.val_fraction, args.seed)
    for path, subset in zip(outputs, (train, val)):
        write_json(subset, path)
        print(f"{path.stem}: {len(subset['images'])} images, {len(subset['annotations'])} boxes -> {path}")
    return 0


def anchors(args: argparse.Namespace) -> int:
    """``effdet data anchors``: the anchors' fit to the boxes of ``args.annotations`` and a better one."""
    fit = importlib.import_module("effdet.analysis.anchor_fit")  # loaded on use, as main loads a job: PyTorch
    annotations = args.annotations
    overrides = parse_overrides(args.overrides)
    if args.image_size is not None:
        h, w = args.image_size
        overrides["model.image_size"] = h if h == w else [h, w]
    source = args.config or args.model or "efficientdet_d0"
    cfg = load_run_config(source, overrides).model  # as effdet train builds it
    if args.output:
        check_output_file(args.output, "--output")
        check_output_spares_inputs(args.output, "--output", [("ANN", annotations), ("--config", args.config)])
    boxes = fit.load_box_sizes(annotations, cfg.image_size)
    result = fit.suggest_anchors(boxes.wh, cfg, progress=sys.stderr.isatty())
    assumed = {k: v for k, v in split_overrides(overrides)["model"].items() if k not in ("anchor_scale", "aspect_ratios")}
    train_overrides = [fit.format_override(f"model.{k}", v) for k, v in assumed.items()]
    train_overrides += [fit.format_override(k, v) for k, v in result.suggested.overrides().items()]
    train_source = f"--config {args.config}" if args.config else f"--model {args.model or 'efficientdet_d0'}"
    print("\n".join(fit.format_report(annotations, boxes, cfg.image_size, result, train_overrides, train_source)))
    if args.output:
        print(f"wrote {fit.write_suggestion(args.output, result, assumed, args.command_line)}")
    return 0
