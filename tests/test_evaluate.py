"""COCO evaluation: perfect predictions score 1, numbers equal pycocotools run directly, the
letterbox scale and non-contiguous category ids are undone, flip TTA is mirror-consistent."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torchvision.ops import box_iou

from effdet import create_model
from effdet.modeling.anchors import AnchorGenerator, decode_boxes, encode_boxes, generate_anchors, num_anchors_per_level
from effdet.config import resolve
from effdet.data import CocoDetection, eval_transform, make_synthetic_coco
from effdet.evaluation.coco import checkpoint_category_ids, coco_stats, evaluate_coco, format_per_class, format_summary
from effdet.inference.predictor import detect_batch, mirror_outputs
from effdet.modeling.postprocess import PostprocessSettings

SIZE = 128


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> CocoDetection:
    """5 images of 96 x 160 px (letterbox scale 0.8), category ids 1, 3, 7, 12."""
    data = make_synthetic_coco(tmp_path_factory.mktemp("demo") / "d", num_train=1, num_val=5, image_size=(96, 160),
                               seed=3)
    return CocoDetection(data.val_annotations, data.val_images, transform=eval_transform((SIZE, SIZE)))


class OracleModel(nn.Module):
    """Stands in for EfficientDet: for each batch (in dataset order) it outputs the ground truth,
    encoded on each box's best free anchor with a high class logit, optionally with noise and
    false positives. Everything else gets logit -8 (score < 0.001)."""

    def __init__(self, dataset: CocoDetection, batch_size: int, box_noise: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        self.config = resolve("efficientdet_d0", num_classes=dataset.num_classes, image_size=SIZE)
        self.anchors = AnchorGenerator()  # EfficientDet-D0's, as a model owns them
        self.grid = self.anchors((SIZE, SIZE))
        self.targets = [dataset[i][1] for i in range(len(dataset))]
        self.batch_size, self.box_noise = batch_size, box_noise
        self.rng = np.random.default_rng(seed)
        self.calls = 0
        self.weight = nn.Parameter(torch.zeros(1))  # so that the module has a device

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n, m, c = images.shape[0], self.grid.shape[0], self.config.num_classes
        targets = self.targets[self.calls * self.batch_size:self.calls * self.batch_size + n]
        self.calls += 1
        logits = torch.full((n, m, c), -8.0)
        deltas = torch.zeros(n, m, 4)
        for i, target in enumerate(targets):
            used = torch.zeros(m, dtype=torch.bool)
            for box, label in zip(target["boxes"], target["labels"]):
                iou = box_iou(box[None], self.grid)[0].masked_fill(used, -1)
                a = int(iou.argmax())
                used[a] = True
                logits[i, a, label] = 6.0 if not self.box_noise else float(self.rng.uniform(-1, 4))
                deltas[i, a] = encode_boxes(box, self.grid[a]) + torch.from_numpy(
                    self.rng.normal(0, self.box_noise, 4).astype(np.float32))
            if self.box_noise:  # a few false positives
                for a in self.rng.choice(m, 3, replace=False):
                    logits[i, a, int(self.rng.integers(c))] = float(self.rng.uniform(-2, 2))
        return _per_level(logits, self.config), _per_level(deltas, self.config)


class PooledConvNet(nn.Module):
    """A small stand-in detector whose outputs vary strongly from anchor to anchor (no score
    ties): per level, average-pool the image to the level's grid and apply random 3x3 convs."""

    def __init__(self, num_classes: int = 3, num_anchors: int = 9) -> None:
        super().__init__()
        self.config = resolve("efficientdet_d0", num_classes=num_classes, image_size=SIZE)
        self.anchors = AnchorGenerator()  # levels 3..7, as the pooled outputs below
        self.cls = nn.Conv2d(3, num_anchors * num_classes, 3, padding=1)
        self.box = nn.Conv2d(3, num_anchors * 4, 3, padding=1)
        with torch.no_grad():
            self.box.weight.mul_(0.1)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        pooled = [nn.functional.avg_pool2d(x, 2 ** level) for level in range(3, 8)]
        return [self.cls(p) for p in pooled], [self.box(p) for p in pooled]


def _per_level(flat: torch.Tensor, cfg) -> list[torch.Tensor]:
    """Inverse of flatten_outputs: N x M x K -> per level N x (A*K) x H_l x W_l."""
    n, _, k = flat.shape
    out, start = [], 0
    counts = num_anchors_per_level((SIZE, SIZE), cfg.min_level, cfg.max_level, cfg.num_anchors)
    for level, count in zip(range(cfg.min_level, cfg.max_level + 1), counts):
        side = SIZE // 2 ** level
        out.append(flat[:, start:start + count].reshape(n, side, side, -1).permute(0, 3, 1, 2).contiguous())
        start += count
    return out


