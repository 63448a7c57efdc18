"""The ByteTrack tracker alone (effdet.inference.tracking): Kalman filter, association, the two
score bands, tentative tracks, the occlusion buffer, identities of crossing objects, settings."""

from __future__ import annotations

import numpy as np
import pytest

from effdet.inference.tracking import (KalmanBoxFilter, Tracker, TrackerSettings, TrackerSettingsError, associate,
                                       box_iou, mot_line, xyah_to_xyxy, xyxy_to_xyah)


def _box(cx: float, cy: float, size: float = 20.0) -> list[float]:
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def _ids(tracks: list) -> dict[int, int]:
    """detection index -> track id."""
    return {t.detection: t.track_id for t in tracks}


def test_box_conversions_round_trip_and_iou_golden_values() -> None:
    boxes = np.array([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 1.0, 3.0]])
    xyah = xyxy_to_xyah(boxes)
    np.testing.assert_allclose(xyah[0], [30.0, 30.0, 2.0, 20.0])
    np.testing.assert_allclose(xyah_to_xyxy(xyah), boxes)
    a, b = np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([[5.0, 0.0, 15.0, 10.0], [20, 20, 30, 30], [0, 0, 0, 0]])
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0.0, 0.0]])
    assert box_iou(a, np.zeros((0, 4))).shape == (1, 0)


def test_kalman_filter_learns_a_constant_velocity() -> None:
    kalman = KalmanBoxFilter()
    mean, cov = kalman.initiate(np.array([100.0, 50.0, 1.0, 20.0]))
    for step in range(1, 15):
        mean, cov = kalman.predict(mean[None], cov[None])
        mean, cov = mean[0], cov[0]
        mean, cov = kalman.update(mean, cov, np.array([100.0 + 4 * step, 50.0 - 2 * step, 1.0, 20.0]))
    predicted, _ = kalman.predict(mean[None], cov[None])
    np.testing.assert_allclose(predicted[0, :4], [100.0 + 4 * 15, 50.0 - 2 * 15, 1.0, 20.0], atol=0.5)
    np.testing.assert_allclose(predicted[0, 4:6], [4.0, -2.0], atol=0.2)
    assert np.all(np.linalg.eigvalsh(cov) > 0)  # stays a covariance


def test_associate_is_optimal_and_respects_the_threshold() -> None:
    # greedy would give row 0 column 0 (0.9) and leave row 1 with 0.1; the optimum pairs 0-1 and 1-0
    similarity = np.array([[0.9, 0.8], [0.85, 0.1]])
    pairs, rows, cols = associate(similarity, 0.2)
    assert pairs == [(0, 1), (1, 0)] and rows == [] and cols == []
    pairs, rows, cols = associate(np.array([[0.15, 0.0], [0.0, 0.5]]), 0.2)
    assert pairs == [(1, 1)] and rows == [0] and cols == [0]
    assert associate(np.zeros((0, 3)), 0.2) == ([], [], [0, 1, 2])


def test_first_frame_tracks_are_confirmed_later_ones_after_a_second_match() -> None:
    tracker = Tracker()
    tracks = tracker.update([_box(50, 50)], [0.9], [0])
    assert [(t.track_id, t.detection, t.label) for t in tracks] == [(1, 0, 0)]
    tracks = tracker.update([_box(52, 50), _box(150, 80)], [0.9, 0.9], [0, 2])
    assert _ids(tracks) == {0: 1}  # the new object is tentative in its first frame
    tracks = tracker.update([_box(54, 50), _box(152, 80)], [0.9, 0.9], [0, 2])
    assert _ids(tracks) == {0: 1, 1: 2} and tracks[1].label == 2
    # a detection seen in one frame only never gets an id (nor uses one up)
    tracker.update([_box(56, 50), _box(152, 80), _box(300, 300)], [0.9, 0.9, 0.9], [0, 2, 1])
    tracks = tracker.update([_box(58, 50), _box(152, 80), _box(400, 20)], [0.9, 0.9, 0.9], [0, 2, 1])
    tracks = tracker.update([_box(60, 50), _box(152, 80), _box(400, 20)], [0.9, 0.9, 0.9], [0, 2, 1])
    assert _ids(tracks) == {0: 1, 1: 2, 2: 3}


