"""effdet predict on videos, cameras and streams (effdet.inference.video): an annotated video with
the source's frame count, rate and size, one JSON line per frame, bad videos and undecodable
frames skipped and counted, inputs never overwritten, streams ending cleanly; and --slice."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from effdet.cli.main import main as effdet
from effdet.data.images import OUTPUT_MARKER
from effdet.inference.predictor import Predictor
from effdet.inference.run import InferenceError, run_inference
from effdet.inference.video import VideoSource, run_video, split_sources, stream_name, stream_source
from tests.test_infer import weights  # noqa: F401  (fixture: a tiny random checkpoint, classes NAMES)

NAMES = ["circle", "square", "triangle", "star"]
CATEGORY_IDS = [1, 3, 7, 12]
FRAMES, FPS, HEIGHT, WIDTH = 10, 10.0, 96, 128


@pytest.fixture(scope="module")
def predictor(weights: Path) -> Predictor:
    return Predictor.from_checkpoint(weights, batch_size=4)


def _frame(index: int) -> np.ndarray:
    """BGR frame: a grey background, a red disc moving right, a blue square moving down."""
    frame = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    cv2.circle(frame, (15 + 9 * index, 30), 12, (40, 40, 230), -1)
    cv2.rectangle(frame, (80, 10 + 6 * index), (105, 35 + 6 * index), (220, 60, 20), -1)
    return frame


def write_video(path: Path, fourcc: str = "mp4v", frames: int = FRAMES) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for index in range(frames):
        writer.write(_frame(index))
    writer.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("videos") / "clip.mp4")


def _video_info(path: Path) -> tuple[int, float, int, int]:
    """(frames actually decoded, fps, width, height) of a video file."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    fps, width, height = (capture.get(p) for p in (cv2.CAP_PROP_FPS, cv2.CAP_PROP_FRAME_WIDTH,
                                                   cv2.CAP_PROP_FRAME_HEIGHT))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count, fps, int(width), int(height)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_video_gives_annotated_video_and_json_lines(weights: Path, video: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert effdet(["predict", "--weights", str(weights), str(video), "--output", str(out), "--score-threshold", "0.3",
                   "--batch-size", "4", "--quiet"]) == 0
    assert _video_info(out / "clip.mp4") == (FRAMES, FPS, WIDTH, HEIGHT)
    records = _lines(out / "clip.jsonl")
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert [r["time"] for r in records] == pytest.approx([i / FPS for i in range(FRAMES)])
    detections = [d for r in records for d in r["detections"]]
    assert detections, "the tiny model should detect something at threshold 0.3"
    for d in detections:
        assert set(d) == {"bbox", "score", "category_id", "class_name"}
        x, y, w, h = d["bbox"]
        assert -0.01 <= x and -0.01 <= y and w >= 0 and h >= 0 and x + w <= WIDTH + 0.01 and y + h <= HEIGHT + 0.01
        assert 0.3 <= d["score"] <= 1 and NAMES[CATEGORY_IDS.index(d["category_id"])] == d["class_name"]
    stdout = capsys.readouterr().out
    assert f"1 video(s) ({FRAMES} frames), {len(detections)} detection(s)" in stdout
    assert str(out / "clip.mp4") in stdout and str(out / "clip.jsonl") in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted([OUTPUT_MARKER, "clip.jsonl", "clip.mp4"])  # no temporaries


def test_folder_of_images_videos_and_broken_files(weights: Path, video: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "clip.mov").write_bytes(video.read_bytes())  # an mp4 stream under a .mov name
    cv2.imwrite(str(folder / "frame.png"), _frame(3))
    (folder / "broken.mkv").write_bytes(b"not a video")
    write_video(folder / "mj.avi", "MJPG", frames=4)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="broken.mkv"):
        assert effdet(["predict", "--weights", str(weights), str(folder), "--output", str(out), "--quiet"]) == 0
    assert "1 image(s), 2 video(s) (14 frames)" in capsys.readouterr().out
    assert (out / "frame.png").is_file() and (out / "sub" / "clip.mp4").is_file() and (out / "mj.mp4").is_file()
    assert len(_lines(out / "sub" / "clip.jsonl")) == FRAMES and len(_lines(out / "mj.jsonl")) == 4
    # a second run over a folder that holds the first run's output does not read its videos back
    _, videos = split_sources([tmp_path])
    assert sorted(v.path.name for v in videos) == ["broken.mkv", "clip.mov", "mj.avi"]


