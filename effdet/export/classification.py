"""Export of a trained classifier to ONNX and OpenVINO IR (fp32, or int8 through NNCF), checked
against PyTorch, on the detection export's machinery (:mod:`effdet.export.onnx`,
:mod:`effdet.export.openvino`: atomic files, metadata, NNCF quantisation in a child process).

The graph (:class:`ClassifierGraph`) takes ``images``: N x 3 x S x S **uint8 RGB**, already resized
and centre-cropped as the validation does (shorter side to S / 0.875, centre S x S); the
normalisation runs inside. It returns ``probs``: N x C float32 softmax probabilities. The batch is
dynamic. Class names, the input size and the model name are stored in the file (ONNX
``metadata_props``, OpenVINO ``rt_info`` key ``effdet``).

Checks: ONNX and OpenVINO fp32 must give probabilities within :data:`PROB_TOLERANCE` of PyTorch's;
int8 is reported (largest probability difference, top-1 agreement) and judged by
``effdet classify val`` on the exported file's accuracy, not by equality.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from effdet.export.onnx import DEFAULT_OPSET, ExportError, _add_metadata
from effdet.export.openvino import _openvino, _quantize_in_subprocess, save_ir
from effdet.fileio import atomic_path, temporary_folder
from effdet.inference.backends import METADATA_KEY
from effdet.runtime import native_runtime_guard

PROB_TOLERANCE = 1e-4
"""Largest class-probability difference accepted between an fp32 export and PyTorch."""


class ClassifierGraph(nn.Module):
    """uint8 N x 3 x S x S -> N x C softmax probabilities: normalisation, the network, softmax."""

    input_names = ["images"]
    output_names = ["probs"]

    def __init__(self, model: nn.Module, image_size: int) -> None:
        super().__init__()
        self.model, self.image_size = model.eval(), int(image_size)
        self.register_buffer("mean", torch.tensor(model.mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(model.std).view(1, 3, 1, 1) * 255, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images.float() - self.mean) / self.std).softmax(1)


@dataclass(frozen=True)
class ClassifierCheck:
    """An exported file against PyTorch on the same images."""

    max_prob_diff: float
    top1_agreement: float
    ok: bool
    message: str


def sample_images(image_size: int, count: int = 4, seed: int = 0) -> torch.Tensor:
    """A fixed pseudo-random uint8 batch, count x 3 x S x S (the default check input)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, image_size, image_size), generator=generator, dtype=torch.uint8)


def compare(expected: torch.Tensor, got: np.ndarray, name: str, exact: bool) -> ClassifierCheck:
    """Probabilities of PyTorch (``expected``) and an export (``got``); ``exact``: fp32, which must agree
    within :data:`PROB_TOLERANCE`; otherwise int8, reported only."""
    got_t = torch.from_numpy(np.asarray(got, dtype=np.float32))
    diff = float((expected - got_t).abs().max())
    agree = float((expected.argmax(1) == got_t.argmax(1)).float().mean())
    ok = diff <= PROB_TOLERANCE or not exact
    message = (f"{name} vs PyTorch on {len(expected)} images: largest probability difference {diff:.2e}, "
               f"same top-1 on {agree:.0%}" + ("" if exact else " (int8: judge it by effdet classify val)"))
    return ClassifierCheck(diff, agree, ok, message)


def _metadata(graph: ClassifierGraph, class_names: Sequence[str], extra: dict[str, Any] | None) -> dict[str, Any]:
    return dict(task="classify", model=getattr(graph.model, "name", None), class_names=list(class_names),
                image_size=[graph.image_size, graph.image_size], input_format="uint8", output="probs",
                **(extra or {}))


