"""``effdet data``'s flags: its tasks demo, convert, check, split and anchors."""

from __future__ import annotations

import argparse

from effdet.cli.parsers import POSITIVE, SEED, add_image_size_argument, float_in, int_at_least

DESCRIPTION = """Dataset tools.

    effdet data demo --output demo_data [--num-train 400 --num-val 80 --image-size 256 --seed 0 --overwrite]
    effdet data convert --from voc|yolo|coco --to coco|yolo SRC --output OUT [--images DIR]
        [--class-names FILE] [--overwrite] [--no-progress]
    effdet data check ANN IMAGES [--read-images] [--no-progress]
    effdet data split ANN --output-dir DIR [--val-fraction 0.2 --seed 0 --overwrite]
    effdet data anchors ANN [--model NAME | --config RECIPE.yaml] [--image-size 512] [--output FILE.yaml]
        [key=value ...]
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    demo = tasks.add_parser("demo", help="write the built-in synthetic shapes demo set (COCO format, no download)",
                            description="Write the built-in synthetic shapes demo set (coloured shapes on textured "
                                        "backgrounds, COCO format, no download).")
    demo.add_argument("--output", default="demo_data", help="output folder (default: demo_data)")
    demo.add_argument("--num-train", type=POSITIVE, default=400, help="training images (default: 400)")
    demo.add_argument("--num-val", type=POSITIVE, default=80, help="validation images (default: 80)")
    demo.add_argument("--image-size", type=int_at_least(32), default=256,
                      help="square image side in pixels (default: 256)")
    demo.add_argument("--seed", type=SEED, default=0, help="random seed (default: 0)")
    demo.add_argument("--overwrite", action="store_true",
                      help="write into a folder that is not empty, replacing the demo's own files (others are kept)")
    add_data_format_tasks(tasks)
    add_data_anchors_task(tasks)


DATA_CONVERT = """Convert annotations between Pascal VOC XML, YOLO txt and COCO JSON.

    effdet data convert --from voc --to coco VOC2012/Annotations --images VOC2012/JPEGImages --output voc.json
    effdet data convert --from yolo --to coco labels/train --images images/train --class-names data.yaml \\
        --output train.json
    effdet data convert --from coco --to yolo train.json --output labels/train     # + labels/train/classes.txt

