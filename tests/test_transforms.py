"""Boxes stay on their objects through every transform.

Each test image holds filled rectangles of unique colours; after a transform, the bounding box
of each colour's pixels must match the transformed box (IoU >= 0.9).
"""

import numpy as np
import pytest
import torch

from effdet.data.transforms import TransformResult, eval_transform, train_transform
from effdet.data.letterbox import PAD_VALUE, letterbox

COLOURS = np.array(
    [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)], dtype=np.uint8
)
BOXES = np.array(  # xyxy in a 300 x 400 (h x w) image
    [[10, 20, 110, 90], [150, 30, 230, 200], [260, 10, 390, 60], [20, 180, 140, 290], [300, 120, 380, 280], [180, 230, 250, 295]],
    dtype=np.float32,
)
CROWD = np.array([False, False, True, False, True, False])


def _scene() -> np.ndarray:
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    for colour, (x1, y1, x2, y2) in zip(COLOURS, BOXES.astype(int)):
        image[y1:y2, x1:x2] = colour
    return image


def _colour_box(image: np.ndarray, colour: np.ndarray) -> np.ndarray | None:
    close = np.abs(image.astype(np.int16) - colour.astype(np.int16)).max(axis=2) < 60
    ys, xs = np.nonzero(close)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union


def _check_consistent(result: TransformResult, image_size: tuple[int, int]) -> None:
    assert result.image.shape == (*image_size, 3) and result.image.dtype == np.uint8
    assert result.boxes.dtype == np.float32 and result.boxes.shape == (len(result.labels), 4)
    assert result.labels.dtype == np.int64 and result.iscrowd.dtype == bool
    for box, label, crowd in zip(result.boxes, result.labels, result.iscrowd):
        assert crowd == CROWD[label]
        assert 0 <= box[0] < box[2] <= image_size[1] and 0 <= box[1] < box[3] <= image_size[0]
        if min(box[2] - box[0], box[3] - box[1]) < 4:
            continue  # a few pixels: the colour test is too coarse
        found = _colour_box(result.image, COLOURS[label])
        assert found is not None, (label, box)
        # IoU for normal boxes; pixel quantisation dominates IoU for boxes of ~10 px
        assert _iou(found, box) >= 0.9 or np.abs(found - box).max() <= 1.0, (label, box, found)
    for label in set(range(len(COLOURS))) - set(result.labels.tolist()):
        found = _colour_box(result.image, COLOURS[label])  # dropped boxes are (almost) invisible
        assert found is None or (found[2] - found[0]) * (found[3] - found[1]) < 0.15 * np.prod(BOXES[label, 2:] - BOXES[label, :2]) * result.scale**2 + 16


def _run(transform, image_size):
    return transform(_scene(), BOXES.copy(), np.arange(len(COLOURS)), CROWD.copy())


@pytest.mark.parametrize(
    "scale_range, hflip_prob",
    [((0.1, 2.0), 0.5), ((2.0, 2.0), 0.0), ((2.0, 2.0), 1.0), ((0.5, 0.5), 1.0), ((0.8, 1.2), 0.5)],
)
def test_train_transform_keeps_boxes_on_objects(scale_range, hflip_prob):
    torch.manual_seed(0)
    image_size = (256, 320)
    transform = train_transform(image_size, scale_range=scale_range, hflip_prob=hflip_prob)
    for _ in range(12):
        _check_consistent(_run(transform, image_size), image_size)


def test_train_transform_flip_and_pad_placement():
    torch.manual_seed(0)
    transform = train_transform((256, 256), scale_range=(0.5, 0.5), hflip_prob=1.0)
    result = _run(transform, (256, 256))
    assert result.scale == pytest.approx(min(128 / 300, 128 / 400))  # letterbox to 128 px
    content_h, content_w = round(300 * result.scale), round(400 * result.scale)
    assert (result.image[content_h:] == PAD_VALUE).all() and (result.image[:, content_w:] == PAD_VALUE).all()
    expected = BOXES * result.scale
    expected[:, [0, 2]] = content_w - expected[:, [2, 0]]  # mirrored within the content
    np.testing.assert_allclose(result.boxes[np.argsort(result.labels)], expected, atol=0.6)


