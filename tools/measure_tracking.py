"""Tracking measured on synthetic clips with known identities (docs/tracking.md).

    python tools/measure_tracking.py --output runs/track_bench [--clips 6 --frames 150 --seed 0]
        [--weights best.pt]    # also track the detector's own detections (effdet predict's JSON lines)
    python tools/measure_tracking.py --output runs/track_shapes --training-set   # a COCO set to train that detector

Writes, under --output: clips/clipN.mp4 with clipN_gt.txt (MOTChallenge ground truth:
frame,id,x,y,w,h,1,category,visibility), noisy/clipN.jsonl (detections made from the ground truth
with jitter, gaps of a few frames, low scores under occlusion and false positives, in
effdet predict's JSON lines format), then runs ``effdet track --detections`` with each tracker
setting below on them (and ``effdet predict`` + ``effdet track --detections`` with --weights) and
prints one table row per (detections, tracker): HOTA, MOTA, IDF1, ID switches, FP, FN summed over
the clips (ratios from the summed counts where TrackEval defines them so; HOTA averaged).
Backgrounds are crops of scikit-image's photos (a dev dependency).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from effdet.data.synthetic import CATEGORIES
from effdet.data.synthetic_clips import GroundTruthBox, plan_clip, render_clip
from effdet.evaluation.mot import evaluate_mot, read_mot_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_photo_shapes import _background as photo_background  # noqa: E402
from make_photo_shapes import _photos  # noqa: E402

SIZE = (240, 320)
TRACKERS = {
    "ByteTrack (defaults)": [],
    "ByteTrack without the low-score pass": ["--low-threshold", "0.5"],
    "ByteTrack, buffer 5 frames": ["--track-buffer", "5"],
}
"""Tracker variants compared: extra ``effdet track`` flags."""


def noisy_detections(truth: list[GroundTruthBox], num_frames: int, size: tuple[int, int], rng: np.random.Generator,
                     jitter: float = 0.05, gap_rate: float = 0.02, gap_frames: tuple[int, int] = (2, 6),
                     false_positives: float = 0.3) -> list[dict]:
    """effdet predict JSON lines (frame from 0) from ground truth: each box jittered by
    ``jitter`` x its size (normal), scored 0.3 + 0.65 x visibility (+ noise, so occluded objects
    fall into ByteTrack's low-score band); per object, gaps of ``gap_frames`` frames start at rate
    ``gap_rate`` per frame; false positives per frame are Poisson(``false_positives``), random
    boxes scored 0.1-0.65; objects less than 20% visible are missed."""
    height, width = size
    gap_until: dict[int, int] = {}
    by_frame: dict[int, list[GroundTruthBox]] = {}
    for g in truth:
        by_frame.setdefault(g.frame, []).append(g)
    lines = []
    for frame in range(1, num_frames + 1):
        detections = []
        for g in by_frame.get(frame, []):
            if gap_until.get(g.track_id, 0) >= frame:
                continue
            if rng.random() < gap_rate:
                gap_until[g.track_id] = frame + int(rng.integers(*gap_frames)) - 1
                continue
            if g.visibility < 0.2:
                continue
            x1, y1, x2, y2 = g.box
            w, h = x2 - x1, y2 - y1
            x1, x2 = x1 + rng.normal(0, jitter * w), x2 + rng.normal(0, jitter * w)
            y1, y2 = y1 + rng.normal(0, jitter * h), y2 + rng.normal(0, jitter * h)
            score = float(np.clip(0.3 + 0.65 * g.visibility + rng.normal(0, 0.05), 0.05, 0.99))
            detections.append(_entry(x1, y1, x2, y2, score, g.category_id))
        for _ in range(rng.poisson(false_positives)):
            w, h = rng.uniform(0.08, 0.25) * width, rng.uniform(0.08, 0.25) * height
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            detections.append(_entry(x, y, x + w, y + h, float(rng.uniform(0.1, 0.65)), 1))
        lines.append({"frame": frame - 1, "time": round((frame - 1) / 30, 4), "detections": detections})
    return lines


def _entry(x1: float, y1: float, x2: float, y2: float, score: float, category: int) -> dict:
    return {"bbox": [round(x1, 2), round(y1, 2), round(max(x2 - x1, 1.0), 2), round(max(y2 - y1, 1.0), 2)],
            "score": round(score, 4), "category_id": category, "class_name": dict(CATEGORIES)[category]}


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 30.0) -> None:
    """H x W x 3 RGB frames as an mp4v video."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def gt_lines(truth: list[GroundTruthBox]) -> str:
    """MOTChallenge ground truth: frame,id,x,y,w,h,1,category,visibility."""
    return "".join(f"{g.frame},{g.track_id},{g.box[0]:.0f},{g.box[1]:.0f},{g.box[2] - g.box[0]:.0f},"
                   f"{g.box[3] - g.box[1]:.0f},1,{g.category_id},{g.visibility}\n" for g in truth)


def write_training_set(output: Path, seed: int, clips: tuple[int, int] = (60, 20), frames: int = 60,
                       every: int = 6) -> None:
    """COCO train/val sets (``output/{train,val}/``, ``output/annotations/{train,val}.json``) of every
    ``every``-th frame of synthetic clips made with seeds other than the measurement's (objects
    less than 20% visible are not labelled)."""
    rng = np.random.default_rng(seed + 1000)
    photos = _photos()
    for split, count in zip(("train", "val"), clips):
        (output / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for n in range(count):
            objects = plan_clip(rng, frames, SIZE, num_pairs=int(rng.integers(1, 5)))
            pictures, truth = render_clip(rng, objects, frames, SIZE, photo_background(rng, photos, *SIZE))
            for index in range(0, frames, every):
                image_id = len(images) + 1
                name = f"clip{n}_{index:03d}.jpg"
                cv2.imwrite(str(output / split / name), cv2.cvtColor(pictures[index], cv2.COLOR_RGB2BGR))
                images.append({"id": image_id, "file_name": name, "width": SIZE[1], "height": SIZE[0]})
                for g in truth:
                    if g.frame == index + 1 and g.visibility >= 0.2:
                        w, h = g.box[2] - g.box[0], g.box[3] - g.box[1]
                        annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                            "category_id": g.category_id, "bbox": [g.box[0], g.box[1], w, h],
                                            "area": w * h, "iscrowd": 0})
        (output / "annotations").mkdir(exist_ok=True)
        (output / "annotations" / f"{split}.json").write_text(json.dumps({
            "images": images, "annotations": annotations,
            "categories": [{"id": c, "name": name} for c, name in CATEGORIES]}))


