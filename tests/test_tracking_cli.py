"""effdet track (effdet.inference.video_tracking, effdet.cli.track): the outputs of each source
(annotated video, MOTChallenge NAME.txt, JSON lines with track_id), --detections without a
detector, --classes, tracker settings from YAML and flags, --gt metrics on a synthetic clip with
crossing objects, and the inputs it refuses (one line, exit code 2, inputs untouched)."""

from __future__ import annotations

import importlib.util
import itertools
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from effdet.cli.main import main as effdet
from effdet.cli.main import parse
from effdet.cli.track import tracker_settings
from effdet.config import PostprocessSettings
from effdet.data.images import OUTPUT_MARKER
from effdet.data.synthetic import CATEGORIES
from effdet.data.synthetic_clips import plan_clip, render_clip
from effdet.evaluation.mot import read_mot_file
from effdet.inference import Predictor, Tracker, TrackerSettings, track
from effdet.inference.run import InferencePlan
from effdet.inference.video import VideoSource
from effdet.inference.video_tracking import TrackPlan, run_tracking
from tests.test_infer import weights  # noqa: F401  (fixture: a tiny random checkpoint, 4 classes)
from tests.test_predict_video import (CATEGORY_IDS, FRAMES, FPS, HEIGHT, NAMES, WIDTH, _lines, _video_info,
                                     write_video)