def test_photometric_keeps_pad_and_boxes():
    torch.manual_seed(1)
    transform = train_transform((256, 256), scale_range=(0.5, 1.0), photometric=True)
    for _ in range(6):
        result = _run(transform, (256, 256))
        content_h, content_w = min(256, round(300 * result.scale)), min(256, round(400 * result.scale))
        assert (result.image[content_h:] == PAD_VALUE).all() and (result.image[:, content_w:] == PAD_VALUE).all()
        assert result.boxes.shape[0] >= 1


def test_train_transform_without_boxes():
    transform = train_transform((128, 128))
    result = transform(_scene(), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool))
    assert result.image.shape == (128, 128, 3)
    assert result.boxes.shape == (0, 4) and result.labels.shape == (0,) and result.iscrowd.shape == (0,)


def test_train_transform_is_reproducible_from_torch_seed():
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        transform = train_transform((128, 128), photometric=True)
        outputs.append([_run(transform, (128, 128)) for _ in range(3)])
    for a, b in zip(*outputs):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not np.array_equal(outputs[0][0].image, outputs[0][1].image)


def test_eval_transform_matches_letterbox_exactly():
    transform = eval_transform((256, 320))
    result = _run(transform, (256, 320))
    expected_image, scale = letterbox(_scene(), (256, 320))
    np.testing.assert_array_equal(result.image, expected_image)
    assert result.scale == scale
    np.testing.assert_array_equal(result.boxes, BOXES * np.float32(scale))
    np.testing.assert_array_equal(result.labels, np.arange(6))
    np.testing.assert_array_equal(result.iscrowd, CROWD)
    _check_consistent(result, (256, 320))


class _SceneDataset(torch.utils.data.Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        result = _run(self.transform, None)
        return torch.from_numpy(result.image).permute(2, 0, 1), {"boxes": torch.from_numpy(result.boxes)}


def test_workers_get_distinct_reproducible_augmentation():
    from effdet.engine.distributed import DistContext
    from effdet.engine.setup import build_train_loader
    from effdet.engine.train_config import load_run_config

    run = load_run_config("efficientdet_d0", {"batch_size": 1, "workers": 2, "seed": 5})
    runs = []
    for _ in range(2):
        dataset = _SceneDataset(train_transform((64, 64)))
        loader = build_train_loader(dataset, run.train, DistContext())
        loader.batch_sampler.set_epoch(0)
        runs.append([images for images, _, _ in loader])
        del loader
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b)
    assert not torch.equal(runs[0][0], runs[0][1])  # worker 0 and worker 1 differ


def test_reseed_repeats_augmentation():
    transform = train_transform((96, 96), photometric=True)
    transform.reseed(7)
    first = _run(transform, None)
    _run(transform, None)
    transform.reseed(7)
    again = _run(transform, None)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.boxes, again.boxes)


def test_loader_workers_fork_from_a_process_whose_opencv_pool_ran():
    """A DataLoader worker forked after the parent ran OpenCV on several threads must start: without
    effdet.data.loader's fork guard, the worker's cv2.setNumThreads blocks forever."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import multiprocessing, cv2, numpy as np
        from effdet.data.loader import worker_init
        cv2.setNumThreads(2)
        image = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)
        for _ in range(3):
            cv2.resize(image, (1200, 1200))
        child = multiprocessing.get_context("fork").Process(target=worker_init, args=(0,))
        child.start()
        child.join(60)
        print("child exit code", child.exitcode, "parent threads", cv2.getNumThreads())
        if child.is_alive():
            child.kill()
            raise SystemExit(1)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "child exit code 0 parent threads 2" in done.stdout
