"""Fine-tuning controls: frozen parts stay bitwise fixed, the backbone LR multiplier, flags and checks."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from effdet.cli.main import parse
from effdet.cli.train import collect_overrides
from effdet.config import ConfigError
from effdet.data import make_synthetic_coco
from effdet.engine.optim import build_optimizer, load_optimizer_state, param_groups, set_lr
from effdet.engine.train_config import RunConfig, load_run_config
from effdet.engine.trainer import Trainer
from effdet.factory import create_model
from tests.helpers import step_hook

TINY = {"image_size": 128, "fpn_channels": 16, "fpn_cells": 1, "head_repeats": 1}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tiny_shapes):
    return tiny_shapes


def tiny_run(data, **train: object) -> RunConfig:
    """2 steps an epoch (4 images, batch 2) at a constant, high LR, so that trained tensors move."""
    overrides = {**TINY, "train_ann": str(data.train_annotations), "train_images": str(data.train_images),
                 "epochs": 1, "batch_size": 2, "workers": 0, "lr": 0.05, "warmup_epochs": 0, "min_lr_ratio": 1.0,
                 "ema_decay": 0.99, "eval_interval": 0, **train}
    return load_run_config("efficientdet_d0", overrides)


def tiny_model() -> nn.Module:
    return create_model("efficientdet_d0", num_classes=3, **TINY)


def snapshot(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """Copies of the state-dict tensors (parameters and buffers) whose names start with ``prefix``."""
    return {k: v.detach().clone() for k, v in module.state_dict().items() if k.startswith(prefix)}


def part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def changed_keys(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys() and a
    return [k for k in a if not torch.equal(a[k], b[k])]


def is_bn_stat(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


class RecordingTrainer(Trainer):
    """Keeps the network's state right after setup (before the first step) as ``initial``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.initial = snapshot(self.model)


def snapshot_at(step: int, into: dict):
    def hook(trainer: Trainer, global_step: int) -> None:
        if global_step == step:
            into.update(snapshot(trainer.model))
    return hook


