"""Inference: images in, detections out (predictor, fused networks, runs over files, drawings,
tracking through videos)."""

from effdet.inference.predictor import Predictor, detect_batch, optimize_for_inference
from effdet.inference.tracking import Track, Tracker, TrackerSettings
from effdet.inference.video_tracking import track

__all__ = ["Predictor", "Track", "Tracker", "TrackerSettings", "detect_batch", "optimize_for_inference", "track"]