def _direct_stats(ann_file: Path, results_file: Path, image_ids: list[int]) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = COCOeval(gt, gt.loadRes(str(results_file)), "bbox")
        ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def test_perfect_detections_score_one(demo: CocoDetection) -> None:
    gt = demo.coco_api()
    results = [dict(image_id=a["image_id"], category_id=a["category_id"], bbox=a["bbox"], score=1.0)
               for a in gt.dataset["annotations"]]
    metrics = coco_stats(gt, results)
    assert metrics["map"] == 1.0 and metrics["map50"] == 1.0
    assert [row["category_id"] for row in metrics["per_class"]] == [1, 3, 7, 12]
    assert all(row["ap"] in (1.0, None) for row in metrics["per_class"])


def test_oracle_model_scores_one_through_the_whole_pipeline(demo: CocoDetection, tmp_path: Path) -> None:
    """Letterbox scale, clipping, xyxy -> xywh and label -> category id all undone exactly."""
    oracle = OracleModel(demo, batch_size=2)
    metrics = evaluate_coco(oracle, demo, batch_size=2, progress=False, results_file=tmp_path / "r.json")
    assert metrics["num_images"] == len(demo) and metrics["num_skipped"] == 0
    assert metrics["map"] == pytest.approx(1.0) and metrics["map50"] == pytest.approx(1.0)
    results = json.loads((tmp_path / "r.json").read_text())
    assert {r["category_id"] for r in results} <= {1, 3, 7, 12}
    assert len(results) == metrics["num_detections"] == sum(len(demo[i][1]["boxes"]) for i in range(len(demo)))


def test_numbers_equal_pycocotools_run_directly(demo: CocoDetection, tmp_path: Path) -> None:
    oracle = OracleModel(demo, batch_size=3, box_noise=0.15, seed=1)
    metrics = evaluate_coco(oracle, demo, batch_size=3, progress=False, results_file=tmp_path / "r.json")
    assert 0.05 < metrics["map"] < 0.95
    direct = _direct_stats(demo.annotation_file, tmp_path / "r.json", demo.image_ids)
    assert metrics["stats"] == direct
    assert metrics["map"] == direct[0] and metrics["map50"] == direct[1]


def test_subset_is_restricted_to_its_images(demo: CocoDetection, tmp_path: Path) -> None:
    subset = torch.utils.data.Subset(demo, [1, 3])
    oracle = OracleModel(demo, batch_size=1)
    oracle.targets = [demo[1][1], demo[3][1]]
    metrics = evaluate_coco(oracle, subset, batch_size=1, progress=False)
    assert metrics["num_images"] == 2 and metrics["map"] == pytest.approx(1.0)


