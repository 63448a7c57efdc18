"""Draw detections on an image: coloured boxes with "name score" labels, sized to the image.

Built on ``torchvision.utils.draw_bounding_boxes`` with Pillow's built-in scalable font
(``ImageFont.load_default(size=...)``, Pillow >= 10.1), so labels stay readable on a 100 px
thumbnail and on a 6000 px photo alike. Each class gets its own colour; label text is black or
white, whichever contrasts with the class colour.
"""

from __future__ import annotations

import colorsys
import functools
import io
import math
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageFont
from torchvision.utils import draw_bounding_boxes

from effdet.data.letterbox import to_rgb_array

# 20 well-separated, fairly light colours (Tableau 20, reordered so neighbours differ).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229),
)


def class_color(label: int) -> tuple[int, int, int]:
    """A stable RGB colour for class index ``label``: the palette, then golden-ratio hues."""
    if label < len(PALETTE):
        return PALETTE[label]
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def text_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light colours, white on dark ones (relative luminance threshold)."""
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def drawing_sizes(height: int, width: int) -> tuple[int, int]:
    """(line width, font size) in pixels for an image of ``height`` x ``width``.

    Both grow with the image's geometric-mean side: about 2 px lines and 14 px text at 640 x 480,
    1 px and 10 px on small images, 11 px and 87 px at 4000 x 3000.
    """
    side = math.sqrt(height * width)
    return max(1, round(side / 320)), max(10, round(side / 40))


def draw_detections(image: Image.Image | np.ndarray | torch.Tensor, boxes: torch.Tensor | np.ndarray | Sequence,
                    labels: Sequence[int] | Sequence[str] | torch.Tensor | None = None,
                    scores: Sequence[float] | torch.Tensor | None = None,
                    class_names: Sequence[str] | None = None, score_threshold: float = 0.0,
                    line_width: int | None = None, font_size: int | None = None
                    ) -> Image.Image | np.ndarray | torch.Tensor:
    """Draw boxes with "name score" labels on a copy of ``image``.

    Args:
        image: PIL image (any mode), H x W x 3 (or H x W) uint8 array, or 3 x H x W uint8 /
            0..1 float tensor.
        boxes: (K, 4) xyxy in ``image`` pixels.
        labels: (K,) class indices (coloured per class; named via ``class_names``) or (K,)
            strings (coloured per distinct name). None: no text, one colour.
        scores: (K,) scores appended to the label text; boxes below ``score_threshold`` are not drawn.
        class_names: name of each class index.
        line_width, font_size: pixels; default scales with the image (:func:`drawing_sizes`).

    Returns:
        The annotated image in the input's kind: a PIL RGB image, an H x W x 3 uint8 array, or
        a 3 x H x W uint8 tensor.
    """
    rgb = to_rgb_array(image)
    h, w = rgb.shape[:2]
    boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32) if not isinstance(boxes, torch.Tensor)
                              else boxes.detach().cpu().float()).reshape(-1, 4)
    n = boxes_t.shape[0]
    scores_l = _as_list(scores, n, "scores")
    labels_l = _as_list(labels, n, "labels")
    keep = [i for i in range(n) if scores_l is None or scores_l[i] >= score_threshold]
    if scores_l is not None:  # lowest score first: the best-scoring box and label are drawn on top
        keep.sort(key=lambda i: scores_l[i])
    default_width, default_font = drawing_sizes(h, w)
    out = rgb
    if keep:
        colors, texts = _colors_and_texts(keep, labels_l, scores_l, class_names)
        # Clip to the image and keep at least 1 px so draw_bounding_boxes accepts every box.
        clipped = boxes_t[keep].clone()
        clipped[:, 0::2] = clipped[:, 0::2].clamp(0, w - 1)
        clipped[:, 1::2] = clipped[:, 1::2].clamp(0, h - 1)
        clipped[:, 2:] = torch.maximum(clipped[:, 2:], clipped[:, :2])
        font = io.BytesIO(_font_bytes())
        pixels = torch.from_numpy(rgb if rgb.flags.writeable else rgb.copy()).permute(2, 0, 1)
        drawn = draw_bounding_boxes(pixels, clipped,
                                    labels=texts, colors=colors, width=line_width or default_width,
                                    font=font, font_size=font_size or default_font,  # type: ignore[arg-type]
                                    label_colors=[text_color(c) for c in colors] if texts else None,
                                    fill_labels=texts is not None)
        out = drawn.permute(1, 2, 0).numpy()
    if isinstance(image, Image.Image):
        return Image.fromarray(out)
    if isinstance(image, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)
    return np.ascontiguousarray(out)


def _as_list(values: Any, n: int, what: str) -> list | None:
    if values is None:
        return None
    out = values.detach().cpu().tolist() if isinstance(values, torch.Tensor) else list(values)
    if len(out) != n:
        raise ValueError(f"draw_detections got {n} boxes but {len(out)} {what}")
    return out


def _colors_and_texts(keep: list[int], labels: list | None, scores: list | None,
                      class_names: Sequence[str] | None) -> tuple[list[tuple[int, int, int]], list[str] | None]:
    if labels is None:
        colors = [class_color(0)] * len(keep)
        texts = [f"{scores[i]:.2f}" for i in keep] if scores is not None else None
        return colors, texts
    by_name: dict[str, int] = {}
    colors, texts = [], []
    for i in keep:
        label = labels[i]
        if isinstance(label, str):
            name, index = label, by_name.setdefault(label, len(by_name))
        else:
            index = int(label)
            name = class_names[index] if class_names is not None and 0 <= index < len(class_names) else str(index)
        colors.append(class_color(index))
        texts.append(f"{name} {scores[i]:.2f}" if scores is not None else name)
    return colors, texts


@functools.lru_cache(maxsize=1)
def _font_bytes() -> bytes:
    """The TrueType data of Pillow's built-in scalable font (draw_bounding_boxes wants a font file)."""
    font = ImageFont.load_default(size=10)
    data = getattr(font, "font_bytes", None)
    if not isinstance(font, ImageFont.FreeTypeFont) or not data:
        raise RuntimeError("Pillow's scalable default font is unavailable: install Pillow >= 10.1 with FreeType")
    return data
