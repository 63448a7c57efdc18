"""``effdet track``'s flags: ``effdet predict``'s (the same sources, model, slicing and
post-processing flags, added by :func:`effdet.cli.parsers.predict.add_arguments`) and the tracker's."""

from __future__ import annotations

import argparse

from effdet.cli.parsers import float_in, int_at_least
from effdet.cli.parsers import predict

DESCRIPTION = """Follow objects through videos, cameras and streams: detect each frame, link the detections
into tracks with ByteTrack, and write per source an annotated video (boxes labelled by track id
and class, with trails), MOTChallenge NAME.txt and JSON lines with track_id.

    effdet track clip.mp4 --weights runs/train/best.pt [--output runs/track]
    effdet track videos/ 0 rtsp://camera.local/stream --weights best.pt --classes person car
    effdet track clip.mp4 --detections runs/predict/clip.jsonl [--track-buffer 60]   # no detector
    effdet track clip.mp4 --weights best.pt --gt clip_gt.txt      # prints HOTA, MOTA, IDF1, ...
    effdet track clip.mp4 --weights best.pt --tracker bytetrack.yaml

Tracker settings come from the defaults, then a --tracker YAML file (keys as the flags, with
underscores: high_threshold, low_threshold, new_track_threshold, match_iou, track_buffer,
min_box_area, fuse_score), then the flags. The detector keeps detections down to
--score-threshold (default 0.1, the tracker's low threshold: ByteTrack continues tracks with
low-scored boxes). Outputs never replace an input (the videos, --detections, --gt, --tracker).
"""

TRACKER_FLAGS = (
    ("--high-threshold", float_in(0.0, 1.0), "F", "detections scoring at least F are matched first and may start "
     "tracks (default: 0.5)"),
    ("--low-threshold", float_in(0.0, 1.0), "F", "detections below F are ignored; those between the two thresholds "
     "only continue tracks (default: 0.1)"),
    ("--new-track-threshold", float_in(0.0, 1.0), "F", "the least score for an unmatched detection to start a track "
     "(default: 0.6)"),
    ("--match-iou", float_in(0.0, 1.0), "F", "the least IoU (times the detection score) of a track and a detection "
     "to match them in the first association (default: 0.2)"),
    ("--track-buffer", int_at_least(0), "N", "frames a lost track is kept, to be found again under its id (default: 30)"),
    ("--min-box-area", float_in(0.0, float("inf")), "PX2", "tracks with a smaller box (pixels^2) are not reported "
     "(default: 10)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    predict.add_arguments(parser)
    actions = {action.dest: action for action in parser._actions}
    actions["weights"].required = False
    actions["weights"].help = "checkpoint: this project's, or a reference-port state dict (not with --detections)"
    actions["output"].default = "runs/track"
    actions["output"].help = ("folder for each source's annotated NAME.mp4, MOTChallenge NAME.txt and JSON lines "
                              "NAME.jsonl (default: runs/track)")
    actions["no_images"].help = "do not write annotated videos (NAME.txt and NAME.jsonl are still written)"
    actions["json"].help = argparse.SUPPRESS  # image results: effdet predict's
    actions["ann"].help = argparse.SUPPRESS
    actions["score_threshold"].default = 0.1
    actions["score_threshold"].help = ("drop detections below this score, in [0, 1] (default: 0.1, the tracker's "
                                       "--low-threshold: ByteTrack uses low-scored boxes)")
    group = parser.add_argument_group("tracker (ByteTrack)")
    group.add_argument("--detections", metavar="FILE.jsonl",
                       help="re-track the per-frame JSON lines that effdet predict wrote for the one video given, "
                            "without the detector (the video's frames are read only to draw them)")
    group.add_argument("--tracker", metavar="FILE.yaml", help="tracker settings (keys as the flags below); the "
                       "flags override it")
    for flag, kind, metavar, text in TRACKER_FLAGS:
        group.add_argument(flag, type=kind, metavar=metavar, help=text)
    group.add_argument("--fuse-score", action=argparse.BooleanOptionalAction, default=None,
                       help="weigh the first association's IoU by the detection score (default: on)")
    group.add_argument("--classes", nargs="+", metavar="C",
                       help="track only these classes: class names, or category ids as the JSON lines write them")
    group.add_argument("--gt", metavar="GT.txt",
                       help="MOTChallenge ground truth of the one video given: print HOTA, MOTA, IDF1, ID switches, "
                            "false positives and misses (needs TrackEval: pip install --no-deps trackeval tabulate)")


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.json is not None or args.ann is not None:
        parser.error("--json and --ann are effdet predict's (image results); effdet track writes NAME.txt and "
                     "NAME.jsonl per video in --output")
    if args.detections is None and args.weights is None:
        parser.error("give --weights (a detector), or --detections FILE.jsonl (effdet predict's JSON lines) to "
                     "track without one")
    if args.detections is not None and args.weights is not None:
        parser.error("--detections re-tracks saved detections: leave out --weights")