def test_low_score_detections_continue_tracks_but_never_start_them() -> None:
    tracker = Tracker()
    tracker.update([_box(50, 50)], [0.9], [0])
    tracks = tracker.update([_box(53, 50)], [0.3], [0])  # occluded: low score, still the same object
    assert _ids(tracks) == {0: 1} and tracks[0].score == pytest.approx(0.3)
    for _ in range(3):  # a low-scored object alone never becomes a track
        tracks = tracker.update([_box(53, 50), _box(200, 200)], [0.3, 0.3], [0, 0])
    assert _ids(tracks) == {0: 1}
    below = tracker.update([_box(56, 50)], [0.05], [0])  # under low_threshold: ignored
    assert below == []


def test_without_the_low_band_an_occluded_object_loses_its_detection() -> None:
    tracker = Tracker(TrackerSettings(low_threshold=0.5))
    tracker.update([_box(50, 50)], [0.9], [0])
    assert tracker.update([_box(53, 50)], [0.3], [0]) == []


def test_occlusion_within_the_buffer_keeps_the_id_longer_starts_a_new_one() -> None:
    def run(gap: int, buffer: int) -> int:
        tracker = Tracker(TrackerSettings(track_buffer=buffer))
        for step in range(5):
            tracker.update([_box(50 + 3 * step, 50)], [0.9], [0])
        for step in range(5, 5 + gap):
            tracker.update(np.zeros((0, 4)), [], [])
        step = 5 + gap
        tracker.update([_box(50 + 3 * step, 50)], [0.9], [0])
        tracks = tracker.update([_box(50 + 3 * (step + 1), 50)], [0.9], [0])
        return tracks[0].track_id

    assert run(gap=10, buffer=30) == 1  # the Kalman prediction carried it through the gap
    assert run(gap=10, buffer=5) == 2


def test_crossing_objects_keep_their_ids() -> None:
    """Two objects crossing at right angles, one passing in front of the other at equal size:
    the motion model keeps each id through the overlap (no switch)."""
    tracker = Tracker()
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    for step in range(40):
        a = _box(20 + 5 * step, 120, 30)  # moving right
        b = _box(120, 20 + 5 * step, 30)  # moving down; they meet at step 20
        overlap = box_iou(np.array([a]), np.array([b]))[0, 0]
        scores = [0.9, 0.4 if overlap > 0.3 else 0.9]  # the one behind scores low while covered
        for t in tracker.update([a, b], scores, [0, 1]):
            seen[t.detection].add(t.track_id)
    assert seen == {0: {1}, 1: {2}}


def test_crossing_head_on_keeps_ids_by_motion() -> None:
    tracker = Tracker()
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    for step in range(40):
        boxes = [_box(20 + 6 * step, 100, 30), _box(260 - 6 * step, 104, 30)]
        for t in tracker.update(boxes, [0.9, 0.8], [0, 0]):
            seen[t.detection].add(t.track_id)
    assert seen == {0: {1}, 1: {2}}


def test_tiny_boxes_are_tracked_but_not_reported() -> None:
    tracker = Tracker(TrackerSettings(min_box_area=50))
    assert tracker.update([[0, 0, 5, 5], _box(50, 50)], [0.9, 0.9], [0, 0])[0].detection == 1
    assert tracker.active_tracks == 2


def test_update_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match="2 boxes, 1 scores and 2 labels"):
        Tracker().update([_box(1, 1), _box(5, 5)], [0.9], [0, 0])


@pytest.mark.parametrize("values, message", [
    ({"high_threshold": 1.5}, "high_threshold must be in \\[0, 1\\]"),
    ({"low_threshold": 0.7, "high_threshold": 0.5}, "low_threshold must not exceed high_threshold \\(0.5\\), got 0.7"),
    ({"track_buffer": -1}, "track_buffer must be a whole number"),
    ({"track_buffer": 2.5}, "track_buffer must be a whole number"),
    ({"min_box_area": -3}, "min_box_area must be >= 0 \\(pixels\\^2\\), got -3"),
    ({"match_iou": True}, "match_iou must be in \\[0, 1\\], got True"),
    ({"fuse_score": "yes"}, "fuse_score must be true or false"),
    ({"buffer": 3}, "unknown tracker setting\\(s\\) buffer; known: fuse_score, high_threshold"),
])
def test_settings_are_checked(values: dict, message: str) -> None:
    with pytest.raises(TrackerSettingsError, match=message):
        TrackerSettings.from_mapping(values)


def test_mot_line_format() -> None:
    assert mot_line(3, 7, (10.0, 20.0, 40.5, 60.0), 0.87654) == "3,7,10.00,20.00,30.50,40.00,0.8765,-1,-1,-1\n"
