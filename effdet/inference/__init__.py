"""Inference: images in, detections out (predictor, fused networks, runs over files, drawings)."""

from effdet.inference.predictor import Predictor, detect_batch, optimize_for_inference

__all__ = ["Predictor", "detect_batch", "optimize_for_inference"]
