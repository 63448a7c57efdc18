"""``effdet classify`` end to end on tiny data: train (on the detection engine), val, predict, export,
resume, the ImageNet use, and the bad inputs that must end in one line and exit code 2."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest
import torch

from effdet.cli.main import main
from effdet.factory import create_classifier, load_classifier
from effdet.weights.checkpoint import read_checkpoint
from tests.test_classification_data import BAD_FOLDERS, NAMES, write_bad_folder, write_folder

TINY = ["--weights", "none", "--image-size", "32", "--batch-size", "4", "--workers", "0", "--no-progress",
        "--threads", "2"]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("classes")
    write_folder(root / "train", per_class=4)
    write_folder(root / "val", per_class=2)
    return root


@pytest.fixture(scope="module")
def trained(tiny_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["classify", "train", "--data", str(tiny_set), "--epochs", "2", "--output", str(out), *TINY]) == 0
    return out


def test_train_writes_the_run(trained: Path) -> None:
    for name in ("best.pt", "last.pt", "metrics.csv", "config.yaml", "results.png", "train_batch0.jpg",
                 "confusion_matrix.png", "worst_mistakes.jpg"):
        assert (trained / name).is_file(), name
    with open(trained / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0.0 <= float(r["top1"]) <= float(r["top5"]) == 1.0 for r in rows)  # top-3 of 3 classes is 1
    model, info = load_classifier(trained / "best.pt")
    assert info["class_names"] == NAMES and info["image_size"] == 32
    assert model.classifier[1].out_features == 3


def test_val_predict_and_export(trained: Path, tiny_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "val"
    assert main(["classify", "val", "--weights", str(trained / "best.pt"), "--data", str(tiny_set), "--output",
                 str(out), "--workers", "0"]) == 0
    result = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert result["num_images"] == 6 and result["class_names"] == NAMES
    assert sum(map(sum, result["confusion"])) == 6
    assert (out / "confusion_matrix.png").is_file() and (out / "worst_mistakes.jpg").is_file()
    assert "café" in capsys.readouterr().out

    preds = tmp_path / "preds.json"
    assert main(["classify", "predict", "--weights", str(trained / "best.pt"), str(tiny_set / "val" / "zebra"),
                 str(tiny_set / "val" / "café" / "0.png"), "--json", str(preds), "--top", "2"]) == 0
    entries = json.loads(preds.read_text(encoding="utf-8"))
    assert [Path(e["image"]).name for e in entries] == ["0.png", "0.png", "1.png"]
    for entry in entries:
        assert [set(t) for t in entry["top"]] == [{"class_name", "class_id", "prob"}] * 2
        assert entry["top"][0]["prob"] >= entry["top"][1]["prob"]
        assert all(NAMES[t["class_id"]] == t["class_name"] for t in entry["top"])

    onnx_file = tmp_path / "model.onnx"
    assert main(["classify", "export", "--weights", str(trained / "best.pt"), "--output", str(onnx_file)]) == 0
    assert "check passed" in capsys.readouterr().out
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    image = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    probs = session.run(["probs"], {"images": image.numpy()})[0]
    model, _ = load_classifier(trained / "best.pt")
    with torch.no_grad():
        expected = model((image.float() / 255 - 0.5) / 0.5).softmax(1)
    assert probs.shape == (2, 3) and abs(probs - expected.numpy()).max() < 1e-4

    # the exported file is evaluated like the checkpoint: the same accuracy and confusion matrix
    assert main(["classify", "val", "--weights", str(onnx_file), "--data", str(tiny_set), "--output",
                 str(tmp_path / "val_onnx"), "--workers", "0"]) == 0
    exported = json.loads((tmp_path / "val_onnx" / "results.json").read_text(encoding="utf-8"))
    assert exported["confusion"] == result["confusion"] and exported["top1"] == result["top1"]


def test_training_goes_on_from_a_classifier_checkpoint(trained: Path, tiny_set: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    from effdet.engine.classification import start_from_classifier

    start = read_checkpoint(trained / "best.pt")
    args = [a for a in TINY if a not in ("--weights", "none")]
    assert main(["classify", "train", "--data", str(tiny_set), "--epochs", "1", "--no-plots", "--weights",
                 str(trained / "best.pt"), "--output", str(tmp_path / "more"), *args]) == 0
    assert "final layer kept (the same classes)" in capsys.readouterr().out
    weights = start["model"]  # best.pt holds the EMA weights as its model
    kept = start_from_classifier(start, NAMES)
    assert torch.equal(kept.classifier[1].weight, weights["classifier.1.weight"])
    other = start_from_classifier(start, ["a", "b"])  # other classes: a new final layer, the rest loaded
    assert other.classifier[1].out_features == 2
    assert torch.equal(other.features[0][0].weight, weights["features.0.0.weight"])


@pytest.mark.slow
def test_export_openvino_fp32_and_int8(trained: Path, tiny_set: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    assert main(["classify", "export", "--weights", str(trained / "best.pt"), "--output", str(tmp_path / "m.xml")]) == 0
    assert main(["classify", "export", "--weights", str(trained / "best.pt"), "--output", str(tmp_path / "q.xml"),
                 "--int8", "--calib-images", str(tiny_set / "train")]) == 0
    assert (tmp_path / "q.bin").is_file()


@pytest.mark.slow
def test_class_folders_only_get_a_recorded_split_and_resume_continues(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "flat", per_class=5)
    out = tmp_path / "run"
    code = main(["classify", "train", "--data", str(data), "--epochs", "2", "--output", str(out),
                 "--val-fraction", "0.4", "--no-plots", *TINY])
    assert code == 0
    split = json.loads((out / "split.json").read_text(encoding="utf-8"))
    assert len(split["val"]) == 6 and len(split["train"]) == 9  # 2 of each class's 5
    before = read_checkpoint(out / "last.pt")["train_state"]["epoch"]
    assert main(["classify", "train", "--resume", str(out)]) == 0  # all epochs done: nothing to train
    assert read_checkpoint(out / "last.pt")["train_state"]["epoch"] == before == 2


@pytest.mark.slow
def test_sigterm_saves_last_and_resume_finishes(tiny_set: Path, tmp_path: Path, monkeypatch) -> None:
    from effdet.engine.classification import ClassificationTask

    out = tmp_path / "run"
    steps = []
    original = ClassificationTask.collate

    def collate_then_signal(self, items):  # SIGTERM while the second batch is being made
        steps.append(1)
        if len(steps) == 2:
            signal.raise_signal(signal.SIGTERM)
        return original(self, items)

    monkeypatch.setattr(ClassificationTask, "collate", collate_then_signal)
    code = main(["classify", "train", "--data", str(tiny_set), "--epochs", "1", "--output", str(out), "--no-plots",
                 *TINY])
    assert code == 128 + signal.SIGTERM
    state = read_checkpoint(out / "last.pt")["train_state"]
    assert state["epoch"] == 0 and state["step_in_epoch"] >= 1
    monkeypatch.setattr(ClassificationTask, "collate", original)
    assert main(["classify", "train", "--resume", str(out / "last.pt")]) == 0
    assert read_checkpoint(out / "last.pt")["train_state"]["epoch"] == 1


@pytest.mark.parametrize("case", ["empty", "single", "mismatch"])
def test_bad_data_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, case: str) -> None:
    data, words = write_bad_folder(tmp_path / "d", case), BAD_FOLDERS[case]
    code = main(["classify", "train", "--data", str(data), "--epochs", "1", "--output", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0] and err[0].startswith("effdet classify: error:")


@pytest.mark.slow
def test_corrupt_files_are_skipped_and_counted(tiny_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "d"
    write_folder(data / "train", per_class=4)
    write_folder(data / "val", per_class=1)
    (data / "train" / "zebra" / "broken.jpg").write_bytes(b"not a jpeg")
    (data / "train" / "café" / "readme.txt").write_text("notes")
    assert main(["classify", "train", "--data", str(data), "--epochs", "1", "--output", str(tmp_path / "run"),
                 "--no-plots", *TINY]) == 0
    assert "2 file(s) skipped, not readable images" in capsys.readouterr().out


def test_predict_refuses_a_detection_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.save({"format": "effdet-checkpoint"}, tmp_path / "det.pt")
    (tmp_path / "a.png").write_bytes(b"")
    assert main(["classify", "predict", "--weights", str(tmp_path / "det.pt"), str(tmp_path / "a.png")]) == 2
    assert "a detection checkpoint" in capsys.readouterr().err


def test_imagenet_use_is_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = create_classifier("efficientnet_lite0", num_classes=1000).eval()
    torch.save(model.state_dict(), tmp_path / "lite0.pth")
    image = write_folder(tmp_path / "img", ["x", "y"], per_class=1) / "x" / "0.png"
    assert main(["classify", str(image), "--model", "efficientnet_lite0", "--weights", str(tmp_path / "lite0.pth"),
                 "--top", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == str(image) and len(out) == 5  # the model line, the path, three classes
    assert main(["classify", "imagenet", str(image), "--weights", str(tmp_path / "lite0.pth")]) == 0


def test_mixup_cutmix_batches_are_soft_and_seeded(tmp_path: Path) -> None:
    from effdet.engine.classification import ClassificationTask, ClassifyConfig, classify_train_config

    task = ClassificationTask(ClassifyConfig(data=str(tmp_path), mixup=0.4, cutmix=1.0),
                              classify_train_config(epochs=1), tmp_path)
    task.class_names = NAMES
    items = [(torch.full((3, 8, 8), 60 * i, dtype=torch.uint8), i % 3, 1000 + i) for i in range(4)] + [None]
    images, targets, skipped = task.collate(items)
    again = task.collate(items)
    assert skipped == 1 and images.dtype == torch.uint8 and images.shape == (4, 3, 8, 8)
    assert torch.equal(images, again[0]) and torch.equal(targets, again[1])  # a function of the items' seeds
    assert targets.shape == (4, 3) and torch.allclose(targets.sum(1), torch.ones(4))
    assert (targets.max(1).values < 1).any()  # mixed
    plain = ClassificationTask(ClassifyConfig(data=str(tmp_path)), classify_train_config(epochs=1), tmp_path)
    plain.class_names = NAMES
    assert plain.collate(items)[1].tolist() == [0, 1, 2, 0]


@pytest.mark.slow
def test_resume_after_sigterm_is_exact(tiny_set: Path, tmp_path: Path, monkeypatch) -> None:
    """Stopped at step 2 of 3 in epoch 1 and resumed, a run ends with the weights of one never stopped."""
    from effdet.engine.classification import ClassificationTask

    args = ["--data", str(tiny_set), "--epochs", "2", "--no-plots", "--augment", "randaugment", *TINY]
    assert main(["classify", "train", "--output", str(tmp_path / "whole"), *args]) == 0
    calls = []
    original = ClassificationTask.collate

    def collate_then_signal(self, items):
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGTERM)
        return original(self, items)

    monkeypatch.setattr(ClassificationTask, "collate", collate_then_signal)
    assert main(["classify", "train", "--output", str(tmp_path / "split"), *args]) == 128 + signal.SIGTERM
    monkeypatch.setattr(ClassificationTask, "collate", original)
    assert main(["classify", "train", "--resume", str(tmp_path / "split")]) == 0
    whole, resumed = (read_checkpoint(tmp_path / run / "last.pt") for run in ("whole", "split"))
    for key in ("model", "ema"):
        for name, tensor in whole[key].items():
            assert torch.equal(tensor, resumed[key][name]), (key, name)


def test_a_size_that_is_not_a_multiple_of_32_is_explained() -> None:
    from effdet.engine.classification import size_explanation

    assert size_explanation(224) is None
    assert size_explanation(200).startswith("image size 200 is not a multiple of 32")
    assert "192 or 224 uses every cell fully" in size_explanation(200)
