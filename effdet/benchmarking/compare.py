"""Comparisons between the variants of a benchmark run: ratios of their figures, and whether they
compute the same thing (network outputs, detections, training losses).

Ratios are ours / reference: of the time per image (lower is better), or of the images per second
for throughput figures (higher is better); ``best`` compares the fastest runs, ``cpu`` the
process CPU times.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from effdet.evaluation.matching import SCORE_TOLERANCE, match_detections


FIRST_LOSS_RTOL = 1e-4
"""Largest relative difference of the first training step's loss from the reference's: the same
weights and batch must give the same loss."""

TRAIN_LOSS_RTOL = 1e-2
"""Largest relative difference of any later timed step's loss: the same training trajectory. Later
steps drift slightly apart because the gradients are not bit-identical (for one, our box loss is
masked by positive anchor, the reference's by non-zero target component)."""

AMP_LOSS_RTOL = (1e-2, 5e-2)
"""(first step, any step) under autocast: bf16 keeps 8 bits of mantissa (relative rounding 3.9e-3),
so the two trainings' losses agree to about 1e-3 at the first step and drift further."""

DETECTION_BOX_TOL_PX = 1e-2
"""Largest box-coordinate difference (pixels) of two variants' matched detections (the fused network
against the plain one, ours against the reference's)."""


def detections_agreement(ours: Sequence[dict[str, torch.Tensor]], theirs: Sequence[dict[str, torch.Tensor]],
                         max_detections: int | None = None) -> dict[str, Any]:
    """Per image, ``ours`` and ``theirs`` matched one to one (:func:`effdet.evaluation.matching.match_detections`:
    same label, score within :data:`~effdet.evaluation.matching.SCORE_TOLERANCE`, every box coordinate within
    :data:`DETECTION_BOX_TOL_PX`; a full image's ties at its lowest score need no partner).

    Returns the report's check: ``equal``, ``unmatched``, ``counts`` ([ours, theirs] per image),
    ``max_box_diff_px``, ``max_score_diff``.
    """
    agreement = match_detections(ours, theirs, DETECTION_BOX_TOL_PX, SCORE_TOLERANCE, capacity=max_detections)
    return {"equal": agreement.equal, "unmatched": agreement.unmatched, "counts": agreement.counts,
            "max_box_diff_px": agreement.max_box_diff, "max_score_diff": agreement.max_score_diff}


def losses_agreement(ours: Sequence[float], reference: Sequence[float], amp: bool) -> dict[str, Any]:
    """The training losses of ours and the reference, step by step: ``equal`` when both ran as many
    steps, the first step's relative difference is below :data:`FIRST_LOSS_RTOL` and every step's
    below :data:`TRAIN_LOSS_RTOL` (:data:`AMP_LOSS_RTOL` under autocast)."""
    n = min(len(ours), len(reference))
    if n == 0:
        return {"steps": 0, "equal": False}
    rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours[:n], reference[:n])]
    worst = max(range(n), key=rel.__getitem__)
    first_rtol, step_rtol = AMP_LOSS_RTOL if amp else (FIRST_LOSS_RTOL, TRAIN_LOSS_RTOL)
    return {"ours_first": ours[0], "reference_first": reference[0], "first_rel_diff": rel[0],
            "max_rel_diff": rel[worst], "worst_step": worst, "steps": n,
            "equal": len(ours) == len(reference) and rel[0] < first_rtol and rel[worst] < step_rtol}


def max_output_diff(a: tuple[list[torch.Tensor], list[torch.Tensor]],
                    b: tuple[list[torch.Tensor], list[torch.Tensor]]) -> float:
    """Largest absolute difference of two networks' outputs (per-level class and box maps)."""
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a[0] + a[1], b[0] + b[1]))


