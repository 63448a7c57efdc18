"""Golden values for letterboxing, normalisation and array conversion."""

import numpy as np
import pytest
import torch
from PIL import Image

from effdet.data.letterbox import IMAGENET_MEAN, IMAGENET_STD, PAD_VALUE, letterbox, normalize, to_rgb_array


def test_pad_value_is_rounded_mean():
    assert PAD_VALUE == (124, 116, 104)


def bilinear_reference(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize written out in numpy (pixel centres aligned, edges replicated): an
    independent check of letterbox's resampling, which OpenCV does in 11-bit fixed point."""
    h, w = image.shape[:2]

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    y0, y1, wy = axis(out_h, h)
    x0, x1, wx = axis(out_w, w)
    img = image.astype(np.float64)
    wy, wx = wy[:, None, None], wx[None, :, None]
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


@pytest.mark.parametrize(
    "in_hw, size, scale, content_hw",
    [
        ((100, 200), (64, 64), 0.32, (32, 64)),  # wide image: pad at the bottom
        ((200, 100), (64, 64), 0.32, (64, 32)),  # tall image: pad at the right
        ((10, 20), (100, 100), 5.0, (50, 100)),  # upscaling
        ((100, 100), (64, 128), 0.64, (64, 64)),  # non-square output
        ((3, 1000), (512, 512), 0.512, (2, 512)),  # rounding of the short side
        ((64, 128), (64, 128), 1.0, (64, 128)),  # identity
    ],
)
def test_letterbox_golden(in_hw, size, scale, content_hw):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(*in_hw, 3), dtype=np.uint8)
    out, got_scale = letterbox(image, size)
    assert out.shape == (*size, 3) and out.dtype == np.uint8
    assert got_scale == pytest.approx(scale)
    ch, cw = content_hw
    if content_hw == in_hw:
        np.testing.assert_array_equal(out[:ch, :cw], image)
    else:  # within one grey level of exact bilinear (OpenCV rounds its weights to 1/2048)
        error = np.abs(out[:ch, :cw].astype(np.float64) - bilinear_reference(image, ch, cw))
        assert error.max() <= 1.0, error.max()
    assert (out[ch:] == PAD_VALUE).all() and (out[:, cw:] == PAD_VALUE).all()


def test_letterbox_maps_boxes_by_scale():
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    box = np.array([40, 60, 200, 180], dtype=np.float32)  # xyxy
    image[60:180, 40:200] = (255, 0, 0)
    out, scale = letterbox(image, (160, 160))
    mapped = box * scale
    ys, xs = np.nonzero((out[:, :, 0] > 128) & (out[:, :, 1] < 128))
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
    np.testing.assert_allclose(found, mapped, atol=1.0)
    np.testing.assert_allclose(mapped / scale, box, rtol=1e-6)


def test_letterbox_rejects_non_uint8_rgb():
    with pytest.raises(ValueError, match="uint8"):
        letterbox(np.zeros((10, 10, 3), dtype=np.float32), (32, 32))
    with pytest.raises(ValueError, match="H x W x 3"):
        letterbox(np.zeros((10, 10), dtype=np.uint8), (32, 32))


def test_normalize_values_shapes_and_memory_format():
    pixels = torch.tensor([0, 255, *PAD_VALUE], dtype=torch.uint8)
    image = pixels.view(1, 5).expand(3, 5).reshape(3, 1, 5).contiguous()
    out = normalize(image)
    assert out.dtype == torch.float32 and out.shape == (3, 1, 5)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[:, 0, 0], -mean / std)
    torch.testing.assert_close(out[:, 0, 1], (1 - mean) / std)
    pad = torch.tensor(PAD_VALUE, dtype=torch.float32)
    torch.testing.assert_close(out[:, 0, 2:].diagonal(), (pad / 255 - mean) / std)
    assert out[:, 0, 2:].diagonal().abs().max() < 0.01  # the pad colour normalises to ~0

    batch = torch.randint(0, 256, (2, 3, 8, 6), dtype=torch.uint8).to(memory_format=torch.channels_last)
    result = normalize(batch)
    assert result.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(result[1], normalize(batch[1].contiguous()))


def test_normalize_rejects_bad_input():
    with pytest.raises(TypeError):
        normalize(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError):
        normalize(torch.zeros(4, 4, 4, dtype=torch.uint8))


def _pil(mode: str, array: np.ndarray) -> Image.Image:
    return Image.fromarray(array).convert(mode) if mode not in ("I;16", "I", "F") else Image.fromarray(array)


def test_to_rgb_array_pil_modes():
    rgb = np.random.default_rng(1).integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb_array(Image.fromarray(rgb)), rgb)
    grey = to_rgb_array(Image.fromarray(rgb).convert("L"))
    assert grey.shape == (4, 5, 3) and (grey[..., 0] == grey[..., 2]).all()
    for mode in ("1", "P", "CMYK", "YCbCr", "LA"):
        out = to_rgb_array(Image.fromarray(rgb).convert(mode))
        assert out.shape == (4, 5, 3) and out.dtype == np.uint8, mode
    rgba = np.dstack([rgb, np.array([[0, 255, 128, 255, 0]] * 4, dtype=np.uint8)])
    out = to_rgb_array(Image.fromarray(rgba, mode="RGBA"))
    assert (out[:, 0] == 0).all() and (out[:, 4] == 0).all()  # transparent -> black
    np.testing.assert_array_equal(out[:, 1], rgb[:, 1])  # opaque -> unchanged
    np.testing.assert_allclose(out[:, 2], rgb[:, 2].astype(float) * 128 / 255, atol=1)


def test_to_rgb_array_high_bit_depth():
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    expected = np.array([0, 100, 255], dtype=np.uint8)
    for image in (Image.fromarray(values), Image.fromarray(values.astype(np.int32)), values):
        out = to_rgb_array(image)
        assert out.shape == (1, 3, 3)
        np.testing.assert_array_equal(out[0, :, 1], expected)
    small = Image.fromarray(np.array([[0, 7, 200]], dtype=np.int32))  # 32-bit ints within 0..255
    np.testing.assert_array_equal(to_rgb_array(small)[0, :, 0], [0, 7, 200])


def test_to_rgb_array_numpy_and_tensor():
    rgb = np.random.default_rng(2).integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb_array(rgb), rgb)
    np.testing.assert_array_equal(to_rgb_array(rgb[:, :, 0]), np.repeat(rgb[:, :, :1], 3, axis=2))
    np.testing.assert_array_equal(to_rgb_array(rgb[:, :, :1]), np.repeat(rgb[:, :, :1], 3, axis=2))
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    np.testing.assert_array_equal(to_rgb_array(chw), rgb)
    np.testing.assert_array_equal(to_rgb_array(chw.float() / 255), rgb)
    assert to_rgb_array(chw[:1]).shape == (4, 5, 3)


@pytest.mark.parametrize(
    "bad, error",
    [
        ([[1, 2], [3, 4]], TypeError),
        (np.zeros((4, 4, 3), dtype=np.float64), TypeError),
        (np.zeros((4, 4, 2), dtype=np.uint8), ValueError),
        (torch.zeros(1, 3, 4, 4), ValueError),
        (torch.zeros(3, 4, 4, dtype=torch.int32), TypeError),
    ],
)
def test_to_rgb_array_rejects(bad, error):
    with pytest.raises(error):
        to_rgb_array(bad)
