"""Training and evaluation engine: the train loop, optimizer/schedule, EMA, distributed helpers.

Training (``effdet.engine.trainer``): ``load_run_config`` reads a recipe YAML (``model:``,
``data:``, ``train:`` sections) with ``key=value`` overrides into a ``RunConfig``, and
``Trainer(run, output).fit()`` (or ``train(run, output)``) trains it. Evaluation
(``effdet.engine.evaluate``): ``evaluate_coco``.
"""

from effdet.engine.checkpointing import TrainState, resume_path, resume_run_config
from effdet.engine.ema import ModelEma
from effdet.engine.optim import WarmupCosine, build_optimizer, param_groups, scaled_lr
from effdet.engine.train_config import DataConfig, RunConfig, TrainConfig, load_run_config, write_run_config
from effdet.engine.trainer import Trainer, TrainingDiverged, TrainResult, train

__all__ = [
    "DataConfig", "ModelEma", "RunConfig", "TrainConfig", "TrainResult", "TrainState", "Trainer",
    "TrainingDiverged", "WarmupCosine", "build_optimizer", "load_run_config", "param_groups", "resume_path",
    "resume_run_config", "scaled_lr", "train", "write_run_config",
]