def _varied_set(seed: int, images: int = 60) -> tuple[dict, list[dict]]:
    """Ground truth and detections with what COCOeval treats specially: crowd boxes, empty images, a
    class without ground truth, boxes of every area range, more than 100 detections on some images,
    wrong labels, near misses and duplicates."""
    rng = np.random.default_rng(seed)
    annotations, results = [], []
    for image_id in range(1, images + 1):
        for _ in range(0 if image_id % 7 == 0 else int(rng.integers(1, 9))):
            w, h = rng.uniform(3, 250, 2)
            x, y = rng.uniform(0, 400 - w), rng.uniform(0, 400 - h)
            category = int(rng.choice([1, 2, 3, 5]))
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, category_id=category,
                                    bbox=[x, y, w, h], area=w * h, iscrowd=int(rng.random() < 0.05)))
            for _ in range(int(rng.integers(0, 3))):  # found (maybe twice), maybe mislabelled
                jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
                label = category if rng.random() < 0.8 else int(rng.integers(1, 6))
                results.append(dict(image_id=image_id, category_id=label, score=float(rng.random()),
                                    bbox=[x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]))
        for _ in range(int(rng.integers(0, 130 if image_id % 5 == 0 else 20))):  # background
            w, h = rng.uniform(2, 150, 2)
            results.append(dict(image_id=image_id, category_id=int(rng.integers(1, 6)), score=float(rng.random() * 0.5),
                                bbox=[*rng.uniform(0, 300, 2).tolist(), w, h]))
    gt = dict(images=[dict(id=i, width=400, height=400, file_name=f"{i}.jpg") for i in range(1, images + 1)],
              categories=[dict(id=c, name=f"class{c}") for c in range(1, 6)], annotations=annotations)
    return gt, results


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faster_coco_eval_gives_pycocotools_figures(seed: int) -> None:
    """The default evaluator (faster-coco-eval's port) against pycocotools, the reference: the 12 summary
    numbers and every per-class AP equal to floating-point rounding, on all images and on a subset."""
    pytest.importorskip("faster_coco_eval", reason="faster-coco-eval is a dependency: pip install -e .")
    gt_dict, results = _varied_set(seed)
    gt = COCO()
    gt.dataset = gt_dict
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    kept = json.dumps(gt_dict, sort_keys=True)
    coco_stats(gt, results, evaluator="faster-coco-eval")
    assert json.dumps(gt_dict, sort_keys=True) == kept  # the port leaves the ground truth as it was
    for image_ids in (None, list(range(1, 61, 2))):
        port = coco_stats(gt, results, image_ids, evaluator="faster-coco-eval")
        reference = coco_stats(gt, results, image_ids, evaluator="pycocotools")  # marks gt "ignore"
        assert 0.05 < reference["map"] < 0.95
        assert port["stats"] == pytest.approx(reference["stats"], abs=1e-12)
        assert [r["name"] for r in port["per_class"]] == [r["name"] for r in reference["per_class"]]
        assert reference["per_class"][3]["ap"] is None  # class 4 has no ground truth
        for ours, theirs in zip(port["per_class"], reference["per_class"]):
            assert (ours["ap"] is None) == (theirs["ap"] is None)
            if theirs["ap"] is not None:
                assert ours["ap"] == pytest.approx(theirs["ap"], abs=1e-12)
                assert ours["ap50"] == pytest.approx(theirs["ap50"], abs=1e-12)
    assert coco_stats(gt, results, image_ids)["stats"] == port["stats"]  # "auto" is the port where installed
    assert coco_stats(gt, [], evaluator="faster-coco-eval")["stats"][:2] == [0.0, 0.0]


def test_unknown_evaluator_is_refused(demo: CocoDetection) -> None:
    with pytest.raises(ValueError, match="use one of auto, faster-coco-eval, pycocotools"):
        coco_stats(demo.coco_api(), [], evaluator="lvis")


def test_no_detections_give_zeros(demo: CocoDetection) -> None:
    model = PooledConvNet(num_classes=4)
    metrics = evaluate_coco(model, demo, batch_size=4, progress=False,
                            settings=PostprocessSettings(score_threshold=0.9999))
    assert metrics["num_detections"] == 0 and metrics["map"] == 0.0 and metrics["map50"] == 0.0
    assert model.training  # previous mode restored
    assert coco_stats(demo.coco_api(), [])["stats"][:2] == [0.0, 0.0]


@pytest.mark.parametrize("flip", [False, True])
def test_same_weights_same_numbers(demo: CocoDetection, flip: bool) -> None:
    torch.manual_seed(1)
    model = PooledConvNet(num_classes=4)
    first = evaluate_coco(model, demo, batch_size=2, progress=False, flip=flip)
    second = evaluate_coco(model, demo, batch_size=2, progress=False, flip=flip)
    assert first["stats"] == second["stats"] and first["num_detections"] == second["num_detections"] > 0


def test_real_network_runs(demo: CocoDetection) -> None:
    model = create_model("efficientdet_d0", num_classes=4, image_size=SIZE, fpn_channels=16, fpn_cells=1,
                         head_repeats=1)
    metrics = evaluate_coco(model, torch.utils.data.Subset(demo, [0, 1]), batch_size=2, progress=False)
    assert metrics["num_images"] == 2 and len(metrics["stats"]) == 12 and metrics["num_detections"] == 200