# ------------------------------------------------------------------ freezing in training
def test_frozen_backbone_stays_bitwise_fixed_while_the_rest_trains(data, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    trainer = RecordingTrainer(tiny_run(data, freeze="backbone"), tmp_path, progress=False)
    assert trainer.fit().global_step == 2
    final = snapshot(trainer.model)
    start = trainer.initial
    assert changed_keys(part(start, "backbone."), part(final, "backbone.")) == []  # weights and BN statistics
    for prefix in ("fpn.", "class_net.", "box_net."):
        moved = changed_keys(part(start, prefix), part(final, prefix))
        assert any(not is_bn_stat(k) for k in moved) and any(is_bn_stat(k) for k in moved), prefix
    ema = snapshot(trainer.ema.module, "backbone.")
    assert changed_keys(part(start, "backbone."), ema) == []  # the EMA of a fixed part is that part
    backbone = list(trainer.model.backbone.parameters())
    assert not any(p.requires_grad for p in backbone)
    assert not any(p in trainer.optimizer.state for p in backbone)  # no momentum buffer: SGD skipped them
    grouped = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert {id(p) for p in backbone} <= grouped  # still in the optimizer, ready to be unfrozen
    assert "Fine-tuning: freeze: backbone for the whole run, backbone LR x1" in capsys.readouterr().out


def test_backbone_plus_fpn_freezes_the_fpn_too(data, tmp_path: Path) -> None:
    trainer = RecordingTrainer(tiny_run(data, freeze="backbone+fpn"), tmp_path, progress=False)
    trainer.fit()
    final, start = snapshot(trainer.model), trainer.initial
    for prefix in ("backbone.", "fpn."):
        assert changed_keys(part(start, prefix), part(final, prefix)) == [], prefix
    for prefix in ("class_net.", "box_net."):
        assert changed_keys(part(start, prefix), part(final, prefix)), prefix


def test_freeze_for_the_first_epoch_then_train_everything(data, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    after_epoch1: dict[str, torch.Tensor] = {}
    trainer = RecordingTrainer(tiny_run(data, freeze="backbone", freeze_epochs=1, epochs=2), tmp_path,
                               progress=False, callbacks=[step_hook(snapshot_at(2, after_epoch1))])
    trainer.fit()
    start, final = part(trainer.initial, "backbone."), snapshot(trainer.model, "backbone.")
    after_epoch1 = part(after_epoch1, "backbone.")
    assert changed_keys(start, after_epoch1) == []
    moved = changed_keys(after_epoch1, final)
    assert any(not is_bn_stat(k) for k in moved) and any(k.endswith("running_mean") for k in moved)
    assert all(p.requires_grad for p in trainer.model.parameters())
    out = capsys.readouterr().out
    assert "freeze: backbone for epoch 1, all layers train from epoch 2" in out
    assert "epoch 2: backbone unfrozen" in out


def test_resume_inside_the_frozen_epoch_matches_an_uninterrupted_run(data, tmp_path: Path) -> None:
    run = tiny_run(data, freeze="backbone", freeze_epochs=1, epochs=2, backbone_lr_mult=0.5)
    full = Trainer(run, tmp_path / "full", progress=False)
    full.fit()

    def stop_at_1(trainer: Trainer, step: int) -> None:
        if step == 1:
            raise KeyboardInterrupt
    assert Trainer(run, tmp_path / "cut", progress=False, callbacks=[step_hook(stop_at_1)]).fit().status == "interrupted"
    resumed = Trainer(run, tmp_path / "cut", progress=False, resume=tmp_path / "cut" / "last.pt")
    assert resumed.fit().global_step == 4
    a, b = snapshot(full.model), snapshot(resumed.model)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=1e-6), k


def test_frozen_backbone_batchnorm_keeps_its_statistics_while_the_weights_train(data, tmp_path: Path) -> None:
    trainer = RecordingTrainer(tiny_run(data, freeze_backbone_bn=True), tmp_path, progress=False)
    trainer.fit()
    start, final = part(trainer.initial, "backbone."), snapshot(trainer.model, "backbone.")
    moved = changed_keys(start, final)
    assert not [k for k in moved if is_bn_stat(k)]
    bns = {f"backbone.{n}": m for n, m in trainer.model.backbone.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert all(not m.training for m in bns.values())
    assert all(m.weight.grad is not None and bool(m.weight.grad.abs().sum() > 0) for m in bns.values())
    assert {f"{n}.bias" for n in bns} & set(moved)  # the BN affine parameters still train
    assert [k for k in moved if k.endswith(".weight") and k.rpartition(".")[0] not in bns]  # so do the convs
    head = part(trainer.initial, "class_net.")
    assert [k for k in changed_keys(head, snapshot(trainer.model, "class_net.")) if k.endswith("running_mean")]


# ------------------------------------------------------------------ optimizer groups
def test_groups_split_backbone_and_rest_and_cover_every_parameter_once() -> None:
    model = tiny_model()
    groups = param_groups(model, 4e-5, backbone=model.backbone, backbone_lr_mult=0.1)
    assert [g["name"] for g in groups] == ["backbone_decay", "backbone_no_decay", "decay", "no_decay"]
    assert [g["lr_scale"] for g in groups] == [0.1, 0.1, 1.0, 1.0]
    assert [g["weight_decay"] for g in groups] == [4e-5, 0.0, 4e-5, 0.0]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for g in groups[:2] for p in g["params"]} == {id(p) for p in model.backbone.parameters()}
    assert all(p.ndim > 1 for g in groups[::2] for p in g["params"])
    assert all(p.ndim <= 1 for g in groups[1::2] for p in g["params"])
    without = param_groups(model, 4e-5)  # no backbone named: the two groups of old
    assert [g["name"] for g in without] == ["decay", "no_decay"]


def test_set_lr_scales_the_backbone_groups() -> None:
    model = tiny_model()
    opt = build_optimizer(model, "sgd", lr=0.08, weight_decay=4e-5, backbone=model.backbone, backbone_lr_mult=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.08 * 0.1, 0.08 * 0.1, 0.08, 0.08]
    set_lr(opt, 0.02)
    assert [g["lr"] for g in opt.param_groups] == [0.02 * 0.1, 0.02 * 0.1, 0.02, 0.02]


def test_training_steps_use_the_scheduled_lr_times_the_scale(data, tmp_path: Path) -> None:
    seen: list[tuple[float, list[float]]] = []

    def record(trainer: Trainer, step: int) -> None:
        seen.append((trainer.schedule(step - 1), [g["lr"] for g in trainer.optimizer.param_groups]))
    trainer = Trainer(tiny_run(data, backbone_lr_mult=0.25, warmup_epochs=0.5), tmp_path, progress=False,
                      callbacks=[step_hook(record)])
    trainer.fit()
    assert [g["name"] for g in trainer.optimizer.param_groups] == ["backbone_decay", "backbone_no_decay",
                                                                  "decay", "no_decay"]
    assert len(seen) == 2 and seen[0][0] != seen[1][0]  # warm-up: two different LRs
    for lr, lrs in seen:
        assert lrs == [lr * 0.25, lr * 0.25, lr, lr]


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_optimizers_leave_parameters_without_gradient_alone(name: str) -> None:
    model = tiny_model().train()
    opt = build_optimizer(model, name, lr=0.1, weight_decay=0.1, backbone=model.backbone, backbone_lr_mult=0.5)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    before = snapshot(model)
    for _ in range(2):  # the second step has momentum / Adam moments
        opt.zero_grad(set_to_none=True)
        class_logits, box_regressions = model(torch.randn(2, 3, 128, 128))
        sum(t.square().mean() for t in class_logits + box_regressions).backward()
        opt.step()
    after = snapshot(model)
    assert [k for k in changed_keys(part(before, "backbone."), part(after, "backbone.")) if not is_bn_stat(k)] == []
    assert changed_keys(part(before, "box_net."), part(after, "box_net."))


def test_old_two_group_optimizer_state_is_regrouped() -> None:
    model = tiny_model()
    params = list(model.parameters())
    old = torch.optim.SGD([{"name": "decay", "params": [p for p in params if p.ndim > 1], "weight_decay": 4e-5},
                           {"name": "no_decay", "params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
                          lr=0.1, momentum=0.9)
    for i, p in enumerate(params):
        p.grad = torch.full_like(p, float(i))
    old.step()
    new = build_optimizer(model, "sgd", lr=0.1, weight_decay=4e-5, backbone=model.backbone, backbone_lr_mult=0.1)
    load_optimizer_state(new, old.state_dict(), model)
    assert [g["name"] for g in new.param_groups][:2] == ["backbone_decay", "backbone_no_decay"]
    assert [g["lr_scale"] for g in new.param_groups] == [0.1, 0.1, 1.0, 1.0]
    assert [g["weight_decay"] for g in new.param_groups] == [4e-5, 0.0, 4e-5, 0.0]
    for p in params:
        assert torch.equal(new.state[p]["momentum_buffer"], old.state[p]["momentum_buffer"])


def test_loaded_state_keeps_the_current_backbone_lr_mult() -> None:
    model = tiny_model()
    saved = build_optimizer(model, "sgd", lr=0.1, weight_decay=4e-5, backbone=model.backbone).state_dict()
    opt = build_optimizer(model, "sgd", lr=0.1, weight_decay=4e-5, backbone=model.backbone, backbone_lr_mult=0.2)
    load_optimizer_state(opt, saved, model)
    set_lr(opt, 1.0)
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.2, 1.0, 1.0]


# ------------------------------------------------------------------ recipe fields and flags
def test_defaults_change_nothing() -> None:
    train = load_run_config("efficientdet_d0").train
    assert (train.freeze, train.freeze_epochs, train.backbone_lr_mult, train.freeze_backbone_bn) == \
        ("none", None, 1.0, False)
    assert isinstance(load_run_config("efficientdet_d0", {"backbone_lr_mult": 1}).train.backbone_lr_mult, float)


@pytest.mark.parametrize("overrides, message", [
    ({"freeze": "head"}, "train.freeze 'head' must be one of"),
    ({"freeze": "backbone", "freeze_epochs": -1}, "train.freeze_epochs must be a whole number >= 0"),
    ({"freeze": "backbone", "freeze_epochs": 1.5}, "freeze_epochs must be an integer or null, got 1.5"),
    ({"backbone_lr_mult": 0}, "train.backbone_lr_mult must be a positive number"),
    ({"backbone_lr_mult": -0.1}, "train.backbone_lr_mult must be a positive number"),
    ({"backbone_lr_mult": "fast"}, "backbone_lr_mult must be a number, got 'fast'"),
    ({"freeze_backbone_bn": "yes"}, "freeze_backbone_bn must be true or false"),
])
def test_invalid_fine_tuning_fields_are_config_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_run_config("efficientdet_d0", overrides)


def test_flags_map_to_the_recipe_fields() -> None:
    args = parse(["train", "--freeze", "backbone+fpn", "--freeze-epochs", "2",
                                           "--backbone-lr-mult", "0.1", "--freeze-backbone-bn"])
    overrides = collect_overrides(args)
    assert {k: v for k, v in overrides.items() if k.startswith("train.")} == {
        "train.freeze": "backbone+fpn", "train.freeze_epochs": 2, "train.backbone_lr_mult": 0.1,
        "train.freeze_backbone_bn": True}
    train = load_run_config("efficientdet_d0", overrides).train
    assert (train.freeze, train.freeze_epochs, train.backbone_lr_mult, train.freeze_backbone_bn) == \
        ("backbone+fpn", 2, 0.1, True)
    unset = collect_overrides(parse(["train"]))  # a recipe's values are kept
    assert not {"train.freeze", "train.freeze_epochs", "train.backbone_lr_mult",
                "train.freeze_backbone_bn"} & set(unset)
    with pytest.raises(ConfigError, match="train.freeze 'heads' must be one of none, backbone, backbone"):
        load_run_config("efficientdet_d0", collect_overrides(parse(["train", "--freeze", "heads"])))


# ------------------------------------------------------------------ DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, overrides: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    after_epoch1: dict[str, torch.Tensor] = {}
    trainer = RecordingTrainer(load_run_config("efficientdet_d0", overrides), Path(out) / "run", device="cpu",
                               progress=False, callbacks=[step_hook(snapshot_at(2, after_epoch1))])
    trainer.fit()
    torch.save({"initial": trainer.initial, "epoch1": after_epoch1, "final": snapshot(trainer.model)},
               Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
def test_ddp_freeze_then_unfreeze_keeps_ranks_identical(tmp_path: Path) -> None:
    shapes = make_synthetic_coco(tmp_path / "data", num_train=8, num_val=2, image_size=(128, 128), seed=5)
    overrides = {**TINY, "train_ann": str(shapes.train_annotations), "train_images": str(shapes.train_images),
                 "epochs": 2, "batch_size": 2, "workers": 0, "lr": 0.05, "warmup_epochs": 0, "min_lr_ratio": 1.0,
                 "ema_decay": 0.9, "eval_interval": 0, "freeze": "backbone", "freeze_epochs": 1,
                 "backbone_lr_mult": 0.5}
    mp.start_processes(_ddp_worker, args=(2, _free_port(), overrides, str(tmp_path)), nprocs=2,
                       start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    for stage in ("initial", "epoch1", "final"):  # BatchNorm statistics are per rank on CPU (gloo)
        weights = [k for k in r0[stage] if not is_bn_stat(k)]
        assert changed_keys(*({k: r[stage][k] for k in weights} for r in (r0, r1))) == [], stage
    assert changed_keys(part(r0["initial"], "backbone."), part(r0["epoch1"], "backbone.")) == []
    assert changed_keys(part(r0["initial"], "class_net."), part(r0["epoch1"], "class_net."))
    moved = changed_keys(part(r0["epoch1"], "backbone."), part(r0["final"], "backbone."))
    assert any(not is_bn_stat(k) for k in moved)


def test_freezing_knows_only_the_parts_the_task_names() -> None:
    from effdet.engine.freezing import Freezing

    part, head = nn.Linear(2, 2), nn.Linear(2, 2)
    model = nn.Sequential(part, nn.BatchNorm1d(2), head)
    train = load_run_config("efficientdet_d0", {"freeze": "backbone+fpn"}).train
    with pytest.raises(ConfigError, match=r"train.freeze=backbone\+fpn is not a part of this model; choose one of "
                                          r"none, backbone$"):
        Freezing({"backbone": [part]}, train)
    freezing = Freezing({"backbone": [part, model[1]]}, dataclasses.replace(train, freeze="backbone", freeze_epochs=1))
    assert freezing.frozen(0) == [part, model[1]] and freezing.frozen(1) == []
    assert freezing.set_trainable(model, 0) and not freezing.set_trainable(model, 0)  # changed once
    assert [p.requires_grad for p in model.parameters()] == [False, False, False, False, True, True]
    model.train()
    freezing.fix_batchnorm(0)
    assert not model[1].training and head.training
    assert freezing.set_trainable(model, 1) and all(p.requires_grad for p in model.parameters())
