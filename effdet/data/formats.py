"""Pascal VOC XML and YOLO txt annotations to COCO, and COCO to YOLO: pure functions.

Box formats:

* COCO ``bbox``: ``[x, y, w, h]`` in absolute pixels, (x, y) the top-left corner, continuous
  coordinates (pixel column i covers [i, i + 1)).
* Pascal VOC ``<bndbox>``: ``xmin ymin xmax ymax``, 1-based inclusive pixel indices, so pixel
  k covers [k - 1, k) and the COCO box is ``x = xmin - 1, y = ymin - 1, w = xmax - xmin + 1,
  h = ymax - ymin + 1`` (a one-pixel box ``1 1 1 1`` is ``[0, 0, 1, 1]``). Fractional values
  are converted by the same formulas.
* YOLO: one line ``class cx cy w h`` per box, class index from 0, the box centre and size as
  fractions of the image width (cx, w) and height (cy, h), each in [0, 1].

Image sizes are the image's as displayed (after EXIF rotation), as
:class:`effdet.data.coco.CocoDetection` compares them. Category ids are 1..N in class order.

Malformed input (XML that does not parse, a missing field, a bad YOLO line) stops the conversion
with a :class:`DatasetError` that names ``file:line``; nothing is written. Image files that are
missing or unreadable are skipped with one warning each and counted.
"""

from __future__ import annotations

import json
import math
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Sequence
from xml.parsers import expat

from PIL import Image
from tqdm import tqdm

from effdet.config import ConfigError, load_yaml_text
from effdet.data.coco import EDGE_TOLERANCE, CocoDetection, DatasetError, check_class_name, load_annotation_json
from effdet.data.images import ImageReadError, find_images
from effdet.fileio import ReadError, atomic_write, read_text_bounded

CLASSES_FILE = "classes.txt"
"""The class-names file that :func:`write_yolo` writes next to the label files."""
YOLO_FIELDS = ("class", "cx", "cy", "w", "h")
EXIF_ORIENTATION = 0x0112
"""EXIF tag whose values 5-8 mean the image is stored rotated by 90 or 270 degrees."""


@dataclass
class Conversion:
    """A data set converted to COCO, and what was left out or noticed on the way."""

    coco: dict[str, Any]
    skipped_images: list[str] = field(default_factory=list)  # one line per skipped image: path and reason
    notes: list[str] = field(default_factory=list)  # counted things the user should know


@dataclass
class YoloLabels:
    """COCO converted to YOLO: the label lines per file, relative to the output folder."""

    class_names: list[str]
    files: dict[str, list[str]]  # "sub/image.txt" -> ["class cx cy w h", ...]
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# images and class names
# ------------------------------------------------------------------------------------------------