def test_mirrored_outputs_decode_to_mirrored_boxes() -> None:
    torch.manual_seed(0)
    anchors = generate_anchors((SIZE, SIZE), 3, 4)
    regressions = [torch.randn(2, 36, SIZE // 8, SIZE // 8) * 0.3, torch.randn(2, 36, SIZE // 16, SIZE // 16) * 0.3]
    mirrored, mirrored_anchors = mirror_outputs(regressions, anchors, SIZE)
    flat = lambda outs: torch.cat([o.permute(0, 2, 3, 1).reshape(2, -1, 4) for o in outs], 1)  # noqa: E731
    boxes = decode_boxes(flat(regressions), anchors)
    expected = torch.stack([SIZE - boxes[..., 2], boxes[..., 1], SIZE - boxes[..., 0], boxes[..., 3]], -1)
    torch.testing.assert_close(decode_boxes(flat(mirrored), mirrored_anchors), expected, atol=1e-4, rtol=0)


def test_flip_tta_is_mirror_consistent() -> None:
    """TTA on an image equals TTA on its mirror image, mirrored back (same candidate pool)."""
    torch.manual_seed(0)
    model = PooledConvNet().eval()
    image = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8)
    valid = torch.tensor([[SIZE, SIZE]] * 2, dtype=torch.float32)
    settings = PostprocessSettings(score_threshold=0.05)
    plain = detect_batch(model, image, valid, None, settings, flip=False)
    tta = detect_batch(model, image, valid, None, settings, flip=True)
    tta_mirror = detect_batch(model, image.flip(-1), valid, None, settings, flip=True)
    for i in range(2):
        assert len(tta[i]["scores"]) > 10 and not torch.equal(tta[i]["boxes"], plain[i]["boxes"])
        mirrored = tta_mirror[i]["boxes"]
        back = torch.stack([SIZE - mirrored[:, 2], mirrored[:, 1], SIZE - mirrored[:, 0], mirrored[:, 3]], -1)
        torch.testing.assert_close(tta_mirror[i]["scores"], tta[i]["scores"])
        assert torch.equal(tta_mirror[i]["labels"], tta[i]["labels"])
        torch.testing.assert_close(back, tta[i]["boxes"], atol=1e-3, rtol=0)


def test_checkpoint_categories_are_checked(demo: CocoDetection) -> None:
    names = ["circle", "square", "triangle", "star"]
    assert checkpoint_category_ids(names, [1, 3, 7, 12], 4, demo) == [1, 3, 7, 12]
    assert checkpoint_category_ids(None, None, 4, demo) == [1, 3, 7, 12]
    with pytest.raises(ValueError, match="'square' in the checkpoint but 'triangle'"):
        checkpoint_category_ids(["circle", "square", "square", "star"], [1, 7, 3, 12], 4, demo)
    with pytest.raises(ValueError, match="3 classes"):
        checkpoint_category_ids(None, None, 3, demo)
    with pytest.raises(ValueError, match="no category id in common"):
        checkpoint_category_ids(["hexagon", "oval"], [98, 99], 2, demo)
    # a COCO-style model with placeholder slots for ids the file lacks: fine, but it warns that
    # the file's triangle and star are not predicted
    with pytest.warns(UserWarning, match="does not predict 2 of the file's categories"):
        assert checkpoint_category_ids(["circle", "unused-2", "square"], [1, 2, 3], 3, demo) == [1, 2, 3]
    with pytest.warns(UserWarning, match=r"not in the annotation file \(e.g. 99 \(hexagon\)\)"):
        checkpoint_category_ids(["circle", "square", "triangle", "star", "hexagon"], [1, 3, 7, 12, 99], 5, demo)


def test_model_and_dataset_class_counts_must_agree(demo: CocoDetection) -> None:
    model = create_model("efficientdet_d0", num_classes=3, image_size=SIZE, fpn_channels=16, fpn_cells=1,
                         head_repeats=1)
    with pytest.raises(ValueError, match="3 classes but .* has 4 categories"):
        evaluate_coco(model, demo, progress=False)


def test_formatting() -> None:
    summary = format_summary([0.5] * 12)
    assert summary.count("\n") == 11 and "AP @[IoU=0.50:0.95 | area=all | maxDets=100]" in summary
    table = format_per_class([dict(category_id=3, name="square", ap=0.5, ap50=0.75),
                              dict(category_id=12, name="star", ap=None, ap50=None)])
    assert table.splitlines()[1].split()[-2:] == ["0.500", "0.750"] and table.splitlines()[2].split()[-1] == "-"


def _eval_tool():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / "eval.py"
    spec = importlib.util.spec_from_file_location("eval_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_tool(demo: CocoDetection, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from effdet.weights.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("efficientdet_d0", num_classes=4, image_size=SIZE, fpn_channels=16, fpn_cells=1,
                         head_repeats=1)
    weights = save_checkpoint(tmp_path / "tiny.pt", model, class_names=list(demo.class_names),
                              category_ids=list(demo.category_ids))
    common = ["--ann", str(demo.annotation_file), "--images", str(demo.image_dir), "--workers", "0", "--quiet"]
    assert _eval_tool().main(["--weights", str(weights), *common, "--detections-json", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    assert "AP @[IoU=0.50:0.95 | area=all | maxDets=100]" in out and "triangle" in out
    stem = f"tiny_eval_{demo.annotation_file.stem}"
    metrics = json.loads((tmp_path / f"{stem}.json").read_text())
    assert len(metrics["stats"]) == 12 and len(metrics["per_class"]) == 4 and metrics["num_images"] == len(demo)
    assert f"mAP@[.5:.95] {metrics['map']:.3f}, AP50 {metrics['map50']:.3f}" in out
    for name in ("pr_curves", "confusion_matrix"):  # the evaluation's pictures, beside the metrics
        with Image.open(tmp_path / f"{stem}_{name}.png") as picture:
            assert picture.size[0] > 200 and picture.size[1] > 200
        assert f"picture written to {tmp_path / f'{stem}_{name}.png'}" in out
    # scoring the written detections gives the same numbers (and pictures; none with --no-plots)
    assert _eval_tool().main(["--results", str(tmp_path / "d.json"), "--ann", str(demo.annotation_file),
                              "--output-json", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["stats"] == metrics["stats"]
    assert (tmp_path / "again_pr_curves.png").is_file() and (tmp_path / "again_confusion_matrix.png").is_file()
    assert _eval_tool().main(["--results", str(tmp_path / "d.json"), "--ann", str(demo.annotation_file),
                              "--output-json", str(tmp_path / "third.json"), "--no-plots"]) == 0
    assert not list(tmp_path.glob("third_*.png"))
    # a checkpoint for other categories is refused
    other = save_checkpoint(tmp_path / "other.pt", model, class_names=["a", "b", "c", "d"], category_ids=[1, 2, 3, 4])
    capsys.readouterr()
    assert _eval_tool().main(["--weights", str(other), *common]) == 2
    err = capsys.readouterr().err
    assert err.startswith("effdet val: error: ") and "do not match the annotation file's categories" in err
    assert _eval_tool().main(["--weights", str(tmp_path / "missing.pt"), *common]) == 2
    assert "missing.pt does not exist" in capsys.readouterr().err


def _val(argv: list[str]) -> int:
    from effdet.cli.main import main as effdet_main

    return effdet_main(["val", *argv])


def test_val_refuses_duplicate_annotation_ids(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Repeated annotation ids collapse in pycocotools' index: perfect detections scored 0.442, not 1.
    effdet val (and training's evaluation, through CocoDetection) refuses them, naming file and id."""
    images = [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in (1, 2, 3)]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [20, 20, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 3, "image_id": 3, "category_id": 1, "bbox": [5, 5, 50, 50], "area": 2500, "iscrowd": 0}]
    ann, results = tmp_path / "ann.json", tmp_path / "res.json"
    results.write_text(json.dumps([{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
                                   for a in anns]))
    argv = ["--ann", str(ann), "--results", str(results), "--no-plots"]
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}))
    assert _val([*argv, "--output-json", str(tmp_path / "ok.json")]) == 0
    assert json.loads((tmp_path / "ok.json").read_text())["map"] == 1.0
    capsys.readouterr()
    anns[1]["id"] = 1
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}))
    assert _val([*argv, "--output-json", str(tmp_path / "dup.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"effdet val: error: {ann}: duplicate annotation id 1 (annotations[0] and annotations[1]); "
                       "annotation ids must be unique: renumber them")
    assert not (tmp_path / "dup.json").exists()


@pytest.mark.parametrize("entry, expected", [
    ('{"image_id": 1, "category_id": 1, "bbox": [1, 1, 1, 1], "score": 1' + "0" * 400 + "}",
     "entry 0 has score 1000"),
    ('{"image_id": 1, "category_id": 1, "bbox": [1' + "0" * 400 + ", 1, 1, 1], \"score\": 1}",
     "entry 0 has bbox [1000"),
    ('{"image_id": 1' + "0" * 5000 + ', "category_id": 1, "bbox": [1, 1, 1, 1], "score": 1}', "is not valid JSON"),
])
def test_val_results_with_numbers_too_large_are_one_line(entry: str, expected: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    images = [{"id": 1, "file_name": "1.png", "width": 100, "height": 100}]
    ann, results = tmp_path / "ann.json", tmp_path / "res.json"
    ann.write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    results.write_text(f"[{entry}]")
    assert _val(["--ann", str(ann), "--results", str(results), "--no-plots",
                 "--output-json", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()[-1]) < 400, err
    assert err.splitlines()[-1].startswith(f"effdet val: error: results file {results}") and expected in err


def test_results_file_size_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from effdet.data.results import ResultsError, read_results

    path = tmp_path / "res.json"
    path.write_text('[{"image_id": 1, "category_id": 1, "bbox": [1, 1, 1, 1], "score": 1}]')
    monkeypatch.setattr("effdet.data.results.MAX_ANNOTATION_BYTES", 10)
    with pytest.raises(ResultsError, match=f"results file {path} is over"):
        read_results(path)