def export_classifier_onnx(graph: ClassifierGraph, path: str | Path, class_names: Sequence[str],
                           opset: int = DEFAULT_OPSET, verify: bool = True, sample: torch.Tensor | None = None,
                           metadata: dict[str, Any] | None = None) -> ClassifierCheck | None:
    """Write ``graph`` as ONNX to ``path`` (atomically) and check it with ONNX Runtime on ``sample``
    (default :func:`sample_images`). Returns the check (None when not verified).

    Raises:
        ExportError: the ONNX Runtime probabilities differ from PyTorch's by more than :data:`PROB_TOLERANCE`
            (the file is then not written).
    """
    graph = graph.cpu().eval()
    sample = sample if sample is not None else sample_images(graph.image_size)
    check = None
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (sample[:1],), str(tmp), dynamo=False, opset_version=opset,
                              input_names=graph.input_names, output_names=graph.output_names,
                              dynamic_axes={"images": {0: "batch"}, "probs": {0: "batch"}}, do_constant_folding=True)
        _add_metadata(tmp, _metadata(graph, class_names, metadata))
        if verify:
            import onnxruntime as ort  # noqa: PLC0415

            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            with torch.no_grad():
                expected = graph(sample)
            check = compare(expected, session.run(["probs"], {"images": sample.numpy()})[0], "ONNX Runtime", True)
            if not check.ok:
                raise ExportError(f"{path}: {check.message}, over the tolerance {PROB_TOLERANCE:g}")
    return check


def export_classifier_openvino(graph: ClassifierGraph, path: str | Path, class_names: Sequence[str],
                               calibration: Sequence[np.ndarray] | None = None, verify: bool = True,
                               sample: torch.Tensor | None = None,
                               metadata: dict[str, Any] | None = None) -> ClassifierCheck | None:
    """Write ``graph`` as OpenVINO IR ``path`` (``.xml`` with its ``.bin``; both atomically), fp32, or int8
    quantised with NNCF on ``calibration`` (1 x 3 x S x S uint8 arrays, as the graph takes them).

    Raises:
        ExportError: OpenVINO / NNCF missing, ``path`` not ``.xml``, or the fp32 IR disagrees with PyTorch.
    """
    ov = _openvino(int8=calibration is not None)
    path = Path(path)
    if path.suffix.lower() != ".xml":
        raise ExportError(f"an OpenVINO IR file is named .xml (its weights go to .bin beside it), got {path}")
    int8 = calibration is not None
    info = {**_metadata(graph, class_names, metadata), "precision": "int8" if int8 else "fp32", "format": "openvino"}
    sample = sample if sample is not None else sample_images(graph.image_size)
    with temporary_folder("effdet-export") as work:
        onnx_file = work / "classifier.onnx"
        export_classifier_onnx(graph, onnx_file, class_names, verify=False)
        model = ov.convert_model(str(onnx_file))
        if int8:
            model = _quantize_in_subprocess(ov, model, list(calibration), work)
            info["calibration_images"] = len(calibration)
        model.set_rt_info(json.dumps(info), [METADATA_KEY])

        def check(xml: Path) -> ClassifierCheck:
            with native_runtime_guard():
                compiled = ov.Core().compile_model(str(xml), "CPU")
            with torch.no_grad():
                expected = graph(sample)
            got = np.concatenate([compiled(image[None].numpy())[0] for image in sample])
            result = compare(expected, got, f"OpenVINO {'int8' if int8 else 'fp32'}", not int8)
            if not result.ok:
                raise ExportError(f"{path}: {result.message}, over the tolerance {PROB_TOLERANCE:g}")
            return result

        return save_ir(ov, model, path, check if verify else None)


def read_classifier_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata stored in an exported classifier (``.onnx`` or OpenVINO ``.xml``)."""
    path = Path(path)
    if path.suffix.lower() == ".xml":
        ov = _openvino()
        return json.loads(ov.Core().read_model(str(path)).get_rt_info([METADATA_KEY]).astype(str))
    import onnx  # noqa: PLC0415

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: (p.value if p.key in ("task", "model", "input_format", "output") else json.loads(p.value))
            for p in model.metadata_props}


__all__ = ["ClassifierCheck", "ClassifierGraph", "PROB_TOLERANCE", "compare", "export_classifier_onnx",
           "export_classifier_openvino", "read_classifier_metadata", "sample_images"]
