"""effdet.runtime.keep_freed_memory: freed tensors are reused without page faults (in subprocesses,
so that the test process keeps glibc's defaults)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Allocates, touches and frees a 96 MiB tensor (above glibc's largest mmap threshold) in several
# rounds and reports the minor page faults of the rounds once the heap has settled.
PROBE = """
import json, resource, sys
import torch
from effdet.runtime import freed_memory_kept, keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "on" else False
def churn():
    x = torch.empty(24 * 2 ** 20)  # 96 MiB
    x.fill_(1.0)
    del x
churn(); churn(); churn()  # the heap settles in the first rounds
faults = []
for _ in range(15):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    churn()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
# the median of the last 7 rounds: with the setting, the first few rounds may still map fresh
# pages (seen: up to 5 after the warm-up, varying from process to process), then none do
print(json.dumps({"applied": applied, "kept": freed_memory_kept(), "faults": sorted(faults[-7:])[3]}))
"""


def probe(mode: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings exist on Linux only")
def test_freed_memory_is_reused_without_page_faults() -> None:
    default, kept = probe("off"), probe("on")
    if not kept["applied"]:
        pytest.skip("this C library does not take glibc's mallopt settings")
    assert kept["kept"] and not default["kept"]
    pages = 96 * 2 ** 20 // 4096  # what re-mapping the tensor costs
    # median round: glibc's defaults map fresh pages each time; kept, the same memory is reused
    # (a round may still grow the heap when a small allocation took part of the freed block)
    assert default["faults"] > pages // 2
    assert kept["faults"] < pages // 20


def test_environment_switch_turns_it_off() -> None:
    """EFFDET_KEEP_FREED_MEMORY=0: keep_freed_memory() changes nothing, so freed memory is mapped
    afresh as with glibc's defaults (where this C library takes the setting at all)."""
    result = probe("on", EFFDET_KEEP_FREED_MEMORY="0")
    assert result["applied"] is False and result["kept"] is False
    if sys.platform.startswith("linux") and probe("on")["applied"]:
        assert result["faults"] > 96 * 2 ** 20 // 4096 // 2  # as the default in the test above


def test_free_cpus_reads_proc_stat(monkeypatch: pytest.MonkeyPatch) -> None:
    from effdet import runtime

    samples = iter([(1000, 4000), (1100, 4400)])  # 100 of 400 jiffies idle between the two reads
    monkeypatch.setattr(runtime, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    assert runtime.free_cpus(0.0) == pytest.approx(0.5)
    monkeypatch.setattr(runtime, "_cpu_times", lambda: None)
    assert runtime.free_cpus(0.0) is None
    if Path("/proc/stat").is_file():  # the real file parses, and gives a number within the machine
        monkeypatch.undo()
        free = runtime.free_cpus(0.05)
        assert free is not None and 0.0 <= free <= (os.cpu_count() or 1)


@pytest.mark.parametrize("free, expected", [(2.0, 2), (1.6, 2), (1.4, 1), (0.9, 1), (0.05, 1), (None, 2)])
def test_threads_for_free_cpus(monkeypatch: pytest.MonkeyPatch, free: float | None, expected: int) -> None:
    from effdet import runtime

    monkeypatch.setattr(runtime, "free_cpus", lambda sample_s: free)
    monkeypatch.setattr(runtime, "_free_at_start", runtime._UNSAMPLED)
    assert runtime.threads_for_free_cpus(2) == (expected, free)
    assert runtime.threads_for_free_cpus(1)[0] == 1  # never more than the default


def test_jobs_take_fewer_threads_on_a_busy_machine(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
                                                  ) -> None:
    import torch
    from effdet.cli import common

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(common, "threads_for_free_cpus", lambda default: (1, 0.3))
        common.apply_threads(None)
        assert torch.get_num_threads() == 1
        assert "other processes keep" in capsys.readouterr().err
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice stands
        common.apply_threads(None)
        assert torch.get_num_threads() == 2
        common.apply_threads(1)  # and so does --threads
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------
# data jobs start without PyTorch and without the busy-CPU note
# ------------------------------------------------------------------------------------------------

DATA_JOBS = r"""
import json, sys
from effdet.cli.main import main
codes = [main(["data", "demo", "--output", "d", "--num-train", "4", "--num-val", "2", "--image-size", "64"]),
         main(["data", "convert", "--from", "coco", "--to", "yolo", "d/annotations/train.json", "--output", "y",
               "--no-progress"]),
         main(["data", "convert", "--from", "yolo", "--to", "coco", "y", "--images", "d/train", "--output", "c.json",
               "--no-progress"]),
         main(["data", "check", "d/annotations/train.json", "d/train", "--no-progress", "--read-images"]),
         main(["data", "split", "d/annotations/train.json", "--output-dir", "s"]),
         main(["data", "split", "missing.json", "--output-dir", "s2"])]
print(json.dumps({"codes": codes, "torch": "torch" in sys.modules, "albumentations": "albumentations" in sys.modules}))
"""


def test_data_jobs_do_not_import_pytorch(tmp_path: Path) -> None:
    """effdet data demo / convert / check / split (and a data job's one-line error) run without importing
    torch: they started in 8-11 s before, most of it PyTorch's import."""
    done = subprocess.run([sys.executable, "-c", DATA_JOBS], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"codes": [0, 0, 0, 0, 0, 2], "torch": False, "albumentations": False}, done.stderr[-3000:]
    assert "effdet data: error: " in done.stderr and "missing.json" in done.stderr
    assert "Traceback" not in done.stderr and "other processes keep" not in done.stderr


def test_busy_cpu_note_only_for_jobs_that_run_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    import torch

    from effdet.cli import common
    from effdet.cli.main import main

    before = torch.get_num_threads()
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": i, "file_name": f"{i}.jpg", "width": 8, "height": 8}
                                          for i in range(1, 5)], "annotations": [],
                               "categories": [{"id": 1, "name": "a"}]}))
    try:
        torch.set_num_threads(2)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(common, "threads_for_free_cpus", lambda default: (1, 0.3))
        assert main(["data", "split", str(ann), "--output-dir", str(tmp_path / "split")]) == 0
        assert "other processes keep" not in capsys.readouterr().err
        assert torch.get_num_threads() == 2  # a data job leaves the thread settings alone
        assert main(["classify", str(tmp_path / "missing.png"), "--weights", str(tmp_path / "nosuch.pth")]) == 2
        err = capsys.readouterr().err
        assert "other processes keep" in err and "nosuch.pth" in err
    finally:
        torch.set_num_threads(before)
        os.environ.pop("OMP_NUM_THREADS", None)


