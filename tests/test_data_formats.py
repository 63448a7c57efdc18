"""``effdet data convert / check / split``: Pascal VOC and YOLO to COCO and back to YOLO, the data
set summary and the train/val split; malformed files name file:line in one error line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effdet.cli.main import main as effdet_main
from effdet.data import CocoDetection, DatasetError
from effdet.data.formats import (coco_to_yolo, image_width_height, read_class_names, read_voc, read_yolo_labels,
                                 voc_to_coco, yolo_to_coco)
from effdet.data.summary import split_coco, summarize


def write_image(path: Path, width: int, height: int, orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (width, height), (90, 140, 200))
    if orientation is None:
        image.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(path, exif=exif)
    return path


def voc_xml(file_name: str, objects: list[tuple[str, int, int, int, int, int]], size: tuple[int, int] | None
            = (64, 48)) -> str:
    size_xml = f"  <size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>\n" if size else ""
    parts = [f"<annotation>\n  <folder>VOC</folder>\n  <filename>{file_name}</filename>\n{size_xml}"]
    for name, xmin, ymin, xmax, ymax, difficult in objects:
        parts.append(f"  <object>\n    <name>{name}</name>\n    <difficult>{difficult}</difficult>\n"
                     f"    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"
                     "</bndbox>\n  </object>\n")
    return "".join(parts) + "</annotation>\n"


@pytest.fixture
def voc(tmp_path: Path) -> tuple[Path, Path]:
    """Two VOC files (a: dog + difficult cat, b: one 1-pixel dog) and their images."""
    xml_dir, images = tmp_path / "Annotations", tmp_path / "JPEGImages"
    xml_dir.mkdir()
    (xml_dir / "a.xml").write_text(voc_xml("a.jpg", [("dog", 1, 1, 10, 20, 0), ("cat", 5, 6, 64, 48, 1)]))
    (xml_dir / "b.xml").write_text(voc_xml("b.jpg", [("dog", 3, 4, 3, 4, 0)]))
    write_image(images / "a.jpg", 64, 48)
    write_image(images / "b.jpg", 64, 48)
    return xml_dir, images


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1].startswith("effdet data: error: "), err
    return err.splitlines()[-1].removeprefix("effdet data: error: ")


# ------------------------------------------------------------------------------------------------
# Pascal VOC
# ------------------------------------------------------------------------------------------------

def test_voc_boxes_are_1_based_inclusive_and_classes_sorted(voc: tuple[Path, Path]) -> None:
    result = voc_to_coco(voc[0])
    assert result.coco["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert [img["file_name"] for img in result.coco["images"]] == ["a.jpg", "b.jpg"]
    boxes = [(a["image_id"], a["category_id"], a["bbox"], a["difficult"], a["iscrowd"])
             for a in result.coco["annotations"]]
    assert boxes == [(1, 2, [0, 0, 10, 20], 0, 0), (1, 1, [4, 5, 60, 43], 1, 0), (2, 2, [2, 3, 1, 1], 0, 0)]
    assert result.notes == ["1 difficult object(s) kept as ordinary boxes (iscrowd 0, difficult 1)"]


def test_voc_class_order_from_a_class_names_file(voc: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "names.txt").write_text("dog\ncat\nbird\n")
    coco = voc_to_coco(voc[0], class_names=read_class_names(tmp_path / "names.txt")).coco
    assert [c["name"] for c in coco["categories"]] == ["dog", "cat", "bird"]
    assert [a["category_id"] for a in coco["annotations"]] == [1, 2, 1]
    (tmp_path / "two.txt").write_text("dog\nbird\n")
    with pytest.raises(DatasetError) as error:
        voc_to_coco(voc[0], class_names=read_class_names(tmp_path / "two.txt"))
    assert str(error.value) == (f"{voc[0] / 'a.xml'}:10: object 'cat' is not one of the 2 class names given; "
                                "add it to the class-names file")


def test_voc_command_output_loads_for_training_and_pycocotools(voc: tuple[Path, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "voc.json"
    argv = ["data", "convert", "--from", "voc", "--to", "coco", str(voc[0]), "--images", str(voc[1]),
            "--output", str(out), "--no-progress"]
    assert effdet_main(argv) == 0
    printed = capsys.readouterr().out
    assert "converted voc -> coco" in printed and "2 images, 3 boxes, 2 classes" in printed
    assert printed.strip().endswith(f"annotations: {out}")
    dataset = CocoDetection(out, voc[1])
    image, target = dataset[0]
    assert tuple(image.shape) == (3, 48, 64)
    assert target["boxes"].tolist() == [[0, 0, 10, 20], [4, 5, 64, 48]]
    assert len(dataset.coco_api().getAnnIds()) == 3
    assert effdet_main(argv) == 2  # the output exists: --overwrite replaces it
    assert one_error_line(capsys) == f"--output {out} exists; pass --overwrite to replace it or choose another file"
    assert effdet_main(argv + ["--overwrite"]) == 0


def test_voc_size_from_the_image_and_missing_images_skipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    xml_dir, images = tmp_path / "xml", tmp_path / "img"
    xml_dir.mkdir()
    (xml_dir / "a.xml").write_text(voc_xml("a.jpg", [("dog", 1, 1, 5, 5, 0)], size=None))
    (xml_dir / "b.xml").write_text(voc_xml("b.jpg", [("dog", 1, 1, 5, 5, 0)]))
    (xml_dir / "c.xml").write_text(voc_xml("c.jpg", [("dog", 1, 1, 5, 5, 0)]))
    write_image(images / "a.jpg", 30, 20, orientation=6)  # stored 30 x 20, shown 20 x 30
    write_image(images / "b.jpg", 64, 40)
    with pytest.warns(UserWarning, match="skipping image: image file .*c.jpg does not exist"):
        result = voc_to_coco(xml_dir, images)
    assert [(i["file_name"], i["width"], i["height"]) for i in result.coco["images"]] == [("a.jpg", 20, 30),
                                                                                         ("b.jpg", 64, 48)]
    assert len(result.skipped_images) == 1
    assert result.notes[0].startswith(f"1 XML <size>(s) differ from the image (w x h, after EXIF rotation), "
                                      f"e.g. {xml_dir / 'b.xml'} says 64x48, b.jpg is 64x40")


@pytest.mark.parametrize("text, line, message", [
    ("<annotation>\n  <filename>a.jpg</filename>\n  <object><name>dog</name>\n</annotation>\n", 4,
     "not well-formed XML (mismatched tag, column 3); fix or re-export the file"),
    ("<annotation><filename>a.jpg", 1, "not well-formed XML (no element found, column 28); fix or re-export the file"),
    ("<annotation>\n  <size><width>4</width><height>4</height></size>\n</annotation>\n", 1,
     "<annotation> has no <filename>; add it (VOC needs <filename>, and <name> and <bndbox> with xmin ymin xmax "
     "ymax in every <object>)"),
    ("<annotation>\n<filename>a.jpg</filename>\n<size><width>4</width><height>4</height></size>\n<object>\n"
     "  <name>dog</name>\n  <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax></bndbox>\n</object>\n</annotation>",
     6, "<bndbox> has no <ymax>; add it (VOC needs <filename>, and <name> and <bndbox> with xmin ymin xmax ymax "
        "in every <object>)"),
    ("<annotation>\n<filename>a.jpg</filename>\n<size><width>4</width><height>4</height></size>\n<object>\n"
     "  <name>dog</name>\n</object>\n</annotation>", 4,
     "<object> has no <bndbox>; add it (VOC needs <filename>, and <name> and <bndbox> with xmin ymin xmax ymax "
     "in every <object>)"),
    ("<annotation>\n<filename>a.jpg</filename>\n<size><width>4</width><height>4</height></size>\n<object>\n"
     "  <name>dog</name>\n  <bndbox><xmin>1</xmin><ymin>one</ymin><xmax>2</xmax><ymax>2</ymax>\n  </bndbox>\n"
     "</object>\n</annotation>", 6, "<ymin> is 'one', not a number"),
    ("<annotation>\n<filename>a.jpg</filename>\n<size><width>4</width><height>4</height></size>\n<object>\n"
     "  <name>dog</name>\n  <bndbox><xmin>3</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox>\n"
     "</object>\n</annotation>", 6, "<bndbox> of 'dog' has xmin 3 xmax 2 ymin 1 ymax 2; the max must not be below "
                                    "the min"),
    ("<annotation>\n<filename>a.jpg</filename>\n</annotation>\n", 1,
     "no <size><width>/<height> (or 0 x 0); add them, or give the image folder so that the sizes are read from the "
     "images"),
    ("<voc>\n</voc>\n", 1, "the root element is <voc>, not <annotation>; is this a Pascal VOC file?"),
])
def test_malformed_voc_names_file_and_line(text: str, line: int, message: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(DatasetError) as error:
        voc_to_coco(path)
    assert str(error.value) == f"{path}:{line}: {message}"
    argv = ["data", "convert", "--from", "voc", "--to", "coco", str(path), "--output", str(tmp_path / "o.json")]
    assert effdet_main(argv) == 2
    assert one_error_line(capsys) == f"{path}:{line}: {message}"
    assert not (tmp_path / "o.json").exists()


def test_read_voc_keeps_object_lines(voc: tuple[Path, Path]) -> None:
    parsed = read_voc(voc[0] / "a.xml")
    assert (parsed.file_name, parsed.size, parsed.line) == ("a.jpg", (64, 48), 1)
    assert [(o.name, o.box, o.difficult, o.line) for o in parsed.objects] == [
        ("dog", (1, 1, 10, 20), False, 5), ("cat", (5, 6, 64, 48), True, 10)]


# ------------------------------------------------------------------------------------------------
# YOLO
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.2", "expected 5 fields 'class cx cy w h', got 4: '0 0.5 0.5 0.2'; fix or remove the line"),
    ("0 0.5 0.5 0.2 0.2 0.9", "expected 5 fields 'class cx cy w h', got 6: '0 0.5 0.5 0.2 0.2 0.9'; fix or remove "
                              "the line"),
    ("0 0.5 abc 0.2 0.2", "cy 'abc' is not a number"),
    ("dog 0.5 0.5 0.2 0.2", "class 'dog' is not an integer class index"),
    ("3 0.5 0.5 0.2 0.2", "class index 3 is out of range: there are 3 class names (0..2); fix the line or the "
                          "class-names file"),
    ("-1 0.5 0.5 0.2 0.2", "class index -1 is out of range: there are 3 class names (0..2); fix the line or the "
                           "class-names file"),
    ("1 0.5 0.5 1.2 0.2", "w 1.2 is outside [0, 1]; YOLO boxes are fractions of the image width and height"),
    ("1 -0.1 0.5 0.2 0.2", "cx -0.1 is outside [0, 1]; YOLO boxes are fractions of the image width and height"),
    ("1 nan 0.5 0.2 0.2", "cx nan is outside [0, 1]; YOLO boxes are fractions of the image width and height"),
])
def test_malformed_yolo_line_names_file_and_line(line: str, message: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    labels, images = tmp_path / "labels", tmp_path / "images"
    labels.mkdir()
    (labels / "classes.txt").write_text("a\nb\nc\n")
    (labels / "x.txt").write_text(f"0 0.5 0.5 0.1 0.1\n\n{line}\n")
    write_image(images / "x.png", 32, 32)
    with pytest.raises(DatasetError) as error:
        read_yolo_labels(labels / "x.txt", 3)
    assert str(error.value) == f"{labels / 'x.txt'}:3: {message}"
    argv = ["data", "convert", "--from", "yolo", "--to", "coco", str(labels), "--images", str(images),
            "--output", str(tmp_path / "o.json"), "--no-progress"]
    assert effdet_main(argv) == 2
    assert one_error_line(capsys) == f"{labels / 'x.txt'}:3: {message}"


def test_yolo_coco_yolo_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    labels, images = tmp_path / "labels", tmp_path / "images"
    expected = {}
    for index, (width, height) in enumerate([(64, 48), (37, 91), (120, 33)]):
        write_image(images / "sub" / f"im{index}.jpg", width, height)
        wh = rng.uniform(0.05, 0.5, size=(4, 2))
        centre = rng.uniform(wh / 2, 1 - wh / 2)
        rows = [(int(rng.integers(0, 2)), *c, *s) for c, s in zip(centre, wh)]
        expected[f"sub/im{index}.txt"] = rows
        (labels / "sub").mkdir(parents=True, exist_ok=True)
        (labels / "sub" / f"im{index}.txt").write_text("".join(" ".join(map(str, row)) + "\n" for row in rows))
    write_image(images / "sub" / "empty.jpg", 20, 20)  # no label file: an image without boxes
    (tmp_path / "data.yaml").write_text("nc: 2\nnames: {0: person, 1: car}\n")
    coco_file, back = tmp_path / "coco.json", tmp_path / "back"
    assert effdet_main(["data", "convert", "--from", "yolo", "--to", "coco", str(labels), "--images", str(images),
                        "--class-names", str(tmp_path / "data.yaml"), "--output", str(coco_file)]) == 0
    printed = capsys.readouterr().out
    assert "4 images, 12 boxes, 2 classes" in printed
    assert "1 image(s) have no label file and are kept as images without boxes" in printed
    assert len(CocoDetection(coco_file, images)) == 4
    assert effdet_main(["data", "convert", "--from", "coco", "--to", "yolo", str(coco_file),
                        "--output", str(back)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"labels + classes.txt: {back}")
    assert read_class_names(back / "classes.txt") == ["person", "car"]
    assert (back / "sub" / "empty.txt").read_text() == ""
    for name, rows in expected.items():
        got = read_yolo_labels(back / name, 2)
        assert [r[0] for r in got] == [r[0] for r in rows]
        np.testing.assert_allclose(np.array([r[1:] for r in got]), np.array([r[1:] for r in rows]), atol=1e-6, rtol=0)


def test_exif_rotated_image_size_matches_training(tmp_path: Path) -> None:
    labels, images = tmp_path / "labels", tmp_path / "images"
    labels.mkdir()
    write_image(images / "r.jpg", 40, 24, orientation=8)
    (labels / "r.txt").write_text("0 0.5 0.5 0.5 0.25\n")
    assert image_width_height(images / "r.jpg") == (24, 40)
    coco = yolo_to_coco(labels, images, ["a"]).coco
    assert coco["images"][0]["width"] == 24 and coco["annotations"][0]["bbox"] == [6.0, 15.0, 12.0, 10.0]
    (tmp_path / "r.json").write_text(json.dumps(coco))
    image, target = CocoDetection(tmp_path / "r.json", images)[0]  # None (and a warning) if the sizes differed
    assert tuple(image.shape) == (3, 40, 24)


def test_unreadable_image_is_skipped_with_one_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    labels, images = tmp_path / "labels", tmp_path / "images"
    labels.mkdir()
    (labels / "classes.txt").write_text("a\n")
    write_image(images / "good.png", 16, 16)
    (images / "bad.jpg").write_bytes(b"not an image")
    (labels / "good.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (labels / "bad.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    out = tmp_path / "o.json"
    with pytest.warns(UserWarning) as record:
        assert effdet_main(["data", "convert", "--from", "yolo", "--to", "coco", str(labels), "--images",
                            str(images), "--output", str(out), "--no-progress"]) == 0
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and messages[0].startswith(f"skipping image: cannot read image {images / 'bad.jpg'}")
    assert "\n" not in messages[0]
    printed = capsys.readouterr().out
    assert "1 images, 1 boxes" in printed and "skipped 1 unreadable or missing image(s)" in printed


def test_class_names_files(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("names: [cat, dog]\n")
    (tmp_path / "nc.yaml").write_text("nc: 3\nnames: [cat, dog]\n")
    (tmp_path / "gap.txt").write_text("cat\n\ndog\n")
    (tmp_path / "twice.txt").write_text("cat\ndog\ncat\n")
    assert read_class_names(tmp_path / "list.yaml") == ["cat", "dog"]
    for name, message in (("nc.yaml", f"{tmp_path / 'nc.yaml'}: nc is 3 but 'names' lists 2 classes"),
                          ("gap.txt", f"{tmp_path / 'gap.txt'}:2: empty class name; the file needs one name per "
                                      "line (line k + 1 names class k), without blank lines between them"),
                          ("twice.txt", f"{tmp_path / 'twice.txt'}:3: class name 'cat' repeats line 1; class names "
                                        "must be unique")):
        with pytest.raises(DatasetError) as error:
            read_class_names(tmp_path / name)
        assert str(error.value) == message


def test_class_names_from_text_json_and_yaml_agree(tmp_path: Path) -> None:
    """One reader for predict and data convert: a text file, a JSON list (by suffix or by its
    leading '['), and a YOLO data.yaml give the same names."""
    (tmp_path / "n.txt").write_text("cat\n dog \n\n")
    (tmp_path / "n.json").write_text('["cat", "dog"]')
    (tmp_path / "list.names").write_text(' ["cat", " dog"]\n')
    (tmp_path / "data.yaml").write_text("names: {0: cat, 1: dog}\n")
    for name in ("n.txt", "n.json", "list.names", "data.yaml"):
        assert read_class_names(tmp_path / name) == ["cat", "dog"], name
    for text, message in (('["cat", 3]', "must hold a non-empty JSON list of strings"),
                          ("[]", "must hold a non-empty JSON list of strings"),
                          ('["cat", "cat"]', "class names must be unique and not empty"),
                          ('["cat",', "is not valid JSON")):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(DatasetError, match=message):
            read_class_names(tmp_path / "bad.json")


def test_predict_and_data_convert_read_class_names_alike() -> None:
    import effdet.cli.data
    import effdet.cli.predict

    assert effdet.cli.predict.read_class_names is effdet.cli.data.read_class_names is read_class_names


def test_data_yaml_with_aliases_is_refused(tmp_path: Path) -> None:
    """A YOLO data.yaml goes through the recipes' alias-free YAML reader: a few nested aliases
    would expand to gigabytes."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nnames: [*b, *b]\n"
    (tmp_path / "data.yaml").write_text(bomb)
    with pytest.raises(DatasetError) as error:
        read_class_names(tmp_path / "data.yaml")
    assert str(error.value).startswith(f"{tmp_path / 'data.yaml'}, line 2: YAML aliases (*name) are not accepted")