def make_clips(output: Path, clips: int, frames: int, seed: int) -> list[tuple[Path, Path, Path]]:
    """(video, ground truth, noisy detections) per clip."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    out = []
    for n in range(clips):
        (output / "clips").mkdir(parents=True, exist_ok=True)
        (output / "noisy").mkdir(parents=True, exist_ok=True)
        objects = plan_clip(rng, frames, SIZE, num_pairs=3 + n % 2)
        images, truth = render_clip(rng, objects, frames, SIZE, photo_background(rng, photos, *SIZE))
        video, gt, noisy = output / "clips" / f"clip{n}.mp4", output / "clips" / f"clip{n}_gt.txt", \
            output / "noisy" / f"clip{n}.jsonl"
        write_clip(video, images)
        gt.write_text(gt_lines(truth))
        noisy.write_text("".join(json.dumps(line) + "\n" for line in noisy_detections(truth, frames, SIZE, rng)))
        out.append((video, gt, noisy))
    return out


def score(runs: list[tuple[Path, Path]]) -> dict[str, float]:
    """Counts summed over the clips; MOTA and IDF1 from the sums, HOTA the mean over clips."""
    totals: dict[str, float] = {}
    hota = []
    for gt, tracks in runs:
        metrics = evaluate_mot(read_mot_file(gt, "--gt"), read_mot_file(tracks))
        hota.append(metrics["HOTA"])
        for key in ("IDSW", "FP", "FN", "GT_Dets", "Dets"):
            totals[key] = totals.get(key, 0) + metrics[key]
        idtp = metrics["IDF1"] * (metrics["GT_Dets"] + metrics["Dets"]) / 2
        totals["IDTP"] = totals.get("IDTP", 0) + idtp
    totals["HOTA"] = float(np.mean(hota))
    totals["MOTA"] = 1 - (totals["FN"] + totals["FP"] + totals["IDSW"]) / totals["GT_Dets"]
    totals["IDF1"] = 2 * totals["IDTP"] / (totals["GT_Dets"] + totals["Dets"])
    return totals


def track_all(clips: list[tuple[Path, Path, Path]], detections: list[Path], out: Path, flags: list[str]
              ) -> list[tuple[Path, Path]]:
    runs = []
    for (video, gt, _), lines in zip(clips, detections):
        subprocess.run([sys.executable, "-m", "effdet", "track", str(video), "--detections", str(lines), "--no-images",
                        "--output", str(out), "--quiet", *flags], check=True, stdout=subprocess.DEVNULL)
        runs.append((gt, out / (video.stem + ".txt")))
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", help="a detector trained on the demo shapes (effdet data demo)")
    parser.add_argument("--predict-flags", default="", help="extra effdet predict flags, e.g. '--device cuda'")
    parser.add_argument("--training-set", action="store_true",
                        help="only write a COCO training set of other synthetic clips (for --weights)")
    args = parser.parse_args(argv)
    if args.training_set:
        write_training_set(args.output, args.seed)
        return
    clips = make_clips(args.output, args.clips, args.frames, args.seed)
    sources = {"ground truth + noise": [noisy for _, _, noisy in clips]}
    if args.weights:
        predicted = args.output / "predicted"
        subprocess.run([sys.executable, "-m", "effdet", "predict", "--weights", args.weights, "--no-images",
                        "--score-threshold", "0.1", "--output", str(predicted), "--quiet",
                        *args.predict_flags.split(), *(str(v) for v, _, _ in clips)], check=True)
        sources["detector " + Path(args.weights).name] = [predicted / (v.stem + ".jsonl") for v, _, _ in clips]
    print(f"{len(clips)} clips x {args.frames} frames, {SIZE[1]}x{SIZE[0]}, seed {args.seed}\n")
    print("| detections | tracker | HOTA | MOTA | IDF1 | ID switches | FP | FN (misses) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for source, files in sources.items():
        for name, flags in TRACKERS.items():
            folder = args.output / "tracks" / f"{source.split()[0]}_{len(flags) and flags[-1]}"
            t = score(track_all(clips, files, folder, flags))
            print(f"| {source} | {name} | {100 * t['HOTA']:.1f} | {100 * t['MOTA']:.1f} | {100 * t['IDF1']:.1f} | "
                  f"{int(t['IDSW'])} | {int(t['FP'])} | {int(t['FN'])} |")


if __name__ == "__main__":
    main()