def test_user_errors_are_all_listed() -> None:
    from effdet.cli import common
    from effdet.data.coco import DatasetError
    from effdet.export.onnx import ExportError
    from effdet.inference.backends import BackendError
    from effdet.inference.run import InferenceError
    from effdet.weights.checkpoint import CheckpointError

    assert {DatasetError, ExportError, BackendError, InferenceError, CheckpointError} <= set(common.USER_ERRORS)
    assert set(common.user_errors()) == set(common.USER_ERRORS)  # all loaded now


SIGNAL_AFTER_TWO_OPENVINO_MODELS = """
import faulthandler, signal, subprocess, sys, time
import torch
import openvino as ov
from effdet.runtime import native_runtime_guard

faulthandler.enable()  # an alternate signal stack of its own, as under pytest
path = sys.argv[1]
torch.onnx.export(torch.nn.Conv2d(3, 4, 3), torch.zeros(1, 3, 8, 8), path, dynamo=False)
guarded = sys.argv[2] == "guarded"
models = []
for _ in range(2):
    if guarded:
        with native_runtime_guard():
            models.append(ov.Core().compile_model(path, "CPU"))
    else:
        models.append(ov.Core().compile_model(path, "CPU"))
del models[0]  # freed in the order they were made
del models[0]
signal.signal(signal.SIGCHLD, lambda *_: None)  # what a PyTorch DataLoader with workers installs
subprocess.run(["true"], check=True)
time.sleep(0.2)
print("survived")
"""


def test_openvino_models_freed_in_creation_order_leave_signals_working(tmp_path: Path) -> None:
    """Two OpenVINO compiled models freed in the order they were made leave an unmapped alternate
    signal stack installed; the next Python signal handler then kills the process (SIGSEGV, no
    message). native_runtime_guard, around every compile in effdet, puts the stack back."""
    pytest.importorskip("openvino", reason="openvino is an optional extra: pip install effdet[export]")
    pytest.importorskip("onnx", reason="onnx is an optional extra: pip install effdet[export]")
    script = tmp_path / "signals.py"
    script.write_text(SIGNAL_AFTER_TWO_OPENVINO_MODELS)

    def run(mode: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), str(tmp_path / f"{mode}.onnx"), mode],
                              capture_output=True, text=True, timeout=120)

    guarded = run("guarded")
    assert guarded.returncode == 0 and "survived" in guarded.stdout, guarded.stderr[-2000:]
    unguarded = run("unguarded")  # the failure the guard prevents still happens without it
    assert unguarded.returncode == -11, (unguarded.returncode, unguarded.stderr[-2000:])