def test_coco_to_yolo_leaves_out_crowd_and_clips() -> None:
    coco = {"images": [{"id": 5, "file_name": "a/b.jpg", "width": 100, "height": 50}],
            "categories": [{"id": 9, "name": "z"}, {"id": 2, "name": "y"}],
            "annotations": [{"id": 1, "image_id": 5, "category_id": 9, "bbox": [90, 10, 20, 10]},
                            {"id": 2, "image_id": 5, "category_id": 2, "bbox": [0, 0, 10, 10], "iscrowd": 1},
                            {"id": 3, "image_id": 5, "category_id": 2, "bbox": [0, 0, 50, 25]}]}
    labels = coco_to_yolo(coco)
    assert labels.class_names == ["y", "z"]
    assert labels.files == {"a/b.txt": ["1 0.95 0.3 0.1 0.2", "0 0.25 0.25 0.5 0.5"]}
    assert labels.notes == ["1 crowd region(s) left out (YOLO has no crowd flag)", "1 box(es) clipped to their image"]


def test_convert_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["data", "convert", str(tmp_path), "--output", str(tmp_path / "o.json")]
    for extra, message in ((["--from", "yolo", "--to", "coco"], "--from yolo needs --images DIR: the image files give "
                                                                "the images' list and sizes"),
                           (["--from", "coco", "--to", "coco"], "--from and --to are both coco; nothing to convert"),
                           (["--from", "yolo", "--to", "coco", "--images", str(tmp_path)],
                            f"no class names: give --class-names FILE (one name per line, or a data.yaml with "
                            f"names:), or put classes.txt in {tmp_path}")):
        assert effdet_main(base + extra) == 2
        assert one_error_line(capsys) == message