def image_width_height(path: str | Path) -> tuple[int, int]:
    """(width, height) in pixels of an image as displayed (after EXIF rotation), from its header only.

    Raises:
        ImageReadError: the file is missing or not an image. A file whose header is fine but whose
            data is truncated passes; ``effdet data check --read-images`` decodes everything.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, f"image file {path} does not exist (or is not a file)")
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise ImageReadError(path, f"cannot read image {path}: {type(error).__name__}: {error}") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def read_class_names(path: str | Path) -> list[str]:
    """Class names in class-index order, from any of the three files that hold them:

    * a text file with one name per line (line k + 1 names class k; trailing blank lines ignored);
    * a JSON list of strings (a ``.json`` file, or any file whose text starts with ``[``);
    * a YOLO ``data.yaml`` (``.yaml``/``.yml``) with ``names:`` as a list or an ``{index: name}`` dict.

    ``effdet predict --class-names`` and ``effdet data convert --class-names`` both read it.

    Raises:
        DatasetError: unreadable or oversized file, empty or repeated name, a name with a control
            character (tab, NUL, ...; with file:line in a text file), invalid JSON or JSON that is
            not a list of strings, YAML ``names`` missing, not 0..N-1, or not matching ``nc``.
    """
    path = Path(path)
    text = _read_text(path, "class-names file")
    if path.suffix.lower() in (".yaml", ".yml"):
        return _names_from_yaml(path, text)
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        return _names_from_json(path, text)
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names: list[str] = []
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            raise DatasetError(f"{path}:{number}: empty class name; the file needs one name per line "
                               "(line k + 1 names class k), without blank lines between them")
        if name in names:
            raise DatasetError(f"{path}:{number}: class name {name!r} repeats line {names.index(name) + 1}; "
                               "class names must be unique")
        names.append(check_class_name(name, f"{path}:{number}"))
    if not names:
        raise DatasetError(f"class-names file {path} is empty; write one class name per line")
    return names


def _read_text(path: Path, what: str) -> str:
    """The text of ``path`` (:func:`effdet.fileio.read_text_bounded`), its ReadError as a DatasetError."""
    try:
        return read_text_bounded(path, what)
    except ReadError as error:
        raise DatasetError(str(error)) from None


def _names_from_json(path: Path, text: str) -> list[str]:
    try:
        names = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError) as error:
        raise DatasetError(f"class-names file {path} is not valid JSON: {error}; write a JSON list of "
                           "names, or one name per line in a text file") from None
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise DatasetError(f"class-names file {path} must hold a non-empty JSON list of strings")
    return _unique_names(path, [check_class_name(name, f"{path}: [{index}]").strip()
                                for index, name in enumerate(names)])


def _unique_names(path: Path, names: list[str]) -> list[str]:
    if len(set(names)) != len(names) or not all(names):
        raise DatasetError(f"{path}: class names must be unique and not empty, got {names}")
    return names


def _names_from_yaml(path: Path, text: str) -> list[str]:
    try:
        data = load_yaml_text(text, str(path))  # no aliases: a few nested ones expand to gigabytes
    except ConfigError as error:
        raise DatasetError(str(error)) from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DatasetError(f"{path}: 'names' keys must be the class indices 0..{len(names) - 1}, "
                               f"got {sorted(names, key=str)}")
        names = [names[index] for index in range(len(names))]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{path}: expected a 'names:' list (or {{index: name}} mapping) of class names")
    names = _unique_names(path, [check_class_name(name, f"{path}: names[{index}]").strip()
                                 for index, name in enumerate(names)])
    if "nc" in data and data["nc"] != len(names):
        raise DatasetError(f"{path}: nc is {data['nc']!r} but 'names' lists {len(names)} classes")
    return names


# ------------------------------------------------------------------------------------------------
# Pascal VOC
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VocObject:
    """One ``<object>``: ``box`` is VOC's ``(xmin, ymin, xmax, ymax)``, 1-based inclusive pixels."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool
    line: int  # line of <object> in the XML file


@dataclass(frozen=True)
class VocAnnotation:
    """One VOC XML file: the image's file name, its ``<size>`` (None when absent) and its objects."""

    path: Path
    file_name: str
    size: tuple[int, int] | None  # (width, height) in pixels
    objects: list[VocObject]
    line: int  # line of <annotation>


def read_voc(path: str | Path) -> VocAnnotation:
    """Read a Pascal VOC XML file.

    Raises:
        DatasetError: ``file:line`` and what is wrong: XML that does not parse (with the column), a
            root other than ``<annotation>``, a missing ``<filename>``, ``<name>`` or ``<bndbox>``
            field, a number that is not one, ``xmax < xmin``, a ``<size>`` that is not positive.
    """
    path = Path(path)
    root, lines = _parse_xml(path)
    if root.tag != "annotation":
        raise DatasetError(f"{path}:{lines[id(root)]}: the root element is <{root.tag}>, not <annotation>; "
                           "is this a Pascal VOC file?")
    file_name = _text(_child(root, "filename", path, lines), path, lines)
    size = None
    size_element = root.find("size")
    if size_element is not None and size_element.find("width") is not None:
        width, height = (_number(_child(size_element, key, path, lines), path, lines) for key in ("width", "height"))
        if width > 0 and height > 0:  # 0 x 0 is what some tools write when they do not know
            if width != int(width) or height != int(height):
                raise DatasetError(f"{path}:{lines[id(size_element)]}: <size> {width} x {height} is not whole "
                                   "pixels; fix it")
            size = (int(width), int(height))
    objects = [_read_voc_object(element, path, lines) for element in root.findall("object")]
    return VocAnnotation(path, file_name, size, objects, lines[id(root)])


def _read_voc_object(element: ET.Element, path: Path, lines: dict[int, int]) -> VocObject:
    name_element = _child(element, "name", path, lines)
    name = check_class_name(_text(name_element, path, lines), f"{path}:{lines[id(name_element)]}: <name>")
    bndbox = _child(element, "bndbox", path, lines)
    xmin, ymin, xmax, ymax = (_number(_child(bndbox, key, path, lines), path, lines)
                              for key in ("xmin", "ymin", "xmax", "ymax"))
    if xmax < xmin or ymax < ymin:
        raise DatasetError(f"{path}:{lines[id(bndbox)]}: <bndbox> of {name!r} has xmin {xmin:g} xmax {xmax:g} "
                           f"ymin {ymin:g} ymax {ymax:g}; the max must not be below the min")
    difficult = element.find("difficult")
    is_difficult = difficult is not None and _number(difficult, path, lines) != 0
    return VocObject(name, (xmin, ymin, xmax, ymax), is_difficult, lines[id(element)])


def _parse_xml(path: Path) -> tuple[ET.Element, dict[int, int]]:
    """The ElementTree of ``path`` and the line of each element (keyed by ``id(element)``), parsed
    by expat (as ``ET.parse`` is) so that elements keep their line numbers. Read as bounded text
    (:func:`effdet.fileio.read_text_bounded`); a regular file within the bound that is not UTF-8
    (``encoding="ISO-8859-1"``) is then read as bytes, for expat to decode as it declares."""
    data: str | bytes
    try:
        data = read_text_bounded(path, "VOC annotation file")
    except ReadError as error:
        if not isinstance(error.__context__, UnicodeDecodeError):
            raise DatasetError(str(error)) from None
        try:
            data = path.read_bytes()
        except OSError as read_error:
            raise DatasetError(f"cannot read {path}: {read_error.strerror or read_error}") from None
    builder, lines = ET.TreeBuilder(), {}
    parser = expat.ParserCreate()

    def start(tag: str, attributes: dict[str, str]) -> None:
        lines[id(builder.start(tag, attributes))] = parser.CurrentLineNumber

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except expat.ExpatError as error:
        raise DatasetError(f"{path}:{error.lineno}: not well-formed XML ({expat.errors.messages[error.code]}, "
                           f"column {error.offset + 1}); fix or re-export the file") from None
    return builder.close(), lines


def _child(parent: ET.Element, tag: str, path: Path, lines: dict[int, int]) -> ET.Element:
    child = parent.find(tag)
    if child is None:
        raise DatasetError(f"{path}:{lines[id(parent)]}: <{parent.tag}> has no <{tag}>; add it (VOC needs "
                           "<filename>, and <name> and <bndbox> with xmin ymin xmax ymax in every <object>)")
    return child


def _text(element: ET.Element, path: Path, lines: dict[int, int]) -> str:
    text = (element.text or "").strip()
    if not text:
        raise DatasetError(f"{path}:{lines[id(element)]}: <{element.tag}> is empty")
    return text


def _number(element: ET.Element, path: Path, lines: dict[int, int]) -> float:
    text = _text(element, path, lines)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(f"{path}:{lines[id(element)]}: <{element.tag}> is {text!r}, not a number")
    return value


def voc_to_coco(xml_source: str | Path, image_dir: str | Path | None = None,
                class_names: Sequence[str] | None = None, progress: bool = False) -> Conversion:
    """Convert a folder of Pascal VOC XML files (searched recursively; or one file) to COCO.

    Args:
        xml_source: folder of ``.xml`` files, or one file. Images get ids 1..N in path order.
        image_dir: the image folder ``<filename>`` is relative to. Given, every image is checked:
            a missing or unreadable one is skipped (one warning, counted), its size is read from the
            file when ``<size>`` is absent or 0 x 0, and a ``<size>`` that differs from the image's
            is counted in a note (the XML's is kept; training skips such an image). Absent,
            ``<size>`` must be in every file.
        class_names: the classes in category-id order (id k + 1 for ``class_names[k]``); an
            object of another name is an error. Default: the names found, sorted.
        progress: show a tqdm bar.

    Returns:
        The COCO dict (boxes as in the module docstring, ``iscrowd`` 0, ``area`` w x h, and VOC's
        ``difficult`` flag kept as an extra ``difficult`` key, 0 or 1) and the skipped images.
    """
    source = Path(xml_source)
    files = sorted(source.rglob("*.xml")) if source.is_dir() else [source]
    if not source.exists() or not files:
        raise DatasetError(f"{source}: no Pascal VOC .xml files there; give the folder of the annotation files")
    image_folder = Path(image_dir) if image_dir is not None else None
    _check_image_dir(image_folder)
    result, parsed, sizes, mismatched = Conversion({}), [], [], []
    seen: dict[str, Path] = {}
    for path in tqdm(files, desc="read VOC", unit="file", disable=not progress):
        voc = read_voc(path)
        if voc.file_name in seen:
            raise DatasetError(f"{path}:{voc.line}: <filename> {voc.file_name!r} is also the image of "
                               f"{seen[voc.file_name]}; each image needs one annotation file")
        seen[voc.file_name] = path
        size = voc.size
        if image_folder is not None:
            try:
                found = image_width_height(image_folder / voc.file_name)
            except ImageReadError as error:
                _skip_image(result, f"{error} (annotations: {path})")
                continue
            if size is not None and size != found:
                mismatched.append(f"{path} says {size[0]}x{size[1]}, {voc.file_name} is {found[0]}x{found[1]}")
            size = size or found
        elif size is None:
            raise DatasetError(f"{path}:{voc.line}: no <size><width>/<height> (or 0 x 0); add them, or give "
                               "the image folder so that the sizes are read from the images")
        parsed.append(voc)
        sizes.append(size)
    names = _voc_class_names(parsed, class_names)
    result.coco = _voc_dataset(parsed, sizes, names)
    if mismatched:
        result.notes.append(f"{len(mismatched)} XML <size>(s) differ from the image (w x h, after EXIF rotation), "
                            f"e.g. {mismatched[0]}; training skips these images: fix <size> or the EXIF orientation")
    difficult = sum(ann["difficult"] for ann in result.coco["annotations"])
    if difficult:
        result.notes.append(f"{difficult} difficult object(s) kept as ordinary boxes (iscrowd 0, difficult 1)")
    return result


def _voc_class_names(parsed: list[VocAnnotation], class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return sorted({obj.name for voc in parsed for obj in voc.objects})
    for voc in parsed:
        for obj in voc.objects:
            if obj.name not in class_names:
                raise DatasetError(f"{voc.path}:{obj.line}: object {obj.name!r} is not one of the "
                                   f"{len(class_names)} class names given; add it to the class-names file")
    return list(class_names)


def _voc_dataset(parsed: list[VocAnnotation], sizes: list[tuple[int, int]], names: list[str]) -> dict[str, Any]:
    category_id = {name: index + 1 for index, name in enumerate(names)}
    images, annotations = [], []
    for image_id, (voc, (width, height)) in enumerate(zip(parsed, sizes), start=1):
        images.append({"id": image_id, "file_name": voc.file_name, "width": width, "height": height})
        for obj in voc.objects:
            xmin, ymin, xmax, ymax = obj.box
            w, h = xmax - xmin + 1, ymax - ymin + 1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id[obj.name],
                                "bbox": [xmin - 1, ymin - 1, w, h], "area": w * h, "iscrowd": 0,
                                "difficult": int(obj.difficult)})
    return _coco(images, annotations, names)


