"""Optimizer groups, the warm-up + cosine LR schedule, EMA and the resumable sampler."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from effdet.engine.ema import ModelEma
from effdet.engine.optim import WarmupCosine, build_optimizer, param_groups, scaled_lr
from effdet.engine.sampling import EpochBatchSampler, sample_seed
from effdet.factory import create_model


def tiny_model() -> nn.Module:
    return create_model("efficientdet_d0", num_classes=3, image_size=128, fpn_channels=16, fpn_cells=1,
                        head_repeats=1)


def test_no_weight_decay_on_batchnorm_biases_and_fusion_weights() -> None:
    model = tiny_model()
    decay, no_decay = param_groups(model, 4e-5)
    assert decay["weight_decay"] == 4e-5 and no_decay["weight_decay"] == 0.0
    no_decay_ids = {id(p) for p in no_decay["params"]}
    decay_ids = {id(p) for p in decay["params"]}
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert id(module.weight) in no_decay_ids and id(module.bias) in no_decay_ids, name
        if isinstance(module, nn.Conv2d):
            assert id(module.weight) in decay_ids, name
            if module.bias is not None:
                assert id(module.bias) in no_decay_ids, name
    fusion = [p for n, p in model.named_parameters() if "edge_weights" in n]
    assert fusion and all(id(p) in no_decay_ids for p in fusion)
    assert len(decay_ids) + len(no_decay_ids) == len(list(model.parameters()))


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_build_optimizer(name: str, cls: type) -> None:
    opt = build_optimizer(tiny_model(), name, lr=0.1, weight_decay=4e-5, momentum=0.9)
    assert isinstance(opt, cls)
    assert [g["weight_decay"] for g in opt.param_groups] == [4e-5, 0.0]


def test_linear_lr_scaling() -> None:
    assert scaled_lr(None, 0.08, 64) == pytest.approx(0.08)
    assert scaled_lr(None, 0.08, 128) == pytest.approx(0.16)
    assert scaled_lr(None, 0.08, 16) == pytest.approx(0.02)
    assert scaled_lr(0.5, 0.08, 16) == 0.5


def test_schedule_warmup_peak_and_cosine_end() -> None:
    s = WarmupCosine(peak=0.08, total_steps=1000, warmup_steps=100, warmup_factor=0.1)
    assert s(0) == pytest.approx(0.008)  # starts at lr * 0.1
    assert s(50) == pytest.approx(0.008 + 0.072 * 0.5)  # linear
    assert s(100) == pytest.approx(0.08)  # peak right after warm-up
    mid = 100 + (999 - 100) / 2
    assert s(int(mid)) == pytest.approx(0.04, rel=0.01)  # half way down the cosine
    assert s(999) == pytest.approx(0.0, abs=1e-12)  # ~0 at the last step
    values = [s(i) for i in range(100, 1000)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay
    assert WarmupCosine(1.0, 10, 0, min_lr_ratio=0.1)(9) == pytest.approx(0.1)


def test_ema_warmup_and_decay() -> None:
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = ModelEma(model, decay=0.9, warmup=True)
    ema.update(model)  # first update copies
    assert torch.equal(ema.module.weight, model.weight)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema.update(model)  # n=1: decay min(0.9, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.module.weight, torch.full((1, 2), d))
    assert ema.current_decay() == pytest.approx(min(0.9, 3 / 12))
    for _ in range(200):
        ema.update(model)
    assert ema.current_decay() == pytest.approx(0.9)
    assert not ema.module.weight.requires_grad


def test_ema_state_round_trip_and_buffers() -> None:
    model = tiny_model()
    ema = ModelEma(model, decay=0.5, warmup=False)
    ema.update(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.running_mean.add_(2.0)
            m.num_batches_tracked += 3
    ema.update(model)
    name, bn = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d))
    key = f"{name}.running_mean"
    assert torch.allclose(ema.module.state_dict()[key], bn.running_mean - 1.0)  # averaged buffer
    counter = key.replace("running_mean", "num_batches_tracked")
    assert torch.equal(ema.module.state_dict()[counter], bn.num_batches_tracked)  # integer buffer copied
    state = ema.state_dict()
    other = ModelEma(tiny_model(), decay=0.5, warmup=False)
    other.load_state_dict(state)
    assert other.num_updates == 2
    for k, v in ema.module.state_dict().items():
        assert torch.equal(v, other.module.state_dict()[k]), k


def test_sampler_is_seeded_per_epoch_and_resumable() -> None:
    s = EpochBatchSampler(10, batch_size=3, shuffle=True, seed=5)
    s.set_epoch(0)
    epoch0 = list(s)
    s.set_epoch(1)
    epoch1 = list(s)
    assert len(epoch0) == 3 and all(len(b) == 3 for b in epoch0)  # incomplete last batch dropped
    assert [i for _, i in epoch0[0]] != [i for _, i in epoch1[0]]
    s.set_epoch(0, start_batch=1)
    assert list(s) == epoch0[1:]
    assert all(key[0] == 0 for batch in epoch0 for key in batch)


def test_sampler_shards_over_ranks() -> None:
    shards = []
    for rank in range(2):
        s = EpochBatchSampler(9, batch_size=2, shuffle=True, seed=1, rank=rank, world_size=2)
        s.set_epoch(3)
        shards.append([i for batch in s for _, i in batch])
    assert len(shards[0]) == len(shards[1]) == 4
    assert not set(shards[0]) & set(shards[1])
    assert sample_seed(0, 1, 2) == sample_seed(0, 1, 2) != sample_seed(0, 2, 1)
    seeds = {sample_seed(0, epoch, index) for epoch in range(3) for index in range(50)}
    assert len(seeds) == 150 and all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)