CLIP_FRAMES, CLIP_SIZE = 48, (96, 128)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(video, MOTChallenge ground truth, effdet predict JSON lines made from the ground truth:
    every visible object detected, scored by its visibility) of a synthetic clip with 2 pairs of
    crossing shapes."""
    folder = tmp_path_factory.mktemp("clip")
    rng = np.random.default_rng(3)
    frames, truth = render_clip(rng, plan_clip(rng, CLIP_FRAMES, CLIP_SIZE, num_pairs=2), CLIP_FRAMES, CLIP_SIZE)
    writer = cv2.VideoWriter(str(folder / "shapes.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30.0,
                             (CLIP_SIZE[1], CLIP_SIZE[0]))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    (folder / "shapes_gt.txt").write_text("".join(
        f"{g.frame},{g.track_id},{g.box[0]},{g.box[1]},{g.box[2] - g.box[0]},{g.box[3] - g.box[1]},1,{g.category_id},"
        f"{g.visibility}\n"
        for g in truth))
    names = dict(CATEGORIES)
    lines = [{"frame": f, "time": f / 30, "detections": []} for f in range(CLIP_FRAMES)]
    for g in truth:
        if g.visibility >= 0.2:
            lines[g.frame - 1]["detections"].append({
                "bbox": [g.box[0], g.box[1], g.box[2] - g.box[0], g.box[3] - g.box[1]],
                "score": round(0.3 + 0.65 * g.visibility, 3), "category_id": g.category_id,
                "class_name": names[g.category_id]})
    (folder / "detections").mkdir()
    (folder / "detections" / "shapes.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder / "shapes.mp4", folder / "shapes_gt.txt", folder / "detections" / "shapes.jsonl"


def test_detector_run_writes_video_mot_file_and_json_lines(weights: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    assert effdet(["track", str(video), "--weights", str(weights), "--output", str(out), "--score-threshold", "0.3",
                   "--high-threshold", "0.3", "--new-track-threshold", "0.3", "--batch-size", "4", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([OUTPUT_MARKER, "clip.jsonl", "clip.mp4", "clip.txt"])
    assert _video_info(out / "clip.mp4") == (FRAMES, FPS, WIDTH, HEIGHT)
    records = _lines(out / "clip.jsonl")
    assert [r["frame"] for r in records] == list(range(FRAMES))
    detections = [d for r in records for d in r["detections"]]
    assert detections and all(set(d) == {"bbox", "score", "category_id", "class_name", "track_id"}
                              for d in detections)
    assert all(d["score"] >= 0.3 for d in detections)
    mot = read_mot_file(out / "clip.txt")
    assert mot, "the tiny model's detections should form some tracks"
    # every MOT line is a tracked detection of that frame, and every tracked detection has a line
    tracked = {(r["frame"] + 1, d["track_id"]) for r in records for d in r["detections"] if d["track_id"] is not None}
    assert {(b.frame, b.track_id) for b in mot} == tracked
    for line in (out / "clip.txt").read_text().splitlines():
        assert line.endswith(",-1,-1,-1") and len(line.split(",")) == 10
    stdout = capsys.readouterr().out
    assert f"{video}: {FRAMES} frames, {len(detections)} detection(s)" in stdout
    assert str(out / "clip.txt") in stdout and str(out / "clip.mp4") in stdout


def test_detections_file_re_tracks_without_a_detector(clip: tuple[Path, Path, Path], tmp_path: Path) -> None:
    video, _, detections = clip
    out = tmp_path / "out"
    assert effdet(["track", str(video), "--detections", str(detections), "--output", str(out), "--quiet"]) == 0
    assert _video_info(out / "shapes.mp4")[0] == CLIP_FRAMES
    source, written = _lines(detections), _lines(out / "shapes.jsonl")
    assert len(written) == CLIP_FRAMES
    for before, after in zip(source, written):  # the same records, with track ids added
        assert [{k: v for k, v in d.items() if k != "track_id"} for d in after["detections"]] == before["detections"]
    ids = {d["track_id"] for r in written for d in r["detections"]} - {None}
    assert ids == set(range(1, len(ids) + 1)) and len(ids) >= 4  # ids 1..n, one per object at least


def test_no_images_does_not_need_the_video_decoded(clip: tuple[Path, Path, Path], tmp_path: Path) -> None:
    video, _, detections = clip
    out = tmp_path / "out"
    assert effdet(["track", str(video), "--detections", str(detections), "--no-images", "--output", str(out),
                   "--max-frames", "10", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([OUTPUT_MARKER, "shapes.jsonl", "shapes.txt"])
    assert len(_lines(out / "shapes.jsonl")) == 10
    assert max(b.frame for b in read_mot_file(out / "shapes.txt")) <= 10


@pytest.mark.skipif(importlib.util.find_spec("trackeval") is None,
                    reason="tracking metrics need TrackEval: pip install --no-deps trackeval tabulate")
def test_gt_prints_the_metrics_of_crossing_objects(clip: tuple[Path, Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    video, gt, detections = clip
    assert effdet(["track", str(video), "--detections", str(detections), "--gt", str(gt), "--no-images",
                   "--output", str(tmp_path), "--quiet"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith(f"{gt}: HOTA ")
    values = dict(zip(line.split()[1::2], line.split()[2::2]))
    # detections of every visible object: no identity switch through the crossings, no false positive
    assert values["IDSW"] == "0" and values["FP"] == "0" and float(values["MOTA"]) > 80
    assert values["GT_IDs"] == "4" and values["IDs"] == "4"
    # --max-frames: only the frames tracked are scored (else the rest would count as misses)
    assert effdet(["track", str(video), "--detections", str(detections), "--gt", str(gt), "--no-images",
                   "--output", str(tmp_path), "--max-frames", "12", "--quiet"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    values = dict(zip(line.split()[1::2], line.split()[2::2]))
    assert float(values["MOTA"]) > 80 and values["FP"] == "0"


def test_classes_keeps_only_those(clip: tuple[Path, Path, Path], tmp_path: Path) -> None:
    video, _, detections = clip
    kept = {d["category_id"] for r in _lines(detections) for d in r["detections"]}
    category = min(kept)
    name = dict(CATEGORIES)[max(kept)]
    assert effdet(["track", str(video), "--detections", str(detections), "--no-images", "--output", str(tmp_path),
                   "--classes", str(category), name, "--quiet"]) == 0
    written = {(d["category_id"], d["class_name"]) for r in _lines(tmp_path / "shapes.jsonl") for d in r["detections"]}
    assert {c for c, _ in written} == {category, max(kept)}


def test_tracker_settings_default_then_yaml_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "bytetrack.yaml"
    config.write_text("track_buffer: 60\nhigh_threshold: 0.4\nfuse_score: false\n")
    args = parse(["track", "v.mp4", "--detections", "d.jsonl", "--tracker", str(config), "--track-buffer", "7"])
    assert tracker_settings(args) == TrackerSettings(track_buffer=7, high_threshold=0.4, fuse_score=False)
    assert tracker_settings(parse(["track", "v.mp4", "--weights", "w.pt"])) == TrackerSettings()
    assert parse(["track", "v.mp4", "--weights", "w.pt"]).score_threshold == 0.1


@pytest.mark.parametrize("setup, message", [
    (lambda d: d.write_text('{"frame": 0, "time": 0, "detections": []}\nnot json\n'), "line 2 is not a frame record"),
    (lambda d: d.write_text('{"frame": 0, "detections": [{"bbox": [1, 2, -3, 4], "score": 0.5, "category_id": 1}]}\n'),
     "line 1 is not a frame record"),
    (lambda d: d.write_text('{"frame": 3, "detections": []}\n{"frame": 2, "detections": []}\n'),
     "line 2: frame 2 after frame 3; frames must increase"),
])
def test_bad_detections_file_is_one_line_error(clip: tuple[Path, Path, Path], tmp_path: Path, setup,
                                               message: str, capsys: pytest.CaptureFixture) -> None:
    detections = tmp_path / "bad.jsonl"
    setup(detections)
    assert effdet(["track", str(clip[0]), "--detections", str(detections), "--no-images", "--output",
                   str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("effdet track: error: --detections ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "shapes.txt").exists()


def test_outputs_never_replace_inputs(clip: tuple[Path, Path, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    video, _, detections = clip
    before = detections.read_bytes()
    # the JSON lines output would be the --detections file itself
    assert effdet(["track", str(video), "--detections", str(detections), "--output", str(detections.parent),
                   "--quiet"]) == 2
    assert "would replace the --detections input" in capsys.readouterr().err
    assert detections.read_bytes() == before
    # the MOT file would be the --gt file
    gt = tmp_path / "shapes.txt"
    gt.write_text("1,1,0,0,5,5,1,-1,-1,-1\n")
    assert effdet(["track", str(video), "--detections", str(detections), "--gt", str(gt), "--output", str(tmp_path),
                   "--quiet"]) == 2
    assert "is the --gt input" in capsys.readouterr().err and gt.read_text() == "1,1,0,0,5,5,1,-1,-1,-1\n"


@pytest.mark.parametrize("argv, message", [
    (["v.mp4"], "give --weights (a detector), or --detections FILE.jsonl"),
    (["v.mp4", "--weights", "w.pt", "--detections", "d.jsonl"], "leave out --weights"),
    (["v.mp4", "--weights", "w.pt", "--json", "r.json"], "--json and --ann are effdet predict's"),
    (["v.mp4", "--detections", "d.jsonl", "--high-threshold", "2"], "argument --high-threshold"),
])
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        effdet(["track", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_sources_without_a_video_and_bad_gt(clip: tuple[Path, Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    assert effdet(["track", str(image), "--detections", str(clip[2]), "--output", str(tmp_path / "o")]) == 2
    assert "no video, camera or stream among" in capsys.readouterr().err
    bad_gt = tmp_path / "gt.txt"
    bad_gt.write_text("1,1,0,0,5\n")
    assert effdet(["track", str(clip[0]), "--detections", str(clip[2]), "--gt", str(bad_gt), "--no-images",
                   "--output", str(tmp_path / "o2"), "--quiet"]) == 2
    assert f"--gt file {bad_gt} line 1: expected at least 7 numbers" in capsys.readouterr().err


def test_python_track_and_tracker_in_a_loop_agree(weights: Path, tmp_path: Path) -> None:
    """effdet.inference.track over a video, and a Tracker fed by a Predictor frame by frame (the
    README's loop), give the same tracks (batches of 1 frame: both see the same scores to the last bit)."""
    predictor = Predictor.from_checkpoint(weights, batch_size=1, settings=PostprocessSettings(score_threshold=0.3))
    settings = TrackerSettings(high_threshold=0.3, new_track_threshold=0.3)
    video = write_video(tmp_path / "clip.mp4")
    [result] = track(predictor, [video], tmp_path / "out", settings, progress=False)
    assert (result.frames, result.mot_path, result.video_path) == (FRAMES, tmp_path / "out" / "clip.txt",
                                                                   tmp_path / "out" / "clip.mp4")
    tracker, lines = Tracker(settings), []
    capture = cv2.VideoCapture(str(video))
    for frame_number in range(1, FRAMES + 1):
        ok, bgr = capture.read()
        assert ok
        det = predictor([cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)])[0]
        lines += [(frame_number, t.track_id, *t.box) for t in tracker.update(det["boxes"], det["scores"],
                                                                             det["labels"])]
    capture.release()
    written = [(b.frame, b.track_id, *b.box) for b in read_mot_file(result.mot_path)]
    assert lines and [line[:2] for line in lines] == [line[:2] for line in written]
    # the MOT file holds 2 decimals; with the official head initialisation a few boxes of this random
    # model also differ by up to 0.03 px between the two paths (cause not found: noted in issue 21)
    np.testing.assert_allclose([line[2:] for line in lines], [line[2:] for line in written], atol=0.05)