def _coco(images: list[dict[str, Any]], annotations: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _check_image_dir(image_dir: Path | None) -> None:
    if image_dir is not None and not image_dir.is_dir():
        raise DatasetError(f"image folder {image_dir} does not exist (or is not a folder); check the path")


def _skip_image(result: Conversion, reason: str) -> None:
    warnings.warn(f"skipping image: {reason}", stacklevel=3)
    result.skipped_images.append(reason)


# ------------------------------------------------------------------------------------------------
# YOLO
# ------------------------------------------------------------------------------------------------

def read_yolo_labels(path: str | Path, num_classes: int) -> list[tuple[int, float, float, float, float]]:
    """The boxes of a YOLO label file: ``(class index, cx, cy, w, h)``, fractions of the image size.
    Blank lines are skipped.

    Raises:
        DatasetError: ``file:line`` of the first bad line: not five fields, a class that is not an
            integer in 0..num_classes-1, a value that is not a number in [0, 1].
    """
    path = Path(path)
    text = _read_text(path, "label file")
    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields:
            boxes.append(_yolo_line(fields, num_classes, f"{path}:{number}"))
    return boxes


def _yolo_line(fields: list[str], num_classes: int, where: str) -> tuple[int, float, float, float, float]:
    if len(fields) != len(YOLO_FIELDS):
        raise DatasetError(f"{where}: expected 5 fields 'class cx cy w h', got {len(fields)}: "
                           f"{' '.join(fields)!r}; fix or remove the line")
    try:
        label = int(fields[0])
    except ValueError:
        raise DatasetError(f"{where}: class {fields[0]!r} is not an integer class index") from None
    if not 0 <= label < num_classes:
        raise DatasetError(f"{where}: class index {label} is out of range: there are {num_classes} class names "
                           f"(0..{num_classes - 1}); fix the line or the class-names file")
    values = []
    for name, text in zip(YOLO_FIELDS[1:], fields[1:]):
        try:
            value = float(text)
        except ValueError:
            raise DatasetError(f"{where}: {name} {text!r} is not a number") from None
        if not 0.0 <= value <= 1.0:
            raise DatasetError(f"{where}: {name} {text} is outside [0, 1]; YOLO boxes are fractions of the "
                               "image width and height")
        values.append(value)
    cx, cy, w, h = values
    return label, cx, cy, w, h


def yolo_to_coco(label_dir: str | Path, image_dir: str | Path, class_names: Sequence[str],
                 progress: bool = False) -> Conversion:
    """Convert YOLO labels to COCO.

    Args:
        label_dir: the label files: ``label_dir/<image path relative to image_dir>.txt``.
        image_dir: the images (searched recursively); every image becomes a COCO image with ids 1..N
            in path order, with no boxes when it has no label file. Unreadable images are skipped
            (one warning each, counted).
        class_names: class k is category id k + 1.
        progress: show a tqdm bar.

    Returns:
        The COCO dict (``bbox`` = ``[(cx - w/2) W, (cy - h/2) H, w W, h H]`` in pixels of the
        upright image of width W and height H, ``iscrowd`` 0) and what was skipped. An edge within
        :data:`~effdet.data.coco.EDGE_TOLERANCE` pixels outside the image (the rounding of the
        fractions) is put on the image border.
    """
    labels, images_root = Path(label_dir), Path(image_dir)
    if not labels.is_dir():
        raise DatasetError(f"label folder {labels} does not exist (or is not a folder); check the path")
    _check_image_dir(images_root)
    paths = find_images([images_root])
    if not paths:
        raise DatasetError(f"no images in {images_root}; give the folder of the images the labels belong to")
    result, images, annotations, used, unlabelled = Conversion({}), [], [], set(), 0
    for path in tqdm(paths, desc="read YOLO", unit="image", disable=not progress):
        relative = path.relative_to(images_root)
        label_file = labels / relative.with_suffix(".txt")
        boxes = read_yolo_labels(label_file, len(class_names)) if label_file.is_file() else None
        used.add(label_file)
        try:
            width, height = image_width_height(path)
        except ImageReadError as error:
            _skip_image(result, str(error))
            continue
        unlabelled += boxes is None
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": relative.as_posix(), "width": width, "height": height})
        for label, cx, cy, w, h in boxes or []:
            x1, x2 = _on_edge((cx - w / 2) * width, width), _on_edge((cx + w / 2) * width, width)
            y1, y2 = _on_edge((cy - h / 2) * height, height), _on_edge((cy + h / 2) * height, height)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    result.coco = _coco(images, annotations, class_names)
    if unlabelled:
        result.notes.append(f"{unlabelled} image(s) have no label file and are kept as images without boxes")
    orphans = [p for p in labels.rglob("*.txt") if p not in used and p.name != CLASSES_FILE]
    if orphans:
        result.notes.append(f"{len(orphans)} label file(s) have no image in {images_root} and were not used, "
                            f"e.g. {orphans[0]}")
    return result


def _on_edge(value: float, side: int) -> float:
    """``value`` (pixels), put on the border 0 or ``side`` when it is less than EDGE_TOLERANCE past it."""
    if -EDGE_TOLERANCE <= value < 0:
        return 0.0
    if side < value <= side + EDGE_TOLERANCE:
        return float(side)
    return value


def read_coco(path: str | Path) -> dict[str, Any]:
    """A COCO annotation file as a dict, after ``CocoDetection``'s validation (without the images;
    its warnings about dropped or clipped boxes are issued).

    Raises:
        DatasetError: the file is not a usable COCO detection file; the message says where.
    """
    CocoDetection(path, Path(path).parent, check_files=False)
    return load_annotation_json(path)


def coco_to_yolo(coco: dict[str, Any]) -> YoloLabels:
    """YOLO label lines of a COCO dict (validated, e.g. by ``CocoDetection``).

    Class k is the k-th category in id order (as ``CocoDetection`` labels them). Every image gets
    a label file, ``<file_name without suffix>.txt``, empty when it has no boxes. Crowd regions
    (YOLO has none) are left out, boxes are clipped to the image, and boxes with no area left are
    dropped; each kind is counted in a note. Values are written with 8 decimals.

    Raises:
        DatasetError: a ``file_name`` leaves the output folder (absolute or ``..``), two images
            map to the same label file, or an image's label file would be ``classes.txt``.
    """
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    label_of = {category["id"]: index for index, category in enumerate(categories)}
    by_image: dict[Any, list[dict[str, Any]]] = {image["id"]: [] for image in coco["images"]}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    files: dict[str, list[str]] = {}
    crowd = dropped = clipped = 0
    for image in coco["images"]:
        name = _label_file_name(image, files)
        width, height = image["width"], image["height"]
        lines = files[name] = []
        for ann in by_image[image["id"]]:
            if ann.get("iscrowd", 0):
                crowd += 1
                continue
            x, y, w, h = ann["bbox"]
            x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            if x2 <= x1 or y2 <= y1:
                dropped += 1
                continue
            clipped += max(abs(a - b) for a, b in zip((x1, y1, x2, y2), (x, y, x + w, y + h))) > EDGE_TOLERANCE
            values = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)
            lines.append(" ".join([str(label_of[ann["category_id"]]), *map(_fraction, values)]))
    notes = [text.format(n) for n, text in ((crowd, "{} crowd region(s) left out (YOLO has no crowd flag)"),
                                            (clipped, "{} box(es) clipped to their image"),
                                            (dropped, "{} box(es) with no area inside their image dropped")) if n]
    return YoloLabels([str(c["name"]) for c in categories], files, notes)


