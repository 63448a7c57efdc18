"""Two-process DistributedDataParallel training on CPU (gloo): both ranks end with the same weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from effdet.data import make_synthetic_coco
from effdet.engine.train_config import load_run_config
from effdet.engine.trainer import Trainer

TINY = {"image_size": 128, "fpn_channels": 16, "fpn_cells": 1, "head_repeats": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, overrides: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    trainer = Trainer(load_run_config("efficientdet_d0", overrides), Path(out) / "run", device="cpu",
                      progress=False)
    result = trainer.fit()
    torch.save({"params": {k: p.detach().clone() for k, p in trainer.model.named_parameters()},
                "ema": {k: p.detach().clone() for k, p in trainer.ema.module.named_parameters()},
                "steps": result.global_step, "samples": trainer.sampler.indices()},
               Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_process_gloo_training_keeps_ranks_identical(tmp_path: Path) -> None:
    data = make_synthetic_coco(tmp_path / "data", num_train=8, num_val=2, image_size=(128, 128), seed=5)
    overrides = {**TINY, "train_ann": str(data.train_annotations), "train_images": str(data.train_images),
                 "epochs": 1, "batch_size": 2, "workers": 0, "lr": 0.01, "ema_decay": 0.9}
    mp.start_processes(_worker, args=(2, _free_port(), overrides, str(tmp_path)), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert r0["steps"] == r1["steps"] == 2  # 8 images / (2 ranks x batch 2)
    assert not set(r0["samples"]) & set(r1["samples"])  # each rank saw its own shard
    for key in r0["params"]:
        assert torch.equal(r0["params"][key], r1["params"][key]), key
        assert torch.equal(r0["ema"][key], r1["ema"][key]), key
    assert (tmp_path / "run" / "last.pt").is_file()  # rank 0 saved
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert len(ckpt["rng"]) == 2  # one RNG state per rank
    for key, value in r0["params"].items():
        assert torch.equal(ckpt["model"][key], value), key


@pytest.mark.slow
def test_torchrun_cli_two_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = make_synthetic_coco(tmp_path / "data", num_train=8, num_val=2, image_size=(128, 128), seed=5)
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
           str(root / "tools" / "train.py"), "--model", "efficientdet_d0", "--image-size", "128",
           "--backbone-weights", "none",
           "--train-ann", str(data.train_annotations), "--train-images", str(data.train_images),
           "--val-ann", str(data.val_annotations), "--val-images", str(data.val_images),
           "--epochs", "1", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--output",
           str(tmp_path / "run"), "--no-progress", "fpn_channels=16", "fpn_cells=1", "head_repeats=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mAP" in proc.stdout
    for name in ("last.pt", "best.pt", "metrics.csv", "config.yaml"):
        assert (tmp_path / "run" / name).is_file(), name
