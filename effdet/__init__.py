"""effdet: EfficientDet D0..D7x object detection in PyTorch."""

from effdet.config import EfficientDetConfig, get_config, model_names
from effdet.factory import create_model, load_model
from effdet.modeling.efficientdet import EfficientDet, build_model, count_parameters

__version__ = "0.1.0"

__all__ = ["EfficientDet", "EfficientDetConfig", "build_model", "count_parameters", "create_model",
           "get_config", "load_model", "model_names", "__version__"]
