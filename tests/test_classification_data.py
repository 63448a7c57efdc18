"""Classification data, evaluation, pictures and checkpoints: ImageFolder scanning and its bad inputs,
the seeded split, the v2 transforms, MixUp/CutMix, accuracy, the pictures, the checkpoint round trip
and the scikit-image set (tools/make_skimage_classes.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from effdet.data.classification_transforms import ClassifyEvalTransform, ClassifyTrainTransform, mix_batch
from effdet.data.coco import DatasetError
from effdet.data.imagefolder import (ClassificationDataset, collate_classes, find_split_folders, read_split,
                                     scan_image_folder, split_samples, upsampling_note, write_split)
from effdet.evaluation.classification import evaluate_classifier, format_classification
from effdet.evaluation.classification_plots import (plot_class_batch, plot_class_confusion,
                                                    plot_classification_results, plot_worst_mistakes)
from effdet.factory import create_classifier, load_classifier
from effdet.weights.checkpoint import CheckpointError
from effdet.weights.classifier import save_classifier

NAMES = ["black cat", "café", "zebra"]  # a space and a non-ASCII letter, kept as they are


def write_folder(root: Path, names: list[str] = NAMES, per_class: int = 5, size: tuple[int, int] = (40, 30)) -> Path:
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng([c, i])
            pixels = (rng.integers(0, 60, (size[1], size[0], 3)) + 90 * c).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_scan_keeps_names_and_counts_skipped_files(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "set")
    (root / "café" / "notes.txt").write_text("not an image")
    (root / "zebra" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    index = scan_image_folder(root)
    assert index.class_names == NAMES
    assert index.counts() == [5, 5, 5]
    assert sorted(p.name for p, _ in index.skipped) == ["broken.jpg", "notes.txt"]
    assert all(label == NAMES.index(path.parent.name) for path, label in index.samples)


BAD_FOLDERS = {"empty": "holds no readable image", "single": "single class folder",
               "no classes": "holds no class folders", "mismatch": "other classes than the training set"}
"""The unusable ImageFolders of :func:`write_bad_folder` and the words of their one-line error."""


def write_bad_folder(root: Path, case: str) -> Path:
    """An ImageFolder at ``root`` that must be refused: a class folder without images ("empty"), one class
    ("single"), images but no class folders ("no classes"), or train / val with other classes ("mismatch")."""
    if case == "empty":
        write_folder(root)
        (root / "empty class").mkdir()
    elif case == "single":
        write_folder(root, ["only"])
    elif case == "no classes":
        root.mkdir()
        (root / "image.png").write_bytes(b"")
    else:
        write_folder(root / "train")
        write_folder(root / "val", ["black cat", "café", "horse"])
    return root


@pytest.mark.parametrize("case", ["empty", "single", "no classes"])
def test_scan_refuses_unusable_folders(tmp_path: Path, case: str) -> None:
    with pytest.raises(DatasetError, match=BAD_FOLDERS[case]):
        scan_image_folder(write_bad_folder(tmp_path / "set", case))


def test_validation_classes_must_match_training(tmp_path: Path) -> None:
    write_folder(tmp_path / "d" / "train")
    write_folder(tmp_path / "d" / "val", ["black cat", "café", "horse"])
    train_dir, val_dir = find_split_folders(tmp_path / "d")
    assert (train_dir, val_dir) == (tmp_path / "d" / "train", tmp_path / "d" / "val")
    names = scan_image_folder(train_dir).class_names
    with pytest.raises(DatasetError, match=r"missing 'zebra'; not in training 'horse'"):
        scan_image_folder(val_dir, class_names=names)


def test_split_is_seeded_stratified_and_recorded(tmp_path: Path) -> None:
    index = scan_image_folder(write_folder(tmp_path / "set", per_class=10))
    assert find_split_folders(tmp_path / "set") == (tmp_path / "set", None)
    train, val = split_samples(index, 0.2, seed=3)
    again = split_samples(index, 0.2, seed=3)
    other = split_samples(index, 0.2, seed=4)
    assert (train.samples, val.samples) == (again[0].samples, again[1].samples)
    assert val.samples != other[1].samples
    assert val.counts() == [2, 2, 2] and train.counts() == [8, 8, 8]
    assert not {p for p, _ in train.samples} & {p for p, _ in val.samples}
    assert index.short_sides == [30] * 30 and train.short_sides == [30] * 24  # 40 x 30 images
    assert upsampling_note(train, 30) is None
    assert upsampling_note(train, 64).startswith(f"24 of 24 images in {index.root} are smaller than 64 px")
    record = write_split(tmp_path / "run" / "split.json", train, val, 3, 0.2)
    assert json.loads(record.read_text(encoding="utf-8"))["class_names"] == NAMES
    read_train, read_val = read_split(record)
    assert read_train.samples == train.samples and read_val.samples == val.samples


def test_split_needs_two_images_per_class(tmp_path: Path) -> None:
    index = scan_image_folder(write_folder(tmp_path / "set", per_class=1))
    with pytest.raises(DatasetError, match="needs at least 2 per class"):
        split_samples(index, 0.2, seed=0)


def test_transforms_are_seeded_and_leave_the_global_stream_alone() -> None:
    image = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)
    train = ClassifyTrainTransform(64)
    train.reseed(7)
    state = torch.get_rng_state()
    first = train(image)
    assert torch.equal(torch.get_rng_state(), state)
    train.reseed(7)
    assert torch.equal(train(image), first)
    assert first.shape == (3, 64, 64) and first.dtype == torch.uint8
    small = ClassifyEvalTransform(64)(image)  # 30 x 40 is upsampled: shorter side to 73, centre 64 x 64
    assert small.shape == (3, 64, 64) and small.dtype == torch.uint8


def test_mix_batch_gives_soft_targets_that_sum_to_one() -> None:
    images = torch.rand(4, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 0])
    mixed, targets = mix_batch(images, labels, 3, 0.2, 1.0, seed=5)
    again = mix_batch(images, labels, 3, 0.2, 1.0, seed=5)
    assert torch.equal(mixed, again[0]) and torch.equal(targets, again[1])
    assert targets.shape == (4, 3) and torch.allclose(targets.sum(1), torch.ones(4))
    plain, onehot = mix_batch(images, labels, 3, 0.0, 0.0, seed=5)
    assert torch.equal(plain, images) and torch.equal(onehot.argmax(1), labels)


def test_collate_drops_unreadable_images(tmp_path: Path) -> None:
    index = scan_image_folder(write_folder(tmp_path / "set", per_class=2))
    (index.samples[0][0]).write_bytes(b"\x89PNG truncated after the header check")
    data = ClassificationDataset(index, ClassifyEvalTransform(32))
    images, labels, skipped = collate_classes([data[i] for i in range(len(data))])
    assert skipped == 1 and images.shape == (5, 3, 32, 32) and labels.tolist() == [0, 1, 1, 2, 2]


class FixedLogits(nn.Module):
    """Logits chosen per image by its mean brightness bucket (the folders above are 0-60, 90-150, 180-240)."""

    mean = std = (0.5, 0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        brightness = x.mean((1, 2, 3))  # normalised: -1..1
        cls = torch.bucketize(brightness, torch.tensor([-0.4, 0.3]))
        logits = torch.nn.functional.one_hot(cls, 3).float() * 4
        logits[:, 0] += (cls == 2).float() * 5  # zebra images are all called "black cat": 2/3 right
        return logits


def test_evaluation_counts_exactly(tmp_path: Path) -> None:
    index = scan_image_folder(write_folder(tmp_path / "set", per_class=3))
    data = ClassificationDataset(index, ClassifyEvalTransform(32))
    result = evaluate_classifier(FixedLogits(), data, batch_size=4)
    assert result.top1 == pytest.approx(6 / 9) and result.k == 3 and result.topk == 1.0
    assert result.confusion.tolist() == [[3, 0, 0], [0, 3, 0], [3, 0, 0]]
    assert [row["accuracy"] for row in result.per_class] == [1.0, 1.0, 0.0]
    assert len(result.worst) == 3 and all(w["true"] == 2 and w["pred"] == 0 for w in result.worst)
    assert "top-1 0.6667, top-3 1.0000" in format_classification(result)
    assert "café" in format_classification(result)


def test_pictures(tmp_path: Path) -> None:
    names = [f"class number {i}" for i in range(100)]
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 5, (100, 100)) + np.eye(100, dtype=np.int64) * 20
    path = plot_class_confusion(confusion, names, tmp_path / "confusion_matrix.png")
    with Image.open(path) as image:
        assert min(image.size) > 1800  # about 0.2 inch (20 px) per class: 100 names readable
    write_folder(tmp_path / "set", per_class=1)
    worst = [dict(path=tmp_path / "set" / "café" / "0.png", true=1, pred=0, prob=0.9, true_prob=0.05)]
    assert plot_worst_mistakes(worst, NAMES, tmp_path / "worst.jpg").stat().st_size > 0
    assert plot_class_batch(torch.zeros(3, 3, 16, 16, dtype=torch.uint8), NAMES, tmp_path / "b.jpg").is_file()
    rows = [dict(epoch=1, loss=1.0, val_loss=0.9, top1=0.5, top5=0.9, lr=1e-3),
            dict(epoch=2, loss=0.8, val_loss=0.7, top1=0.6, top5=1.0, lr=5e-4)]
    assert plot_classification_results(rows, tmp_path / "results.png").is_file()


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = create_classifier("efficientnet_lite0", num_classes=3).eval()
    path = save_classifier(tmp_path / "best.pt", model, NAMES, 64, epoch=2)
    loaded, info = load_classifier(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert info == dict(class_names=NAMES, image_size=64, model_name="efficientnet_lite0")
    torch.save({"format": "effdet-checkpoint"}, tmp_path / "det.pt")
    with pytest.raises(CheckpointError, match="a detection checkpoint"):
        load_classifier(tmp_path / "det.pt")


def test_skimage_classes_set(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    from make_skimage_classes import CLASS_SOURCES, make_skimage_classes

    out = make_skimage_classes(tmp_path / "sk", num_train=2, num_val=1, seed=0)
    again = make_skimage_classes(tmp_path / "sk2", num_train=2, num_val=1, seed=0)
    train = scan_image_folder(out / "train")
    assert train.class_names == sorted(CLASS_SOURCES) and train.counts() == [2] * 8
    assert scan_image_folder(out / "val", class_names=train.class_names).counts() == [1] * 8
    for (a, _), (b, _) in zip(train.samples, scan_image_folder(again / "train").samples):
        assert a.read_bytes() == b.read_bytes()
    with pytest.raises(FileExistsError):
        make_skimage_classes(out)
