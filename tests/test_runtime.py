"""effdet.runtime.keep_freed_memory: freed tensors are reused without page faults (in subprocesses,
so that the test process keeps glibc's defaults)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
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
# load that arrives (or leaves) while a job runs: LoadFollower
# ------------------------------------------------------------------------------------------------

class _Machine:
    """Scripted /proc readings for a 2-CPU machine: ``run(seconds, others, own)`` advances the clock
    with the other processes busy on ``others`` CPUs and this process on ``own``."""

    def __init__(self) -> None:
        self.clock, self.idle, self.total, self.own = 1000.0, 0, 0, 0

    def run(self, seconds: float, others: float, own: float) -> None:
        ticks = seconds * 100 * 2
        self.clock += seconds
        self.total += int(ticks)
        self.idle += int(ticks * (2 - others - own) / 2)
        self.own += int(seconds * 100 * own)


def test_load_follower_drops_threads_at_once_and_takes_them_back_after_two_checks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from effdet import runtime

    machine, applied = _Machine(), []
    monkeypatch.setattr(runtime.time, "monotonic", lambda: machine.clock)
    monkeypatch.setattr(runtime, "_cpu_times", lambda: (machine.idle, machine.total))
    monkeypatch.setattr(runtime, "own_cpu_ticks", lambda: machine.own)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    follower = runtime.LoadFollower(2, applied.append, interval_s=2.0)
    machine.run(1.0, others=0.0, own=2.0)
    assert follower.poll() == 2 and applied == []  # not due yet: nothing read
    machine.run(1.5, others=0.0, own=2.0)
    assert follower.poll() == 2 and applied == []  # idle machine: all threads
    machine.run(2.5, others=1.2, own=0.8)  # a second job arrives
    assert follower.poll() == 1 and applied == [1]  # fewer at once
    machine.run(2.5, others=1.3, own=0.7)
    assert follower.poll() == 1 and applied == [1]
    machine.run(2.5, others=0.0, own=1.0)  # it ended
    assert follower.poll() == 1 and applied == [1]  # one check is not enough to take CPUs back
    machine.run(2.5, others=0.3, own=1.0)  # a short burst of someone else's work does not count
    assert follower.poll() == 2 and applied == [1, 2]
    assert follower.changes == 2
    machine.run(2.5, others=0.0, own=2.0)
    machine.own -= 2000  # a worker exited and is not reaped yet: its CPU time is out of sight for a moment
    assert follower.poll() == 2 and applied == [1, 2]  # an unreadable interval changes nothing


def test_load_follower_counts_its_own_workers_as_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy child process (a data-loader worker) is this job's work, not another process's load."""
    from effdet import runtime

    before = runtime.own_cpu_ticks()
    assert before is not None, "/proc cannot be read here"
    child = subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\n"
                            "while time.process_time() - t < 0.6: pass"], check=True)
    assert child.returncode == 0
    assert runtime.own_cpu_ticks() - before >= 50  # the reaped child's 0.6 CPU seconds, at 100 ticks/s


BUSY = "import os, sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass\n"


def test_load_follower_drops_to_one_thread_when_another_process_takes_the_cpus() -> None:
    """Real /proc readings: processes that are not this job's (started detached, so not its children)
    busy on every CPU leave this job one thread."""
    from effdet import runtime

    cpus = os.cpu_count() or 1
    applied: list[int] = []
    follower = runtime.LoadFollower(max(2, cpus), applied.append, interval_s=0.5)
    detached = f"for i in $(seq {cpus}); do {sys.executable} -c \"$0\" 8 & echo $!; done"
    started = subprocess.run(["sh", "-c", detached, BUSY], check=True, capture_output=True, text=True)
    pids = [int(v) for v in started.stdout.split()]  # sh has exited: its children are not ours
    try:
        import time
        end = time.monotonic() + 5.0
        while time.monotonic() < end and follower.threads > 1:
            follower.poll()  # this process busy as well, as a job between its steps would be
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert follower.threads == 1 and applied[-1] == 1


def test_jobs_follow_the_load_only_when_they_chose_their_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from effdet import runtime
    from effdet.cli import common

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("WORLD_SIZE", raising=False)
        monkeypatch.setattr(common, "threads_for_free_cpus", lambda default: (default, float(default)))
        common.apply_threads(None, follow_the_load=True)
        assert isinstance(runtime._follower, runtime.LoadFollower)
        runtime.follow_load(None)
        common.apply_threads(None)  # benchmark, export: no following
        assert runtime._follower is None
        common.apply_threads(1, follow_the_load=True)  # --threads: the user's count stands
        assert runtime._follower is None
        monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun: the ranks share the CPUs on purpose
        common.apply_threads(None, follow_the_load=True)
        assert runtime._follower is None
    finally:
        runtime.follow_load(None)
        torch.set_num_threads(before)
    assert common.LOAD_FOLLOWING_JOBS == {"train", "val", "predict", "track", "classify"}


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