SRC: voc: a folder of .xml files (searched recursively) or one file; yolo: the label folder
(labels/<image path>.txt); coco: the JSON file. OUT: --to coco: a .json file; --to yolo: a folder.
Category ids are 1..N in class order (VOC: names sorted unless --class-names gives the order;
YOLO: class k is id k + 1). A malformed file or line stops with file:line; missing or unreadable
images are skipped with a warning each and counted.
"""

DATA_CHECK = """Validate a COCO data set as training does and print its summary: images, boxes, boxes and
images per class, box sizes (pixels; small/medium/large by COCO's areas 32² and 96²), crowd
regions and the problems found (dropped or clipped boxes, missing files; with --read-images also
unreadable images and sizes that differ). Exit code 0 when training can use it, else 2.

    effdet data check annotations/train.json train/ [--read-images]
"""

DATA_SPLIT = """Split a COCO file by image into DIR/train.json and DIR/val.json (every category in both),
the same for the same --seed. The input is never written over.

    effdet data split all.json --output-dir annotations --val-fraction 0.2 --seed 0
"""


def open_fraction(text: str) -> float:
    """A number in (0, 1)."""
    value = float_in(0.0, 1.0, low_open=True)(text)
    if value == 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def add_data_format_tasks(tasks: argparse._SubParsersAction) -> None:
    """``effdet data convert``, ``check`` and ``split``."""
    raw = argparse.RawDescriptionHelpFormatter
    convert = tasks.add_parser("convert", help="convert VOC XML / YOLO txt to COCO JSON, COCO to YOLO",
                               description=DATA_CONVERT, formatter_class=raw)
    convert.add_argument("source", metavar="SRC", help="the annotations: VOC folder or file, YOLO label folder, "
                                                       "or COCO JSON")
    convert.add_argument("--from", dest="from_format", required=True, choices=("voc", "yolo", "coco"),
                         help="format of SRC")
    convert.add_argument("--to", dest="to_format", required=True, choices=("coco", "yolo"), help="format to write")
    convert.add_argument("--output", required=True, metavar="OUT",
                         help="--to coco: the JSON file; --to yolo: the label folder")
    convert.add_argument("--images", metavar="DIR", help="image folder (yolo: required, the images' sizes are read "
                                                         "from it; voc: optional, checks the images and reads a "
                                                         "missing <size>)")
    convert.add_argument("--class-names", metavar="FILE",
                         help="class names in class order: one per line, a JSON list, or a YOLO data.yaml with "
                              "names: (yolo: default SRC/classes.txt; voc: default the names found, sorted)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing --output file; --to yolo: "
                                                                  "write into a folder that is not empty")
    convert.add_argument("--no-progress", action="store_true", help="no progress bar")
    check = tasks.add_parser("check", help="validate a COCO data set and print its summary, without training",
                             description=DATA_CHECK, formatter_class=raw)
    check.add_argument("annotations", metavar="ANN", help="COCO annotation file")
    check.add_argument("images", metavar="IMAGES", help="the image folder its file_name entries are relative to")
    check.add_argument("--read-images", action="store_true",
                       help="decode every image and compare its size with the annotation file (slower)")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    split = tasks.add_parser("split", help="reproducible train/val split of a COCO file",
                             description=DATA_SPLIT, formatter_class=raw)
    split.add_argument("annotations", metavar="ANN", help="COCO annotation file to split")
    split.add_argument("--output-dir", required=True, metavar="DIR", help="folder for train.json and val.json")
    split.add_argument("--val-fraction", type=open_fraction, default=0.2,
                       help="fraction of the images for val, in (0, 1) (default: 0.2)")
    split.add_argument("--seed", type=SEED, default=0, help="random seed (default: 0)")
    split.add_argument("--overwrite", action="store_true", help="replace existing train.json / val.json")


DATA_ANCHORS = """How well the model's anchors cover a data set's boxes, and anchor settings that cover them better.

    effdet data anchors data/annotations/train.json --model efficientdet_d0
    effdet data anchors demo_data/annotations/train.json --config configs/demo.yaml [--image-size 256]
        [--output anchors.yaml] [model.anchor_scale=3 ...]

Boxes (non-crowd) are scaled to the network input by each image's letterbox scale. A box is
covered when its best shape-only IoU (box and anchor centred on each other, as YOLOv5's
autoanchor) with an anchor is >= 0.5, the labeler's positive threshold. Prints box size
statistics, the share of boxes covered overall and per pyramid level (a box belongs to the level
of its best anchor), the same for the best anchor_scale and aspect_ratios of a small grid, and the
key=value overrides that give them to effdet train.
"""


class IntermixedParser(argparse.ArgumentParser):
    """A job's parser whose positionals may come before, between and after its flags
    (``ANN --config X key=value``); plain argparse reads a run of positionals in one go and
    rejects the ones after a flag. Uses argparse's ``parse_known_intermixed_args``, which
    calls ``parse_known_args`` itself (hence the guard)."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def add_data_anchors_task(tasks: argparse._SubParsersAction) -> None:
    anchors = tasks.add_parser("anchors", help="how well the anchors cover a data set's boxes, and better anchors",
                               description=DATA_ANCHORS, formatter_class=argparse.RawDescriptionHelpFormatter)
    anchors.__class__ = IntermixedParser  # ANN ... --config X key=value: the overrides may follow the flags
    anchors.add_argument("annotations", metavar="ANN", help="COCO annotation file (the training set's)")
    source = anchors.add_mutually_exclusive_group()
    source.add_argument("--model", help="model variant (default: efficientdet_d0)")
    source.add_argument("--config", help="training recipe YAML or a run's config.yaml (its model: section)")
    add_image_size_argument(anchors, "the model's")
    anchors.add_argument("--output", metavar="FILE.yaml",
                         help="also write the suggestion as a recipe fragment (a model: section)")
    anchors.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                         help="model overrides as effdet train takes them, e.g. model.max_level=5 anchor_scale=3")
