"""OpenVINO IR export of the network, in fp32 or int8 (post-training quantisation with NNCF).

:func:`export_openvino` converts a :class:`~effdet.export.onnx.NetworkGraph` (the network
alone; decoding and NMS stay in this project's post-processing) through ONNX into OpenVINO IR
(``model.xml`` + ``model.bin``, fp32 weights), and with ``calibration`` images quantises it to
int8 with NNCF's post-training quantisation (``nncf.quantize``: per-channel symmetric int8
weights, int8 activations with ranges from the calibration images, fast bias correction). The
squeeze-excite gates' small matrix products stay in floating point (NNCF 3.4 cannot collect
statistics on their 2-D inputs; they are a negligible share of the work). The model's config,
class names and input format go into the IR's ``rt_info`` (key ``effdet``), so ``effdet predict``
and ``effdet val`` run the file as they run a checkpoint (:mod:`effdet.inference.backends`).

Why OpenVINO + NNCF for int8: measured side by side (D0, 512 px, batch 1, 2 threads, an Intel Xeon
with AVX-512 VNNI and AMX), ONNX Runtime's static QDQ quantisation of the network ran in 69 ms,
slower than its fp32 (47 ms); NNCF's int8 IR in 44-46 ms, and 28.7 ms once the graph is converted
with ``openvino.convert_model`` (SiLU fused into one Swish op before quantisation) and compiled
for a static batch. PyTorch's PT2E quantisation now lives in the separate torchao package and
needs torch.compile; it was not measured.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from effdet.data.images import ImageReadError, find_images, read_image_reduced
from effdet.data.letterbox import letterbox
from effdet.export.onnx import (ExportCheck, ExportError, NetworkGraph, example_input, export_onnx, graph_metadata,
                                verify_network)
from effdet.fileio import atomic_path, temporary_folder
from effdet.inference.backends import METADATA_KEY, ExportedNetwork

DEFAULT_CALIB_COUNT = 300
"""Calibration images by default: NNCF's own default subset size."""


def _openvino(int8: bool = False) -> Any:
    """The openvino module. ``int8``: check that NNCF is installed too (the child process of
    :func:`_quantize_in_subprocess` imports it, see :func:`_nncf`)."""
    missing = [name for name in ("openvino", "nncf") if importlib.util.find_spec(name) is None
               and (name == "openvino" or int8)]
    if missing:
        raise ExportError(f"OpenVINO {'int8 ' if int8 else ''}export needs the {' and '.join(missing)} package(s), "
                          'which are not installed: pip install -e ".[export]"')
    import openvino

    return openvino


def _nncf() -> Any:
    # NNCF logs every node it leaves alone at INFO, and importing it makes torch warn that there is no
    # CUDA: keep its warnings and errors, and its progress bars
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf

    nncf.set_log_level(logging.WARNING)
    return nncf


def calibration_images(sources: Sequence[str | Path], image_size: tuple[int, int], count: int = DEFAULT_CALIB_COUNT,
                       seed: int = 0, progress: bool = True) -> list[np.ndarray]:
    """Up to ``count`` images from files / folders / globs (a seeded random sample when there are
    more), letterboxed to ``image_size`` like the predictor's input: a list of 1 x 3 x H x W uint8
    arrays. Unreadable files are skipped with one warning; none readable is an :class:`ExportError`."""
    try:
        paths = find_images(sources)
    except FileNotFoundError as error:
        raise ExportError(f"calibration images: {error}") from None
    if len(paths) > count:
        paths = sorted(random.Random(seed).sample(paths, count), key=str)
    arrays, bad = [], []
    for path in tqdm(paths, desc="calibration images", unit="img", disable=not progress):
        try:
            boxed, _ = letterbox(read_image_reduced(path, image_size).pixels, image_size)  # large JPEGs at 1/2-1/8
        except ImageReadError:
            bad.append(path)
            continue
        arrays.append(np.ascontiguousarray(boxed.transpose(2, 0, 1)[None]))
    if bad:
        warnings.warn(f"{len(bad)} unreadable calibration image(s) skipped, e.g. {bad[0]}", stacklevel=2)
    if not arrays:
        raise ExportError(f"no readable calibration images in {', '.join(map(str, sources))}: give a folder of "
                          "images like those the model will see (a few hundred from the training set)")
    return arrays