# ------------------------------------------------------------------------------------------------
# check and split
# ------------------------------------------------------------------------------------------------

def hand_made(tmp_path: Path) -> tuple[Path, Path]:
    """4 images (one without boxes, one corrupt), 5 boxes: small, medium, large, crowd, one past the border."""
    images = tmp_path / "images"
    for name in ("a.png", "b.png", "c.png"):
        write_image(images / name, 200, 100)
    (images / "d.jpg").write_bytes(b"\xff\xd8 truncated")
    data = {"images": [{"id": i + 1, "file_name": name, "width": 200, "height": 100}
                       for i, name in enumerate(["a.png", "b.png", "c.png", "d.jpg"])],
            "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}, {"id": 8, "name": "owl"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 20]},
                            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 50]},
                            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 100, 100]},
                            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1},
                            {"id": 5, "image_id": 4, "category_id": 3, "bbox": [190, 0, 30, 30]}]}
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    return ann, images


def test_check_prints_exact_counts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ann, images = hand_made(tmp_path)
    assert effdet_main(["data", "check", str(ann), str(images), "--read-images", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:14] == [
        f"annotations: {ann}",
        f"images:      {images}",
        "  4 images, 1 without boxes",
        "  5 boxes, 1 crowd",
        "  3 classes:",
        "        id  name                   boxes  images",
        "         1  dog                        2       1",
        "         3  cat                        3       2",
        "         8  owl                        0       0",
        "  box width  px: min 10, median 35, max 100",
        "  box height px: min 20, median 40, max 100",
        "  box sizes (area w x h): 2 small (< 32²), 1 medium, 1 large (>= 96²)",
        "problems: 2",
        f"  - {ann}: clipped 1 box(es) extending past the image border (e.g. annotation ids 5). Fix the annotations "
        "to silence this.",
    ]
    assert lines[14] == "  - 1 unreadable image(s):"
    assert lines[15].startswith(f"      cannot read image {images / 'd.jpg'}: ")
    assert lines[16:] == ["usable for training: yes"]


def test_check_exit_code_2_when_unusable(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ann, images = hand_made(tmp_path)
    (images / "b.png").unlink()
    assert effdet_main(["data", "check", str(ann), str(images)]) == 2
    assert one_error_line(capsys) == (f"1 of 4 image files listed in {ann} are missing from {images}, e.g. "
                                      "['b.png']; check the image folder")
    (tmp_path / "bad.json").write_text('{"images": []}')
    assert effdet_main(["data", "check", str(tmp_path / "bad.json"), str(images)]) == 2
    assert "missing top-level key(s) ['annotations', 'categories']" in one_error_line(capsys)


def test_summary_without_reading_images(tmp_path: Path) -> None:
    ann, images = hand_made(tmp_path)
    summary = summarize(ann, images)
    assert (summary.images, summary.annotations, summary.crowd, summary.images_without_boxes) == (4, 5, 1, 1)
    assert summary.unreadable == [] and summary.missing_files == [] and summary.unusable_reason() is None


def test_split_is_reproducible_disjoint_and_complete(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = {"info": {"v": 1}, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "images": [{"id": i, "file_name": f"{i}.jpg", "width": 10, "height": 10} for i in range(1, 21)],
            "annotations": [{"id": i, "image_id": 1 + i % 20, "category_id": 1, "bbox": [0, 0, 5, 5]}
                            for i in range(1, 31)]}
    train, val = split_coco(data, 0.2, seed=3)
    assert split_coco(data, 0.2, seed=3) == (train, val)
    train_ids, val_ids = {i["id"] for i in train["images"]}, {i["id"] for i in val["images"]}
    assert len(val_ids) == 4 and not train_ids & val_ids and train_ids | val_ids == set(range(1, 21))
    assert all(a["image_id"] in val_ids for a in val["annotations"])
    assert len(train["annotations"]) + len(val["annotations"]) == 30
    assert train["categories"] == val["categories"] == data["categories"] and val["info"] == {"v": 1}
    assert {i["id"] for i in split_coco(data, 0.2, seed=4)[1]["images"]} != val_ids

    ann = tmp_path / "all.json"
    ann.write_text(json.dumps(data))
    out = tmp_path / "split"
    argv = ["data", "split", str(ann), "--output-dir", str(out), "--val-fraction", "0.2", "--seed", "3"]
    assert effdet_main(argv) == 0
    assert capsys.readouterr().out.splitlines() == [f"train: 16 images, 24 boxes -> {out / 'train.json'}",
                                                    f"val: 4 images, 6 boxes -> {out / 'val.json'}"]
    assert json.loads((out / "val.json").read_text()) == val
    assert effdet_main(argv) == 2
    assert one_error_line(capsys) == (f"{out / 'train.json'} exists; pass --overwrite to replace it or choose "
                                      "another --output-dir")
    (tmp_path / "train.json").write_text(json.dumps(data))
    assert effdet_main(["data", "split", str(tmp_path / "train.json"), "--output-dir", str(tmp_path),
                        "--overwrite"]) == 2
    assert one_error_line(capsys) == (f"--output-dir {tmp_path / 'train.json'} is the ANN input; writing it would "
                                      "destroy that file. Choose another output file")


def test_split_needs_a_fraction_in_the_open_interval(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        effdet_main(["data", "split", "a.json", "--output-dir", "x", "--val-fraction", "1"])
    assert "--val-fraction: must be in (0, 1), got 1" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# no output replaces an input; bounded reads; class names; round trips (issue 20)
# ------------------------------------------------------------------------------------------------

def test_convert_never_writes_over_an_input_even_with_overwrite(voc: tuple[Path, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    xml_dir, images = voc
    names = tmp_path / "out" / "classes.txt"
    names.parent.mkdir()
    names.write_text("dog\ncat\n")
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (labels / "classes.txt").write_text("dog\n")
    write_image(tmp_path / "yimg" / "a.jpg", 64, 48)
    cases = [  # (argv, the input that must survive, the flag it was given by)
        (["--from", "voc", "--to", "coco", str(xml_dir), "--output", str(xml_dir / "a.xml")], xml_dir / "a.xml", "SRC"),
        (["--from", "voc", "--to", "yolo", str(xml_dir), "--class-names", str(names), "--output", str(names.parent)],
         names, "--class-names"),
        (["--from", "yolo", "--to", "coco", str(labels), "--images", str(tmp_path / "yimg"),
          "--output", str(labels / "a.txt")], labels / "a.txt", "SRC"),
        (["--from", "yolo", "--to", "coco", str(labels), "--images", str(tmp_path / "yimg"),
          "--output", str(labels / "classes.txt")], labels / "classes.txt", "SRC"),
        (["--from", "voc", "--to", "coco", str(xml_dir), "--images", str(images),
          "--output", str(images / "a.jpg")], images / "a.jpg", "--images"),
    ]
    for argv, kept, flag in cases:
        before = kept.read_bytes()
        assert effdet_main(["data", "convert", *argv, "--overwrite", "--no-progress"]) == 2, argv
        message = one_error_line(capsys)
        assert str(kept) in message and flag in message, message
        assert kept.read_bytes() == before


def test_anchors_and_split_never_write_over_an_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ann, _ = hand_made(tmp_path)
    before = ann.read_bytes()
    assert effdet_main(["data", "anchors", str(ann), "--output", str(ann)]) == 2
    assert one_error_line(capsys) == (f"--output {ann} is the ANN input; writing it would destroy that file. "
                                      "Choose another output file")
    assert ann.read_bytes() == before


@pytest.mark.parametrize("kind", ["classes.txt", "data.yaml", "voc.xml", "label.txt"])
def test_text_inputs_that_are_pipes_are_refused_not_read_forever(kind: str, tmp_path: Path) -> None:
    import os
    import threading

    fifo = tmp_path / kind
    os.mkfifo(fifo)
    read = {"classes.txt": read_class_names, "data.yaml": read_class_names, "voc.xml": read_voc,
            "label.txt": lambda path: read_yolo_labels(path, 2)}[kind]
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            read(fifo)
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - the test inspects it
            outcome.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # unblock the reader (it waits for a writer), then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail(f"reading the pipe {fifo} as a {kind} blocked")
    assert isinstance(outcome[0], DatasetError) and str(fifo) in str(outcome[0])
    assert "not a regular file" in str(outcome[0])


@pytest.mark.parametrize("text, where, shown", [
    ("dog\nc\tat\n", ":2", "'c\\tat'"),
    ("dog\ncat\x00\n", ":2", "'cat\\x00'"),
    ("names: ['dog', \"c\\nat\"]\n", ": names[1]", "'c\\nat'"),
    ("names: {0: dog, 1: \"ca\\rt\"}\n", ": names[1]", "'ca\\rt'"),
])
def test_class_names_with_control_characters_are_refused(text: str, where: str, shown: str, tmp_path: Path) -> None:
    path = tmp_path / ("names.yaml" if text.startswith("names") else "classes.txt")
    path.write_text(text)
    with pytest.raises(DatasetError) as info:
        read_class_names(path)
    assert str(info.value).startswith(f"{path}{where}: class name {shown} contains ")


def test_voc_name_with_a_line_break_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(voc_xml("a.jpg", [("dog", 1, 1, 10, 20, 0)]).replace("<name>dog</name>", "<name>d&#10;og</name>"))
    with pytest.raises(DatasetError, match=r"a\.xml:\d+: <name>: class name 'd\\nog' contains '\\n'"):
        read_voc(path)


def test_coco_category_with_a_newline_is_refused_and_no_classes_file_written(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [1, 1, 5, 5]}],
            "categories": [{"id": 2, "name": "dog"}, {"id": 4, "name": "hot\ndog"}, {"id": 5, "name": "cat"},
                           {"id": 6, "name": "owl"}]}
    ann, out = tmp_path / "ann.json", tmp_path / "labels"
    ann.write_text(json.dumps(data))
    assert effdet_main(["data", "convert", "--from", "coco", "--to", "yolo", str(ann), "--output", str(out)]) == 2
    assert one_error_line(capsys) == (f"{ann}: category id 4: class name 'hot\\ndog' contains '\\n'; class names must "
                                      "not contain line breaks, tabs or other control characters: rename it")
    assert not (out / "classes.txt").exists()


def test_coco_yolo_coco_round_trip_keeps_edge_boxes_without_warnings(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    write_image(tmp_path / "images" / "a.jpg", 640, 480)
    boxes = [[0, 0, 37.3, 20], [0, 10, 33.3, 20], [600.7, 100, 39.3, 50], [10, 450.1, 20, 29.9]]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}],
            "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": box, "area": box[2] * box[3],
                             "iscrowd": 0} for i, box in enumerate(boxes)],
            "categories": [{"id": 1, "name": "thing"}]}
    ann, labels, back = tmp_path / "ann.json", tmp_path / "labels", tmp_path / "back.json"
    ann.write_text(json.dumps(data))
    assert effdet_main(["data", "convert", "--from", "coco", "--to", "yolo", str(ann), "--output", str(labels)]) == 0
    assert effdet_main(["data", "convert", "--from", "yolo", "--to", "coco", str(labels), "--images",
                        str(tmp_path / "images"), "--output", str(back), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "clipped" not in captured.out + captured.err, captured
    got = json.loads(back.read_text())["annotations"]
    np.testing.assert_allclose([a["bbox"] for a in got], boxes, atol=1e-5, rtol=0)
    x = np.array([a["bbox"] for a in got])
    assert (x[:, :2] >= 0).all() and (x[:, 0] + x[:, 2] <= 640).all() and (x[:, 1] + x[:, 3] <= 480).all()


def test_check_refuses_images_listed_twice(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ann, images = hand_made(tmp_path)
    data = json.loads(ann.read_text())
    data["images"][2]["file_name"] = "a.png"
    ann.write_text(json.dumps(data))
    assert effdet_main(["data", "check", str(ann), str(images)]) == 2
    assert one_error_line(capsys) == (f"{ann}: image ids 1 and 3 both have file_name 'a.png'; list each image file "
                                      "once, with all its annotations")


def test_voc_file_in_a_declared_non_utf8_encoding_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    text = voc_xml("a.jpg", [("d\u00f6g", 1, 1, 10, 20, 0)])
    path.write_bytes(('<?xml version="1.0" encoding="ISO-8859-1"?>\n' + text).encode("latin-1"))
    assert [obj.name for obj in read_voc(path).objects] == ["d\u00f6g"]