def _label_file_name(image: dict[str, Any], files: dict[str, list[str]]) -> str:
    path = PurePosixPath(str(image["file_name"]).replace("\\", "/"))
    name = path.with_suffix(".txt").as_posix()
    if path.is_absolute() or ".." in path.parts:
        raise DatasetError(f"image id {image['id']} has file_name {image['file_name']!r}, which leaves the "
                           "image folder; YOLO labels need file names relative to it")
    if name in files or name == CLASSES_FILE:
        why = "another image's" if name in files else "the class-names file's"
        raise DatasetError(f"image id {image['id']} ({image['file_name']!r}) would get the label file {name}, "
                           f"{why}; rename the image")
    return name


def _fraction(value: float) -> str:
    text = f"{min(max(value, 0.0), 1.0):.8f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def write_yolo(labels: YoloLabels, output_dir: str | Path, progress: bool = False) -> Path:
    """Write the label files and ``classes.txt`` (one name per line) under ``output_dir``, each
    atomically; files of the same names are replaced, others left. Returns ``output_dir``."""
    output = Path(output_dir)
    for name, lines in tqdm(labels.files.items(), desc="write YOLO", unit="file", disable=not progress):
        with atomic_write(output / name, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
    with atomic_write(output / CLASSES_FILE, "w", encoding="utf-8") as f:
        f.write("".join(name + "\n" for name in labels.class_names))
    return output


__all__ = ["CLASSES_FILE", "Conversion", "VocAnnotation", "VocObject", "YoloLabels", "coco_to_yolo", "image_width_height",
           "read_class_names", "read_coco", "read_voc", "read_yolo_labels", "voc_to_coco", "write_yolo", "yolo_to_coco"]
