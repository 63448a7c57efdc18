"""``effdet data anchors``: anchor coverage of a data set's boxes (shape-only IoU, per level) and a
better ``anchor_scale`` / ``aspect_ratios``, printed as overrides that ``effdet train`` reads back."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from effdet.cli.main import main as effdet_main
from effdet.config import get_config, parse_overrides, replace
from effdet.data import make_synthetic_coco
from effdet.analysis.anchor_fit import (AnchorSettings, anchor_coverage, anchor_sizes, best_shape_iou, coverage,
                                      format_override, grid_fit, level_anchor_shapes, level_strides, load_box_sizes,
                                      suggest_anchors)
from effdet.engine.train_config import load_run_config
from effdet.modeling.anchors import AnchorGenerator

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")

# two levels, one square anchor each: P3 16 x 16, P4 32 x 32 at a 64 px input
TWO_LEVELS = replace(get_config("efficientdet_d0"), {"image_size": 64, "min_level": 3, "max_level": 4, "num_scales": 1,
                                                     "aspect_ratios": [[1.0, 1.0]], "anchor_scale": 2.0})


def write_coco(path: Path, boxes: list[list[float]], image_wh: tuple[int, int] = (128, 128),
               crowd: list[list[float]] = ()) -> Path:
    """A COCO file with one image of ``image_wh`` (w, h) per box (xywh), plus crowd boxes on image 1."""
    images = [{"id": i + 1, "file_name": f"{i + 1}.jpg", "width": image_wh[0], "height": image_wh[1]}
              for i in range(len(boxes))]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1 + i % 2, "bbox": b, "iscrowd": 0}
            for i, b in enumerate(boxes)]
    anns += [{"id": 1000 + i, "image_id": 1, "category_id": 1, "bbox": b, "iscrowd": 1} for i, b in enumerate(crowd)]
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    return path


def small_boxes(n: int = 60, low: float = 8.0, high: float = 12.0) -> np.ndarray:
    """(n, 2) boxes of 8-12 px, a fixed draw."""
    return np.random.default_rng(0).uniform(low, high, size=(n, 2))


def test_shape_iou_exact_values() -> None:
    boxes = np.array([[8.0, 8.0], [16.0, 8.0], [4.0, 4.0]])
    anchors = np.array([[8.0, 8.0], [8.0, 16.0]])
    best, index = best_shape_iou(boxes, anchors, chunk=2)  # chunks of 2 boxes: same as one step
    # (16, 8) vs (8, 8): 64 / 128 = 0.5; vs (8, 16): 64 / 192; (4, 4) vs (8, 8): 16 / 64
    np.testing.assert_allclose(best, [1.0, 0.5, 0.25])
    assert index.tolist() == [0, 0, 0]
    best2, share = anchor_coverage(boxes, anchors)
    np.testing.assert_allclose(best2, best)
    assert share == pytest.approx(2 / 3)  # IoU exactly 0.5 counts as covered


def test_per_level_assignment_exact() -> None:
    shapes = level_anchor_shapes(TWO_LEVELS)
    assert {lv: s.tolist() for lv, s in shapes.items()} == {3: [[16.0, 16.0]], 4: [[32.0, 32.0]]}
    boxes = np.array([[16.0, 16.0], [30.0, 30.0], [22.0, 22.0], [8.0, 8.0], [100.0, 100.0]])
    fit = coverage(boxes, shapes)
    expected = [1.0, 900 / 1024, 256 / 484, 64 / 256, 1024 / 10000]  # 22 px: P3 0.529 beats P4 0.473
    np.testing.assert_allclose(fit.best_iou, expected)
    assert fit.level.tolist() == [3, 4, 3, 3, 4]
    assert fit.per_level() == [(3, 3, 2), (4, 2, 1)]
    assert fit.share == pytest.approx(3 / 5) and fit.mean_iou == pytest.approx(np.mean(expected))
    assert fit.anchor_range == (16.0, 32.0)


@pytest.mark.parametrize("image_size", [(512, 512), (320, 448)])
def test_level_shapes_are_the_generators(image_size: tuple[int, int]) -> None:
    cfg = get_config("efficientdet_d0")
    shapes = level_anchor_shapes(cfg, image_size)
    generator = AnchorGenerator(cfg.min_level, cfg.max_level, cfg.num_scales, cfg.aspect_ratios, cfg.anchor_scale)
    every = anchor_sizes(generator(image_size))  # float32 corners: sides may differ in the 3rd decimal
    ours = np.concatenate(list(shapes.values()))
    gap = np.abs(every[:, None, :] - ours[None, :, :]).max(-1)
    assert gap.min(1).max() < 0.01 and gap.min(0).max() < 0.01
    assert sorted(shapes) == [3, 4, 5, 6, 7] and all(len(s) == cfg.num_anchors for s in shapes.values())


def test_suggestion_covers_small_boxes_that_the_defaults_miss() -> None:
    cfg = get_config("efficientdet_d0")  # smallest anchor 32 px at 512: boxes of 8-12 px have IoU <= 0.14
    boxes = small_boxes()
    result = suggest_anchors(boxes, cfg)
    assert result.current == AnchorSettings(4.0, cfg.aspect_ratios)
    assert result.current_fit.share == 0.0 and result.current_fit.mean_iou < 0.15
    assert result.changed and result.suggested.anchor_scale <= 1.5
    assert result.suggested_fit.share >= 0.95 and result.suggested_fit.mean_iou > 0.7  # shape-only
    assert result.current_grid[0] == 0.0 and result.suggested_grid[0] > 0.6  # the search's own criterion
    assert len(result.suggested.aspect_ratios) == len(cfg.aspect_ratios)  # the heads keep their shape
    assert suggest_anchors(boxes, cfg).suggested == result.suggested  # deterministic


def test_anchors_that_fit_already_are_kept() -> None:
    cfg = get_config("efficientdet_d0")
    boxes = np.concatenate(list(level_anchor_shapes(cfg).values()))  # exactly the anchors
    result = suggest_anchors(boxes, cfg)
    assert not result.changed and result.current_fit.share == 1.0


def test_search_sample_is_fixed_and_capped() -> None:
    cfg = get_config("efficientdet_d0")
    boxes = np.random.default_rng(1).uniform(4, 300, size=(5000, 2))
    a = suggest_anchors(boxes, cfg, max_boxes=500)
    b = suggest_anchors(boxes, cfg, max_boxes=500)
    assert a.searched_boxes == 500 and a.suggested == b.suggested
    assert len(a.suggested_fit.best_iou) == 5000  # the figures use every box
    assert a.suggested_fit.share >= a.current_fit.share


def test_boxes_are_scaled_by_the_letterbox_and_crowds_left_out(tmp_path: Path) -> None:
    ann = write_coco(tmp_path / "a.json", [[0, 0, 32, 16], [10, 10, 64, 64]], image_wh=(256, 128),
                     crowd=[[0, 0, 100, 100]])
    boxes = load_box_sizes(ann, (128, 128))  # scale min(128 / 128, 128 / 256) = 0.5
    np.testing.assert_allclose(boxes.wh, [[16, 8], [32, 32]])
    assert (boxes.num_images, boxes.num_classes, boxes.num_degenerate) == (2, 2, 0)


def _suggested_overrides(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    return shlex.split(lines[lines.index("suggested overrides (effdet train takes them as they are):") + 1])


def test_command_output_and_overrides_round_trip_into_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(2)
    boxes = [[float(x), float(y), float(w), float(h)] for x, y, (w, h) in
             zip(rng.uniform(0, 90, 40), rng.uniform(0, 90, 40), rng.uniform(5, 10, size=(40, 2)))]
    ann = write_coco(tmp_path / "small.json", boxes)
    fragment = tmp_path / "out" / "anchors.yaml"
    code = effdet_main(["data", "anchors", str(ann), "--config", DEMO, "--output", str(fragment), "model.max_level=4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "40 boxes (non-crowd) in 40 images, 2 classes" in out and "128x128 input" in out
    assert "shape-only IoU" in out and "P3 (stride 8)" in out and "P4 (stride 16)" in out and "P5" not in out
    overrides = _suggested_overrides(out)
    assert overrides[0] == "model.max_level=4"  # what the fit assumed comes along
    run = load_run_config(DEMO, parse_overrides(overrides))
    # what effdet train builds from the printed overrides is what was scored
    cfg = load_run_config(DEMO, {"model.max_level": 4}).model
    expected = suggest_anchors(load_box_sizes(ann, (128, 128)).wh, cfg)
    assert expected.changed and run.model.max_level == 4
    assert (run.model.anchor_scale, run.model.aspect_ratios) == (expected.suggested.anchor_scale,
                                                                 expected.suggested.aspect_ratios)
    covered = coverage(load_box_sizes(ann, (128, 128)).wh, level_anchor_shapes(run.model))
    assert f"{100 * covered.share:.1f}% ({int(covered.covered.sum())}/40)" in out
    assert f"{100 * expected.current_fit.share:.1f}% (" in out
    # the recipe fragment reads back to the same anchors
    assert f"wrote {fragment}" in out
    text = fragment.read_text()
    assert text.startswith("# Anchors suggested by: effdet data anchors")
    frag = load_run_config(str(fragment)).model
    assert (frag.anchor_scale, frag.aspect_ratios, frag.max_level) == (run.model.anchor_scale,
                                                                       run.model.aspect_ratios, 4)
    assert yaml.safe_load(text)["model"]["max_level"] == 4


@pytest.mark.parametrize("value", [1.25, 256, [256, 384], [[1.0, 1.0], [1.41, 0.71]], "none", "1.0", "a b", None])
def test_printed_overrides_parse_back_to_their_values(value) -> None:
    assert parse_overrides(shlex.split(format_override("model.x", value))) == {"model.x": value}


def test_image_size_flag_and_model_source(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ann = write_coco(tmp_path / "a.json", [[0, 0, 12, 12]] * 3, image_wh=(256, 256))
    assert effdet_main(["data", "anchors", str(ann), "--model", "efficientdet_d0", "--image-size", "256"]) == 0
    out = capsys.readouterr().out
    assert "256x256 input" in out and "P7 (stride 128)" in out
    overrides = _suggested_overrides(out)  # 12 px boxes, smallest anchor 32 px: a smaller scale
    assert overrides[0] == "model.image_size=256"
    assert "effdet train --model efficientdet_d0 ... model.image_size=256" in out


def test_synthetic_small_object_option(tmp_path: Path) -> None:
    data = make_synthetic_coco(tmp_path / "small", num_train=12, num_val=1, image_size=(128, 128), seed=3,
                               size_range=(0.06, 0.14), objects_per_image=(4, 8))
    wh = load_box_sizes(data.train_annotations, (128, 128)).wh
    assert len(wh) >= 12 * 4 * 0.5 and wh.max() <= 0.14 * 128 + 1
    with pytest.raises(ValueError, match="size_range"):
        make_synthetic_coco(tmp_path / "bad", size_range=(0.5, 0.2))


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith("effdet data: error: ") and "Traceback" not in err, err
    return err.splitlines()[-1]


def test_missing_malformed_and_empty_annotation_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert effdet_main(["data", "anchors", str(tmp_path / "missing.json")]) == 2
    assert "missing.json does not exist" in one_error_line(capsys)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    assert effdet_main(["data", "anchors", str(bad)]) == 2
    assert "bad.json is not valid JSON" in one_error_line(capsys)
    empty = write_coco(tmp_path / "empty.json", [])
    assert effdet_main(["data", "anchors", str(empty)]) == 2
    assert "no non-crowd boxes" in one_error_line(capsys)
    ann = write_coco(tmp_path / "a.json", [[0, 0, 10, 10]])
    assert effdet_main(["data", "anchors", str(ann), "model.anchor_scael=2"]) == 2
    assert "model has no field 'anchor_scael'" in one_error_line(capsys)
    assert effdet_main(["data", "anchors", str(ann), "--image-size", "100"]) == 2
    assert "--image-size 100: each side must be a positive multiple of" in one_error_line(capsys)


def test_help_answers_without_importing_torch() -> None:
    code = ("import sys, contextlib, io\n"
            "from effdet.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try: main(['data', 'anchors', '--help'])\n"
            "    except SystemExit as e: assert e.code == 0\n"
            "print('torch' in sys.modules, 'shape-only IoU' in out.getvalue())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True"]


def test_grid_fit_exact_values() -> None:
    """An 8x8 box against an 8x8 anchor of stride 8: centred (1 offset) IoU 1; at the 2x2 offsets
    (+-2 px per axis) the overlap is 6x6, IoU 36 / 92; a 12x12 anchor there overlaps 8x8, IoU 64 / 144."""
    box = np.array([[8.0, 8.0]])
    assert grid_fit(box, {3: np.array([[8.0, 8.0]])}, {3: 8.0}, positions=1) == (1.0, 1.0)
    share, mean = grid_fit(box, {3: np.array([[8.0, 8.0]])}, {3: 8.0}, positions=2)
    assert share == 0.0 and mean == pytest.approx(36 / 92)
    share, mean = grid_fit(box, {3: np.array([[8.0, 8.0], [12.0, 12.0]])}, {3: 8.0}, positions=2)
    assert share == 0.0 and mean == pytest.approx(64 / 144)
    # the coarser level's larger anchor sits at its own offsets (+-4 px at stride 16)
    share, mean = grid_fit(box, {3: np.array([[8.0, 8.0]]), 4: np.array([[8.0, 8.0]])}, {3: 8.0, 4: 16.0}, 2)
    assert mean == pytest.approx(36 / 92)
    assert level_strides(get_config("efficientdet_lite0")) == {3: 8.0, 4: 16.0, 5: 32.0, 6: 64.0, 7: 320 / 3}


def test_auto_anchors_applies_the_fit_only_when_the_defaults_cover_poorly(tmp_path) -> None:
    """Boxes of 6-10 px at 256 px are poorly covered by Lite0's anchors (24 px and up): the fit is
    applied and said; boxes the defaults cover keep the defaults."""
    import json

    from effdet.config import resolve
    from effdet.analysis.anchor_fit import AUTO_ANCHOR_COVERAGE, auto_anchors

    def annotations(sizes: list[int]) -> Path:
        images = [{"id": i + 1, "file_name": f"{i}.jpg", "width": 256, "height": 256} for i in range(len(sizes))]
        anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [50, 50, s, s], "area": s * s, "iscrowd": 0}
                for i, s in enumerate(sizes)]
        path = tmp_path / f"ann{len(sizes)}_{sizes[0]}.json"
        path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
        return path

    cfg = resolve("efficientdet_lite0", image_size=256)
    small, line = auto_anchors(cfg, annotations([6, 7, 8, 9, 10] * 4))
    assert small.anchor_scale < cfg.anchor_scale and "under 95%" in line and "model.anchor_scale=" in line
    same, line = auto_anchors(cfg, annotations([30, 40, 60, 90, 120] * 4))
    assert same == cfg and line.endswith("; kept") and AUTO_ANCHOR_COVERAGE == 0.95