def add_ratios(report: dict[str, Any]) -> None:
    """ratio = ours / reference of each figure (time per image; images/s for training)."""
    for key, res in report["results"].items():
        if "reference" not in res:
            continue
        if key == "runtimes_b1":  # every runtime's time / the reference's, measured in the same rounds
            ref = res["reference"]["median_ms_per_image"]
            res["ratios"] = {k: v["median_ms_per_image"] / ref for k, v in res.items()
                             if isinstance(v, dict) and "median_ms_per_image" in v and k != "reference"}
            continue
        ours, ref = res["ours"], res["reference"]
        if key == "train" or key.startswith("forward_b") and key != "forward_b1":
            res["ratio"] = ours["images_per_s"] / ref["images_per_s"]
            res["ratio_best"] = ref["min_ms"] / ref["items_per_run"] / (ours["min_ms"] / ours["items_per_run"])
            res["ratio_kind"] = "throughput ours / reference (higher is better)"
        else:
            res["ratio"] = ours["median_ms_per_image"] / ref["median_ms_per_image"]
            res["ratio_best"] = ours["min_ms"] / ours["items_per_run"] / (ref["min_ms"] / ref["items_per_run"])
            res["ratio_kind"] = "time ours / reference (lower is better)"
        if ours.get("median_cpu_ms") and ref.get("median_cpu_ms"):
            cpu_o, cpu_r = ours["median_cpu_ms"] / ours["items_per_run"], ref["median_cpu_ms"] / ref["items_per_run"]
            res["cpu_ratio"] = cpu_r / cpu_o if res["ratio_kind"].startswith("throughput") else cpu_o / cpu_r
        mem_o, mem_r = res["ours"].get("peak_memory_mb"), res["reference"].get("peak_memory_mb")
        if mem_o is not None and mem_r:
            res["memory_ratio"] = mem_o / mem_r


RUNTIME_FILES = {"ours": "PyTorch, the fused checkpoint", "onnxruntime": ".onnx", "openvino": ".xml",
                 "openvino-int8": ".xml (int8)", "litert": ".tflite", "litert-int8": ".tflite (int8)"}
"""What ``effdet predict --weights`` is given to run each runtime of ``--tasks runtimes``."""


def recommend_runtime(runtimes: dict[str, Any], cpu: str) -> str:
    """One line: the fastest way to run the model on this CPU, from the ``runtimes_b1`` figures.

    fp32 exports are only timed after their check against PyTorch passed (the same detections), so
    the fastest of them and PyTorch's fused network is recommended as is. An int8 export is timed
    only; where it is faster still, the line says how much and that its mAP must be checked with
    ``effdet val`` (docs/export.md gives the tolerance) before it replaces the fp32 choice."""
    times = {k: v["median_ms_per_image"] for k, v in runtimes.items()
             if isinstance(v, dict) and "median_ms_per_image" in v and k != "reference"}
    exact = {k: t for k, t in times.items() if not k.endswith("-int8")}
    if not exact:
        return "recommendation: no runtime was timed"
    best = min(exact, key=exact.get)
    line = f"recommendation for {cpu}: {best} ({RUNTIME_FILES.get(best, best)}) {exact[best]:.1f} ms, "
    line += (f"{times['ours'] / exact[best]:.2f}x as fast as PyTorch fused, the same detections"
             if "ours" in times and best != "ours" else "the fastest with the same detections")
    quantised = {k: t for k, t in times.items() if k.endswith("-int8") and t < exact[best]}
    if quantised:
        fastest = min(quantised, key=quantised.get)
        line += (f"; {fastest} is {exact[best] / quantised[fastest]:.2f}x faster still ({quantised[fastest]:.1f} ms) if "
                 "its mAP is within tolerance: check it with effdet val --weights on the int8 file")
    else:
        line += "; no int8 export is faster on this CPU"
    return line


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else the platform's), e.g. "AMD EPYC 7B13"."""
    import platform  # noqa: PLC0415

    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "this CPU"


__all__ = ["AMP_LOSS_RTOL", "DETECTION_BOX_TOL_PX", "FIRST_LOSS_RTOL", "RUNTIME_FILES", "TRAIN_LOSS_RTOL",
           "add_ratios", "cpu_model", "detections_agreement", "losses_agreement", "max_output_diff",
           "recommend_runtime"]
