"""Draw detections on an image: coloured boxes with "name score" labels, sized to the image.

Drawn with Pillow's ``ImageDraw`` and its built-in scalable font (``ImageFont.load_default(size=...)``,
Pillow >= 10.1), so labels stay readable on a 100 px thumbnail and on a 6000 px photo alike. Each
class gets its own colour. Every box line and label has a 1 px edge in black or white, whichever
contrasts with the class colour (:func:`text_color`), so a box stays visible on a background of
its own colour. Labels never cover each other where there is room (:func:`place_labels`): the
best-scoring detection's label gets the first free place above, inside or below its box.
"""

from __future__ import annotations

import colorsys
import functools
import math
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

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

    Boxes are drawn lowest score first, so the best-scoring box is on top; then the labels, placed
    best score first by :func:`place_labels`, so that no label covers another while there is room.

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
    boxes_np = (boxes.detach().cpu().float().numpy() if isinstance(boxes, torch.Tensor)
                else np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    n = boxes_np.shape[0]
    scores_l = _as_list(scores, n, "scores")
    labels_l = _as_list(labels, n, "labels")
    keep = [i for i in range(n) if scores_l is None or scores_l[i] >= score_threshold]
    if scores_l is not None:  # lowest score first: the best-scoring box is drawn on top
        keep.sort(key=lambda i: scores_l[i])
    out = rgb
    if keep:
        default_width, default_font = drawing_sizes(h, w)
        colors, texts = _colors_and_texts(keep, labels_l, scores_l, class_names)
        # Clip to the image; x2, y2 at least x1, y1.
        clipped = boxes_np[keep].astype(np.float64)
        clipped = np.nan_to_num(clipped, nan=0.0, posinf=0.0, neginf=0.0)
        clipped[:, 0::2] = clipped[:, 0::2].clip(0, w - 1)
        clipped[:, 1::2] = clipped[:, 1::2].clip(0, h - 1)
        clipped[:, 2:] = np.maximum(clipped[:, 2:], clipped[:, :2])
        canvas = Image.fromarray(rgb)
        draw = ImageDraw.Draw(canvas)
        width = line_width or default_width
        for box, color in zip(clipped.round().astype(int).tolist(), colors):
            x1, y1, x2, y2 = box
            draw.rectangle((x1 - 1, y1 - 1, x2 + 1, y2 + 1), outline=text_color(color), width=width + 2)
            draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
        if texts is not None:
            _draw_labels(draw, clipped, colors, texts, _font(font_size or default_font), (h, w))
        out = np.array(canvas)
    if isinstance(image, Image.Image):
        return Image.fromarray(out)
    if isinstance(image, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)
    return np.ascontiguousarray(out)


def _draw_labels(draw: ImageDraw.ImageDraw, boxes: np.ndarray, colors: list[tuple[int, int, int]], texts: list[str],
                 font: ImageFont.FreeTypeFont, image_hw: tuple[int, int]) -> None:
    """Filled, edged labels for ``boxes`` (K, 4) xyxy, given lowest score first: placed best first, drawn last."""
    ascent, descent = font.getmetrics()
    pad = max(1, round((ascent + descent) / 8))
    sizes = np.array([[math.ceil(font.getlength(t)) + 2 * pad, ascent + descent + 2 * pad] for t in texts])
    order = np.arange(len(texts))[::-1]  # best score first
    rects = np.empty((len(texts), 4), dtype=np.int64)
    rects[order] = place_labels(boxes[order], sizes[order], image_hw)
    for (x1, y1, x2, y2), color, text in zip(rects.tolist(), colors, texts):
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=color, outline=text_color(color), width=1)
        draw.text((x1 + pad, y1 + pad), text, fill=text_color(color), font=font)


def place_labels(boxes: np.ndarray, sizes: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """Where each box's label goes, so that labels do not overlap where there is room.

    Labels are placed in the order given (put the best-scoring first): each at its box's left
    edge (moved left where it would leave the image), in the first free slot of: just above the
    box, inside its top edge, further down inside the box one label height at a time, just
    below it, then further below and further above. A label that finds no free slot in the
    image takes the slot it overlaps least.

    Args:
        boxes: (K, 4) xyxy pixels, inside the image.
        sizes: (K, 2) label (width, height) in pixels.
        image_hw: (H, W) of the image.

    Returns:
        (K, 4) int64 label rectangles, xyxy with x2, y2 exclusive, inside the image where they fit.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    placed = np.zeros((len(boxes), 4), dtype=np.int64)
    for k, ((bx1, by1, _, by2), (lw, lh)) in enumerate(zip(boxes.tolist(), sizes.tolist())):
        x = int(min(max(round(bx1), 0), max(w - lw, 0)))
        top, bottom = round(by1), round(by2) + 1
        inside = list(range(top, max(bottom - lh, top) + 1, max(lh, 1)))
        below = list(range(bottom, h - lh + 1, max(lh, 1)))
        above = list(range(top - lh, -1, -max(lh, 1)))
        ys = [min(max(y, 0), max(h - lh, 0)) for y in (*above[:1], *inside, *below, *above[1:])]
        candidates = np.array([[x, y, x + lw, y + lh] for y in dict.fromkeys(ys)], dtype=np.int64)
        if k:
            others = placed[:k]
            ix = np.clip(np.minimum(candidates[:, None, 2], others[None, :, 2])
                         - np.maximum(candidates[:, None, 0], others[None, :, 0]), 0, None)
            iy = np.clip(np.minimum(candidates[:, None, 3], others[None, :, 3])
                         - np.maximum(candidates[:, None, 1], others[None, :, 1]), 0, None)
            overlap = (ix * iy).sum(1)
            free = np.flatnonzero(overlap == 0)
            choice = int(free[0]) if len(free) else int(np.argmin(overlap))
        else:
            choice = 0
        placed[k] = candidates[choice]
    return placed


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


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font at ``size`` pixels."""
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise RuntimeError("Pillow's scalable default font is unavailable: install Pillow >= 10.1 with FreeType")
    return font
