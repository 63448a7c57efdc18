"""--max-pixels: predict, val and train skip an image whose header claims more pixels than the
budget, before decoding it, naming the file (issue 20, item 9)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effdet.cli.main import build_parser
from effdet.cli.main import main as effdet_main
from effdet.cli.parsers import MAX_PIXELS
from effdet.cli.train import collect_overrides
from effdet.data import CocoDetection
from effdet.data.images import DEFAULT_MAX_PIXELS
from effdet.engine.train_config import load_run_config
from tests.helpers import tiny_checkpoint


def claiming_jpeg(path: Path, side: int) -> Path:
    """A truncated progressive JPEG of a few KB whose header claims side x side pixels."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        buffer, "JPEG", progressive=True)
    data = bytearray(buffer.getvalue())
    frame = data.index(b"\xff\xc2")
    data[frame + 5:frame + 9] = side.to_bytes(2, "big") * 2
    path.write_bytes(bytes(data[:-2]))
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def test_predict_skips_and_counts_an_image_over_the_budget(weights: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (96, 80), (40, 120, 200)).save(folder / "fine.png")
    bomb = claiming_jpeg(folder / "bomb.jpg", 13000)
    common = ["predict", "--weights", str(weights), str(folder), "--no-images", "--quiet", "--threads", "1"]
    with pytest.warns(UserWarning, match=rf"{bomb}.*13000 x 13000.*--max-pixels"):
        assert effdet_main(common) == 0
    out = capsys.readouterr().out
    assert "1 image(s)" in out and "1 unreadable file(s)" in out
    with pytest.warns(UserWarning, match=r"fine.png.*96 x 80"):
        assert effdet_main([*common, "--max-pixels", "7000"]) == 2  # nothing readable: exit 2
    assert "nothing could be read" in capsys.readouterr().err


def test_val_and_train_pass_the_budget_to_the_dataset(tiny_shapes, tmp_path: Path) -> None:
    parser, _ = build_parser()
    val = parser.parse_args(["val", "--weights", "w.pt", "--ann", "a.json", "--images", "x", "--max-pixels", "100"])
    assert val.max_pixels == 100
    assert parser.parse_args(["predict", "--weights", "w.pt", "a.jpg"]).max_pixels == DEFAULT_MAX_PIXELS == MAX_PIXELS
    train = parser.parse_args(["train", "--model", "efficientdet_d0", "--max-pixels", "100"])
    run = load_run_config("efficientdet_d0", collect_overrides(train))
    assert run.data.max_pixels == 100
    assert load_run_config("efficientdet_d0", {}).data.max_pixels == DEFAULT_MAX_PIXELS
    dataset = CocoDetection(tiny_shapes.train_annotations, tiny_shapes.train_images, max_pixels=100)
    with pytest.warns(UserWarning, match=r"128 x 128 = 0.0164 Mpx, over the budget of 0.0001 Mpx"):
        assert dataset[0] is None  # skipped and counted by the loader, as a corrupt image
    assert CocoDetection(tiny_shapes.train_annotations, tiny_shapes.train_images)[0] is not None
