"""read_image over formats and modes, its errors, and find_images."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from effdet.data.images import ImageReadError, find_images, read_image, read_image_reduced

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


def _claiming_jpeg(side: int) -> bytes:
    """A few kilobytes of a progressive 64 x 64 JPEG whose header claims side x side pixels, its end
    cut off. libjpeg holds a progressive image's coefficients whole: 13000 x 13000 took 0.5 GB here."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        buffer, "JPEG", progressive=True)
    data = bytearray(buffer.getvalue())
    frame = data.index(b"\xff\xc2")  # progressive frame header: length, precision, height, width
    data[frame + 5:frame + 9] = side.to_bytes(2, "big") * 2
    return bytes(data[:-2])


BOMB_CHILD = """
import sys
from effdet.data.images import ImageReadError, read_image

def peak_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # peak RSS restarts from the current RSS
before = peak_mb()
try:
    read_image(sys.argv[1])
    print("decoded")
except ImageReadError as error:
    print(error)
print(peak_mb() - before)
"""


def test_header_over_the_pixel_budget_is_refused_before_decoding(tmp_path):
    """A truncated JPEG claiming 13000 x 13000 (169 Mpx, under Pillow's own bomb limit) peaked at
    3.6 GB: it is refused from its header, in a few milliseconds and without memory."""
    import subprocess
    import sys

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs to measure peak memory")
    path = tmp_path / "bomb.jpg"
    path.write_bytes(_claiming_jpeg(13000))
    assert len(path.read_bytes()) < 5000
    done = subprocess.run([sys.executable, "-c", BOMB_CHILD, str(path)], capture_output=True, text=True, timeout=120)
    message, grown = done.stdout.strip().splitlines()
    assert str(path) in message and "13000 x 13000" in message and "--max-pixels" in message
    assert float(grown) < 50, f"peak memory grew by {grown} MB"


def test_max_pixels(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "small.png")  # 12 x 16 = 192 px
    with pytest.raises(ImageReadError, match="16 x 12 = 0.000192 Mpx, over the budget of 0.000191 Mpx"):
        read_image(tmp_path / "small.png", max_pixels=191)
    assert read_image(tmp_path / "small.png", max_pixels=192).shape == (12, 16, 3)
    assert read_image(tmp_path / "small.png", max_pixels=None).shape == (12, 16, 3)
    with pytest.raises(ImageReadError, match="over the budget"):
        read_image_reduced(tmp_path / "small.png", (8, 8), max_pixels=100)


def test_large_jpeg_decodes_reduced_for_a_small_network_input(tmp_path):
    pixels = np.zeros((1000, 2000, 3), dtype=np.uint8)
    pixels[:, :1000] = (200, 40, 90)
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=95)
    read = read_image_reduced(tmp_path / "big.jpg", (256, 256))  # content 128 x 256: 1/4 leaves 250 x 500
    reduced, factor = read.pixels, read.factor
    assert factor == 4 and reduced.shape == (250, 500, 3) and read.size == (1000, 2000)
    np.testing.assert_allclose(reduced[100, 100], (200, 40, 90), atol=8)  # x * factor: the same place
    assert reduced[100, 400].max() < 10
    read = read_image_reduced(tmp_path / "big.jpg", (1024, 1024))  # content 512 x 1024: more than half
    assert read.factor == 1 and read.pixels.shape == (1000, 2000, 3) and read.size == (1000, 2000)
    Image.fromarray(pixels).save(tmp_path / "big.png")  # not a JPEG: read whole
    assert read_image_reduced(tmp_path / "big.png", (256, 256)).factor == 1
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # shown rotated: 2000 x 1000 (h x w)
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    read = read_image_reduced(tmp_path / "rotated.jpg", (256, 128))  # content 256 x 128: 1/4 is 500 x 250
    assert read.factor == 4 and read.pixels.shape == (500, 250, 3) and read.size == (2000, 1000)