def export_openvino(graph: NetworkGraph, path: str | Path, calibration: Iterable[np.ndarray] | None = None,
                    metadata: dict[str, Any] | None = None, verify: bool = True,
                    sample: torch.Tensor | None = None) -> ExportCheck | None:
    """Write ``graph`` as OpenVINO IR ``path`` (``.xml``, with its ``.bin`` beside it; both atomically).

    Args:
        graph: the network to export (its ``input_format`` decides what the IR takes).
        path: the ``.xml`` file.
        calibration: images (1 x 3 x H x W arrays of the graph's input format, e.g. from
            :func:`calibration_images`) to quantise the network to int8 with; None: fp32.
        metadata: extra metadata (class names, category ids, source), stored with the graph's own.
        verify: fp32: run the IR with OpenVINO and compare its decoded detections with PyTorch's
            (:func:`~effdet.export.onnx.verify_network`); int8: report how far its detections are
            from PyTorch's (int8 is judged by ``effdet val``, not by equality).
        sample: images for the check (default: the graph's example input, 2 images).

    Returns:
        The check, or None when not verified.

    Raises:
        ExportError: OpenVINO / NNCF missing, or the fp32 IR disagrees with PyTorch.
        WriteError: a file could not be written (OpenVINO's ``basic_ios::clear`` on a full disk
            included), naming it; any previous ``path`` stays intact.
    """
    ov = _openvino(int8=calibration is not None)
    path = Path(path)
    if path.suffix.lower() != ".xml":
        raise ExportError(f"an OpenVINO IR file is named .xml (its weights go to .bin beside it), got {path}")
    calibration = list(calibration) if calibration is not None else None
    info = {**graph_metadata(graph), "precision": "int8" if calibration else "fp32", "format": "openvino",
            **(metadata or {})}
    # the intermediate ONNX file, in effdet-export-PID-XXXXXXXX: one that a killed export left is removed here
    with temporary_folder("effdet-export") as work:
        onnx_file = work / "network.onnx"
        export_onnx(graph, onnx_file, verify=False)
        # convert_model, not read_model: its graph transformations fuse x * sigmoid(x) into one Swish
        # (and fold the shape arithmetic), so that NNCF does not quantise inside the activation: int8
        # D0 at 512 px then ran in 28.7 ms instead of 46.7 ms (measured alternately in one run)
        model = ov.convert_model(str(onnx_file))
        if calibration:
            model = _quantize_in_subprocess(ov, model, calibration, work)
            info["calibration_images"] = len(calibration)
        model.set_rt_info(json.dumps(info), [METADATA_KEY])
        check = save_ir(ov, model, path, (lambda xml: _verify(graph, xml, path, sample, int8=bool(calibration)))
                        if verify else None)
    return check


def save_ir(ov: Any, model: Any, path: Path, check: Callable[[Path], ExportCheck] | None = None
            ) -> ExportCheck | None:
    """Write the OpenVINO ``model`` as ``path`` (``.xml``) and its ``.bin`` beside it, both atomically
    (an existing pair stays intact on failure); ``check(temporary xml)`` runs on the written files before
    they replace ``path`` (its exception leaves nothing written). Returns the check's result, or None."""
    result = None
    with atomic_path(path, suffix=".xml") as xml_tmp:
        bin_written = xml_tmp.with_suffix(".bin")
        try:
            with atomic_path(path.with_suffix(".bin")) as bin_tmp:
                ov.save_model(model, str(xml_tmp), compress_to_fp16=False)
                if check is not None:  # before the .bin moves away from the temporary .xml
                    result = check(xml_tmp)
                os.replace(bin_written, bin_tmp)
        finally:
            bin_written.unlink(missing_ok=True)
    return result


