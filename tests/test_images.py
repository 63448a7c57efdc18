"""read_image over formats and modes, its errors, and find_images."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from effdet.data.images import ImageReadError, find_images, read_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix, options", [(".png", {}), (".bmp", {}), (".tiff", {}), (".webp", {"lossless": True})])
def test_lossless_formats_round_trip(tmp_path, suffix, options):
    path = tmp_path / f"image{suffix}"
    Image.fromarray(RGB).save(path, **options)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (12, 16, 3)
    np.testing.assert_array_equal(out, RGB)


def test_jpeg_and_cmyk_jpeg(tmp_path):
    flat = np.full((12, 16, 3), (200, 40, 90), dtype=np.uint8)
    Image.fromarray(flat).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(flat).convert("CMYK").save(tmp_path / "b.jpg", quality=95)
    for name in ("a.jpg", "b.jpg"):
        out = read_image(tmp_path / name)
        assert out.shape == (12, 16, 3)
        np.testing.assert_allclose(out.mean(axis=(0, 1)), (200, 40, 90), atol=6)


def test_greyscale_palette_rgba_and_16_bit(tmp_path):
    Image.fromarray(RGB).convert("L").save(tmp_path / "grey.png")
    grey = read_image(tmp_path / "grey.png")
    assert grey.shape == (12, 16, 3) and (grey[..., 0] == grey[..., 1]).all()

    Image.fromarray(RGB).convert("P").save(tmp_path / "palette.png")
    assert read_image(tmp_path / "palette.png").shape == (12, 16, 3)

    rgba = np.dstack([RGB, np.zeros((12, 16), dtype=np.uint8)])
    rgba[:, :8, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(out[:, :8], RGB[:, :8])
    assert (out[:, 8:] == 0).all()  # fully transparent composited on black

    deep = np.full((12, 16), 257 * 200, dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert (read_image(tmp_path / "deep.png") == 200).all()


def test_exif_orientation_is_applied(tmp_path):
    raw = np.zeros((20, 40, 3), dtype=np.uint8)
    raw[:, :20] = (255, 0, 0)  # left half red
    raw[:, 20:] = (0, 0, 255)  # right half blue
    image = Image.fromarray(raw)
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "rotated.jpg")
    assert out.shape == (40, 20, 3)
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 50  # top is the former left (red)
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 50  # bottom is the former right (blue)


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, content",
    [
        ("missing.jpg", None),
        ("text.jpg", b"this is not an image"),
        ("empty.png", b""),
        ("truncated.jpg", _jpeg_bytes()[:600]),
        ("headless.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40),
    ],
)
def test_broken_files_raise_image_read_error(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value) and info.value.path == path
    assert isinstance(info.value, OSError)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # never switched on globally


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path)


def test_find_images(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("a/1.jpg", "a/b/2.PNG", "a/b/3.webp", "a/notes.txt", "c.bmp", "d.tif"):
        (tmp_path / rel).write_bytes(b"x")
    found = find_images([tmp_path / "a", str(tmp_path / "*.bmp"), tmp_path / "a" / "1.jpg", str(tmp_path / "d.tif")])
    names = [p.relative_to(tmp_path).as_posix() for p in found]
    assert names == sorted(names, key=lambda n: str(tmp_path / n))
    assert sorted(names) == ["a/1.jpg", "a/b/2.PNG", "a/b/3.webp", "c.bmp", "d.tif"]
    recursive = find_images([str(tmp_path / "**" / "*.webp")])
    assert [p.name for p in recursive] == ["3.webp"]
    assert find_images([tmp_path / "a" / "notes.txt"]) == [tmp_path / "a" / "notes.txt"]  # explicit file kept
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        find_images([str(tmp_path / "nothing-here")])
    assert all(isinstance(p, Path) for p in found)