def test_undecodable_frame_is_skipped_and_counted(weights: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """An MJPG video whose 5th frame's JPEG data is wiped: 9 frames out, frame 4 named once."""
    data = bytearray(write_video(tmp_path / "mj.avi", "MJPG").read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]  # JPEG starts
    assert len(starts) == FRAMES
    data[starts[4]:starts[4] + 300] = bytes(300)
    (tmp_path / "bad.avi").write_bytes(data)
    with pytest.warns(UserWarning, match="skipped frame 4 of .*bad.avi"):
        assert effdet(["predict", "--weights", str(weights), str(tmp_path / "bad.avi"), "--output",
                       str(tmp_path / "out"), "--quiet"]) == 0
    assert "1 undecodable frame(s) skipped" in capsys.readouterr().out
    assert [r["frame"] for r in _lines(tmp_path / "out" / "bad.jsonl")] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert _video_info(tmp_path / "out" / "bad.mp4")[0] == FRAMES - 1


def test_output_folder_holding_the_video_is_refused(weights: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    source = write_video(tmp_path / "clip.mp4")
    before = source.read_bytes()
    assert effdet(["predict", "--weights", str(weights), str(source), "--output", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("effdet predict: error: ") and "would replace the input" in err and "clip.mp4" in err
    assert source.read_bytes() == before and not (tmp_path / "clip.jsonl").exists()


def test_no_images_and_max_frames(weights: Path, video: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert effdet(["predict", "--weights", str(weights), str(video), "--output", str(out), "--no-images",
                   "--max-frames", "4", "--quiet"]) == 0
    assert not (out / "clip.mp4").exists() and len(_lines(out / "clip.jsonl")) == 4


def test_sliced_inference_on_images_and_frames(weights: Path, video: Path, tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "big.png"), cv2.resize(_frame(2), (600, 450)))
    out = tmp_path / "out"
    assert effdet(["predict", "--weights", str(weights), str(tmp_path / "big.png"), str(video), "--output", str(out),
                   "--json", str(tmp_path / "dets.json"), "--slice", "256", "--slice-overlap", "0.25",
                   "--max-frames", "2", "--quiet"]) == 0
    entries = json.loads((tmp_path / "dets.json").read_text())
    assert all(e["bbox"][0] + e["bbox"][2] <= 600.01 and e["bbox"][1] + e["bbox"][3] <= 450.01 for e in entries)
    assert len(_lines(out / "clip.jsonl")) == 2 and _video_info(out / "clip.mp4")[0] == 2


def test_live_source_ends_cleanly(predictor: Predictor, tmp_path: Path, video: Path) -> None:
    """A stream that stops delivering frames, and Ctrl-C during a camera run, both end with
    complete files holding what was processed (times: seconds since the first frame)."""
    live = VideoSource(str(video), "a stream", live=True)
    result = run_video(predictor, live, tmp_path / "s.mp4", tmp_path / "s.jsonl", CATEGORY_IDS, NAMES, 4,
                       progress=False)
    assert result.frames == FRAMES and not result.failed_frames
    times = [r["time"] for r in _lines(tmp_path / "s.jsonl")]
    assert times == sorted(times) and times[0] >= 0

    calls = []

    def interrupted(frames: list[np.ndarray]) -> list[dict]:
        calls.append(len(frames))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return predictor(frames)

    with pytest.warns(UserWarning, match="stopped by Ctrl-C after 4 frames"):
        result = run_video(interrupted, live, tmp_path / "c.mp4", tmp_path / "c.jsonl", CATEGORY_IDS, NAMES, 4,
                           progress=False)
    assert result.frames == 4 and len(_lines(tmp_path / "c.jsonl")) == 4 and _video_info(tmp_path / "c.mp4")[0] == 4
    # a video file interrupted by Ctrl-C leaves no partial output
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        run_video(interrupted, VideoSource(str(video), str(video), live=False, path=video), tmp_path / "f.mp4",
                  tmp_path / "f.jsonl", CATEGORY_IDS, NAMES, 4, progress=False)
    assert not (tmp_path / "f.mp4").exists() and not (tmp_path / "f.jsonl").exists()
    assert not list(tmp_path.glob(".f.*"))  # temporaries removed


def test_source_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    camera = stream_source("0")
    assert camera is not None and camera.target == 0 and camera.live and stream_name(camera) == "camera0"
    url = stream_source("rtsp://user:pw@cam.local:554/live/main?tcp")
    assert url is not None and url.target.startswith("rtsp://user:pw@")
    assert stream_name(url) == "cam.local_554_live_main"
    assert url.label == "stream rtsp://cam.local:554/live/main?tcp"  # no password in messages
    assert stream_source("photo.jpg") is None and stream_source("file:///x.mp4") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "0").write_bytes(b"")  # an existing file named 0 is a file, not camera 0
    assert stream_source("0") is None


def test_camera_that_cannot_be_opened_is_skipped(predictor: Predictor, video: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="cannot open camera 97"):
        summary = run_inference(predictor, ["97", video], tmp_path / "out", progress=False)
    assert len(summary.skipped) == 1 and len(summary.videos) == 1
    with pytest.raises(InferenceError, match="no image files found"):  # the output folder is not read as input
        run_inference(predictor, [tmp_path], tmp_path / "out2", progress=False)


def test_nothing_readable_is_an_error_and_keeps_the_old_json(weights: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """Only a camera that does not open and a file that is no image: exit 2, and the previous
    --json (and output folder) stay as they were instead of becoming [] and an empty folder."""
    (tmp_path / "broken.jpg").write_text("not an image")
    old = tmp_path / "old.json"
    old.write_text('[{"image_id": 1}]')
    out = tmp_path / "out"
    assert effdet(["predict", "--weights", str(weights), "97", str(tmp_path / "broken.jpg"), "--json", str(old),
                   "--output", str(out), "--quiet", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("effdet predict: error: nothing could be read: 2 source(s)") and "old.json" in err
    assert len(err.strip().splitlines()) == 1
    assert old.read_text() == '[{"image_id": 1}]' and not out.exists()


def test_camera_index_is_ascii_digits_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture, weights: Path) -> None:
    """'²' and '٣' pass str.isdigit() but are no camera index (int('²') fails): they are paths."""
    monkeypatch.chdir(tmp_path)
    assert stream_source("²") is None and stream_source("٣") is None and stream_source("12").target == 12
    assert effdet(["predict", "--weights", str(weights), "²", "--quiet", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "'²' is not an existing file or folder" in err and len(err.strip().splitlines()) == 1