def _quantize_in_subprocess(ov: Any, model: Any, calibration: list[np.ndarray], work: Path) -> Any:
    """NNCF's int8 model of ``model``, quantised in a child process. ``nncf.quantize`` imports NNCF's
    PyTorch hooks whenever torch is importable, and a process that later trains crashed after it
    (a segmentation fault in the next training step, seen in the test suite); the child keeps this
    process as it was."""
    fp32, int8, arrays = work / "fp32.xml", work / "int8.xml", work / "calibration.npy"
    ov.save_model(model, str(fp32), compress_to_fp16=False)
    np.save(arrays, np.concatenate(calibration))
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    code = "import sys\nfrom effdet.export.openvino import quantize_file\nquantize_file(*sys.argv[1:])\n"
    done = subprocess.run([sys.executable, "-c", code, str(fp32), str(arrays), str(int8)], env=env,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode or not int8.is_file():
        raise ExportError(f"NNCF quantisation failed (exit code {done.returncode}): "
                          f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no message'}")
    return ov.Core().read_model(str(int8))


def quantize_file(fp32_xml: str, calibration_npy: str, int8_xml: str) -> None:
    """Quantise the IR ``fp32_xml`` to int8 with NNCF on the images in ``calibration_npy`` (N x 3 x H x W,
    one calibration sample per image) and save it as ``int8_xml`` (run in a child process by
    :func:`export_openvino`)."""
    ov, nncf = _openvino(int8=True), _nncf()
    images = np.load(calibration_npy)
    samples = [images[i:i + 1] for i in range(len(images))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = nncf.quantize(ov.Core().read_model(fp32_xml), nncf.Dataset(samples), subset_size=len(samples),
                              ignored_scope=nncf.IgnoredScope(types=["MatMul"], validate=False))
    ov.save_model(model, int8_xml, compress_to_fp16=False)


def _verify(graph: NetworkGraph, xml: Path, path: Path, sample: torch.Tensor | None, int8: bool) -> ExportCheck:
    images, valid = (sample, None) if sample is not None else example_input(graph, 2)
    if valid is None:
        valid = torch.tensor([list(graph.image_size)], dtype=torch.float32).expand(images.shape[0], 2)
    exported = ExportedNetwork(xml, "openvino")
    if not int8:
        check = verify_network(graph, exported, images, valid, name="OpenVINO")
        if not check.ok:
            raise ExportError(f"OpenVINO disagrees with PyTorch for {path}: {check.message}")
        return check
    # int8 is judged by its mAP (effdet val), not by equality: report how far its class
    # probabilities and box regressions are from the fp32 network's on the same images
    x = images if graph.input_format == "uint8" else images.float()
    with torch.no_grad():
        ours = graph(x)
    class_maps, box_maps = exported(x)
    theirs = (*class_maps, *box_maps)
    levels = len(ours) // 2
    prob = max(float((a.sigmoid() - b.sigmoid()).abs().max()) for a, b in zip(ours[:levels], theirs[:levels]))
    mean_prob = float(torch.cat([(a.sigmoid() - b.sigmoid()).abs().flatten()
                                 for a, b in zip(ours[:levels], theirs[:levels])]).mean())
    box = max(float((a - b).abs().max()) for a, b in zip(ours[levels:], theirs[levels:]))
    return ExportCheck(box, prob, 0, True, f"int8 vs fp32 on {images.shape[0]} images: class probability difference "
                       f"mean {mean_prob:.1e}, max {prob:.3f}; box regression difference max {box:.3f} (int8 is "
                       "judged by its mAP: effdet val --weights FILE)")


__all__ = ["DEFAULT_CALIB_COUNT", "calibration_images", "export_openvino", "quantize_file", "save_ir"]