def test_counting_recipe_counts_the_crossings(clip: tuple[Path, Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    """docs/tracking.md's counting block, run as written on the clip's tracks, counts the objects
    whose box centre crosses the line, as the ground truth does."""
    video, gt, detections = clip
    assert effdet(["track", str(video), "--detections", str(detections), "--no-images", "--output", str(tmp_path),
                   "--quiet"]) == 0
    text = (Path(__file__).resolve().parents[1] / "docs" / "tracking.md").read_text()
    block = text.split("## Counting objects that cross a line", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    line_y = CLIP_SIZE[0] / 2
    call = 'print(count_line_crossings("runs/track/clip.jsonl", line_y=120))'
    assert call in block
    capsys.readouterr()
    namespace: dict = {}
    exec(block.replace(call, ""), namespace)  # noqa: S102 - the documented recipe itself
    counts = namespace["count_line_crossings"](str(tmp_path / "shapes.jsonl"), line_y=line_y)
    side: dict[int, bool] = {}
    crossed: dict[int, int] = {}
    for box in read_mot_file(gt):  # frame order: the ground truth's own crossings
        below = (box.box[1] + box.box[3]) / 2 > line_y
        if box.track_id in side and side[box.track_id] != below:
            crossed.setdefault(box.track_id, box.frame)
        side[box.track_id] = below
    category = {int(line.split(",")[1]): int(line.split(",")[7]) for line in gt.read_text().splitlines()}
    names = dict(CATEGORIES)
    assert crossed and counts == Counter(names[category[track_id]] for track_id in crossed)


def test_ctrl_c_ends_a_live_source_with_complete_outputs(weights: Path, tmp_path: Path) -> None:
    """Ctrl-C during a camera or stream run keeps complete files of the frames tracked; during a
    video file it leaves no partial output."""
    predictor = Predictor.from_checkpoint(weights, batch_size=4, settings=PostprocessSettings(score_threshold=0.3))
    video = write_video(tmp_path / "clip.mp4")
    batches = itertools.count(1)

    def interrupted(frames: list[np.ndarray]) -> list[dict]:  # Ctrl-C in the second batch
        if next(batches) == 2:
            raise KeyboardInterrupt
        return predictor(frames)

    live = VideoSource(str(video), "a stream", live=True)
    out = tmp_path / "out"
    plan = TrackPlan(InferencePlan([], [], [], [], [live], [Path("stream.mp4")], [out / "stream.jsonl"], out, out,
                                   None), [out / "stream.txt"])
    with pytest.warns(UserWarning, match="a stream: stopped by Ctrl-C after 4 frames"):
        [result] = run_tracking(interrupted, plan, TrackerSettings(), CATEGORY_IDS, NAMES, batch_size=4,
                                progress=False)
    assert result.frames == 4 and len(_lines(out / "stream.jsonl")) == 4 and _video_info(out / "stream.mp4")[0] == 4
    assert all(b.frame <= 4 for b in read_mot_file(out / "stream.txt"))
    batches = itertools.count(1)
    file_plan = TrackPlan(InferencePlan([], [], [], [], [VideoSource(str(video), str(video), live=False, path=video)],
                                        [Path("f.mp4")], [out / "f.jsonl"], out, out, None), [out / "f.txt"])
    with pytest.raises(KeyboardInterrupt):
        run_tracking(interrupted, file_plan, TrackerSettings(), CATEGORY_IDS, NAMES, batch_size=4, progress=False)
    assert not any((out / name).exists() for name in ("f.mp4", "f.jsonl", "f.txt"))
    assert not list(out.glob(".f.*"))  # temporaries removed


def test_sliced_detection_and_class_names_filter(weights: Path, tmp_path: Path) -> None:
    """predict's --slice works in track; --classes by name keeps only that class of the checkpoint."""
    video = write_video(tmp_path / "clip.mp4")
    argv = ["track", str(video), "--weights", str(weights), "--slice", "64", "--score-threshold", "0.3",
            "--no-images", "--max-frames", "2", "--quiet"]
    assert effdet([*argv, "--output", str(tmp_path / "all")]) == 0
    found = Counter(d["class_name"] for r in _lines(tmp_path / "all" / "clip.jsonl") for d in r["detections"])
    name = found.most_common(1)[0][0]
    other = next(n for n in NAMES if n != name)
    assert effdet([*argv, "--output", str(tmp_path / "one"), "--classes", name, other]) == 0
    records = _lines(tmp_path / "one" / "clip.jsonl")
    assert len(records) == 2
    kept = Counter(d["class_name"] for r in records for d in r["detections"])
    assert kept == Counter({n: found[n] for n in (name, other) if found[n]})
    category = CATEGORY_IDS[NAMES.index(name)]  # a category id as the JSON lines write it
    assert effdet([*argv, "--output", str(tmp_path / "id"), "--classes", str(category)]) == 0
    assert sum(len(r["detections"]) for r in _lines(tmp_path / "id" / "clip.jsonl")) == found[name]
