"""effdet benchmark (effdet.benchmarking, effdet.cli.benchmark): timing helpers, comparisons, the front's errors
and a tiny end-to-end run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

import effdet.cli.benchmark as bench_tool
from effdet.benchmarking.compare import add_ratios, detections_agreement, recommend_runtime
from effdet.benchmarking.inputs import make_jpegs, make_train_batch
from effdet.benchmarking.measure import Measurement, interleave, peak_memory
from effdet.benchmarking.settings import BenchmarkError, BenchmarkSettings
from effdet.benchmarking.tasks import ForwardTask, PredictTask, TrainStepTask
from effdet.cli.main import main as effdet_main
from effdet.cli.main import parse
from effdet.config import ConfigError
from effdet.inference.timing import time_calls
from effdet.factory import create_model
from effdet.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]

TINY_OVERRIDES = ["num_classes=3", "fpn_channels=16", "fpn_cells=1", "head_repeats=1"]


def tiny_model():
    return create_model("efficientdet_d0", num_classes=3, image_size=128, fpn_channels=16, fpn_cells=1,
                        head_repeats=1)


class FakeRunner:
    """Records the order of calls; each run 'takes' a fixed time."""

    def __init__(self, name: str, log: list[str], seconds: float) -> None:
        self.name, self.log, self.seconds, self.items, self.warmup_s = name, log, seconds, 2, 0.0

    def run(self, runs: int):
        self.log.extend([self.name] * runs)
        return [self.seconds] * runs, [self.seconds / 2] * runs, 10.0, {}


def test_interleave_alternates_in_rounds_and_counts_runs() -> None:
    log: list[str] = []
    runners = {"a": FakeRunner("a", log, 0.1), "b": FakeRunner("b", log, 0.3)}
    results = interleave(runners, runs=5, rounds=3)
    assert log == ["a", "a", "b", "b", "a", "a", "b", "b", "a", "b"]
    assert len(results["a"].times) == len(results["b"].times) == 5
    summary = results["b"].summary()
    assert summary["median_ms"] == pytest.approx(300.0)
    assert summary["images_per_s"] == pytest.approx(2 / 0.3)
    assert summary["peak_memory_mb"] == 10.0
    assert summary["median_cpu_ms"] == pytest.approx(150.0)


def test_compare_detections() -> None:
    a = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    same = [{k: v.clone() for k, v in a[0].items()}]
    assert detections_agreement(a, same)["equal"]
    moved = [{**same[0], "boxes": torch.tensor([[0.0, 0.0, 12.0, 10.0]])}]
    assert not detections_agreement(a, moved)["equal"]
    relabelled = [{**same[0], "labels": torch.tensor([2])}]
    assert not detections_agreement(a, relabelled)["equal"]
    assert not detections_agreement(a, [{k: v[:0] for k, v in a[0].items()}])["equal"]


def test_add_ratios_directions() -> None:
    def fig(ms: float, best: float, items: int = 1, **extra) -> dict:
        return Measurement([best / 1e3, ms / 1e3, ms / 1e3], items, **extra).summary()

    report = {"results": {
        "forward_b1": {"ours": fig(40.0, 30.0, peak_memory_mb=5.0), "reference": fig(100.0, 60.0, peak_memory_mb=10.0)},
        "train": {"ours": fig(200.0, 100.0, items=4), "reference": fig(400.0, 300.0, items=4)}}}
    add_ratios(report)
    assert report["results"]["forward_b1"]["ratio"] == pytest.approx(0.4)
    assert report["results"]["forward_b1"]["ratio_best"] == pytest.approx(0.5)
    assert report["results"]["forward_b1"]["memory_ratio"] == pytest.approx(0.5)
    assert report["results"]["train"]["ratio"] == pytest.approx(2.0)  # images/s: higher is better
    assert report["results"]["train"]["ratio_best"] == pytest.approx(3.0)


def test_time_calls_and_peak_memory() -> None:
    def spin_cpu(seconds: float) -> None:
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    calls = iter([lambda: time.sleep(0.05), lambda: spin_cpu(0.03), lambda: time.sleep(0.001)])
    cpu: list[float] = []
    times = time_calls(lambda: next(calls)(), 3, torch.device("cpu"), cpu_times=cpu)
    assert len(times) == len(cpu) == 3
    assert 0.05 <= times[0] < 5 and times[1] >= 0.03 and 0.001 <= times[2] < times[0]  # seconds, each call apart
    assert cpu[1] >= 0.03 and cpu[0] < cpu[1]  # the spinning call took CPU time, the sleeping one hardly any
    with peak_memory(torch.device("cpu")) as mem:
        block = torch.ones(64, 2 ** 20 // 4 * 4)  # 64 MiB, touched
        del block
    assert mem["peak_mb"] is not None and mem["peak_mb"] >= 32  # a failed measurement fails the test
    assert Measurement([0.2, 0.1, 0.4], items=4).summary()["median_ms_per_image"] == pytest.approx(50.0)


def test_inputs(tmp_path: Path) -> None:
    paths = make_jpegs(tmp_path, [(60, 80), (90, 50)], seed=1)
    assert [p.suffix for p in paths] == [".jpg", ".jpg"] and all(p.stat().st_size > 0 for p in paths)
    images, boxes, labels = make_train_batch(3, (128, 128), 3, seed=1)
    assert images.shape == (3, 3, 128, 128) and images.dtype == torch.uint8
    for b, lab in zip(boxes, labels):
        assert len(b) == len(lab) > 0
        assert (b[:, 2:] > b[:, :2]).all() and (b >= 0).all() and (b <= 128).all()
        assert ((lab >= 0) & (lab < 3)).all()


def test_tasks_run(tmp_path: Path) -> None:
    model = tiny_model()
    cpu = torch.device("cpu")
    forward = ForwardTask(model, torch.randn(2, 3, 128, 128), cpu)
    cls, box = forward()
    assert cls[0].shape == (2, 27, 16, 16) and forward.items == 2
    predict = PredictTask(Predictor(model, score_threshold=0.0), make_jpegs(tmp_path, [(100, 120)]))
    predict()
    assert len(predict.detections) == 1 and len(predict.detections[0]["scores"]) > 0
    images, boxes, labels = make_train_batch(2, (128, 128), 3)
    train = TrainStepTask(create_model("efficientdet_d0", num_classes=3, image_size=128, fpn_channels=16,
                                       fpn_cells=1, head_repeats=1, drop_path_rate=0.0),
                          images, boxes, labels, cpu, channels_last=True)
    before = [p.detach().clone() for p in train.model.parameters()]
    loss = train()
    assert torch.isfinite(torch.tensor(loss)) and train.losses == [loss]
    assert any(not torch.equal(a, b) for a, b in zip(before, train.model.parameters()))


def test_cli_tiny_run_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    rc = effdet_main(["benchmark", "--threads", "1", "--image-size", "128", "--runs", "2", "--rounds", "2", "--warmup", "1",
                          "--tasks", "forward,throughput,predict,train", "--batch-size", "2",
                          "--train-batch-size", "2", "--work-dir", str(tmp_path / "work"), "--json", str(out),
                          *TINY_OVERRIDES])
    assert rc == 0
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"forward_b1", "forward_b2", "predict", "train"}
    assert set(report["results"]["forward_b1"]) == {"ours", "eager"}
    assert len(report["results"]["forward_b1"]["ours"]["times_ms"]) == 2
    assert report["checks"]["optimized_vs_eager_max_abs_diff"] < 1e-3
    assert report["checks"]["predict_optimized_vs_eager"]["equal"]
    printed = capsys.readouterr().out
    assert "forward b1 (ms)" in printed and "train step b2 (img/s)" in printed


@pytest.mark.slow
def test_cli_onnx_and_runtimes_figures(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The exported detector under ONNX Runtime, and the exported network in every runtime, each checked
    against PyTorch before it is timed."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is an optional extra: pip install effdet[export]")
    pytest.importorskip("openvino", reason="openvino is an optional extra: pip install effdet[export]")
    out = tmp_path / "bench.json"
    assert effdet_main(["benchmark", "--threads", "1", "--image-size", "128", "--runs", "2", "--rounds", "1",
                        "--warmup", "1", "--tasks", "onnx,runtimes", "--json", str(out), *TINY_OVERRIDES]) == 0
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    assert set(report["results"]["onnx_b1"]) == {"ours", "eager"}
    assert all("check: " in r["exported_by"] and len(r["times_ms"]) == 2 for r in report["results"]["onnx_b1"].values())
    runtimes = report["results"]["runtimes_b1"]
    assert {"ours", "onnxruntime", "openvino", "openvino-int8"} <= set(runtimes)  # more with more runtimes installed
    for name, message in report["checks"]["runtimes_vs_pytorch"].items():
        compared, matched = message.split(" detections compared: ")[0], message.split(": ")[1].split(" matched")[0]
        assert int(compared) > 0 and matched == compared, (name, message)
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.startswith("recommendation for "))
    assert line == recommend_runtime(runtimes, report["settings"]["cpu"])


def test_runtime_recommendation_is_the_fastest_exact_one_and_names_a_faster_int8() -> None:
    ms = lambda t: {"median_ms_per_image": t}  # noqa: E731
    runtimes = {"ours": ms(50.0), "onnxruntime": ms(40.0), "openvino": ms(45.0), "openvino-int8": ms(30.0),
                "reference": ms(20.0), "ratios": {}}  # the reference is not a way to run our model
    line = recommend_runtime(runtimes, "Some CPU")
    assert line == ("recommendation for Some CPU: onnxruntime (.onnx) 40.0 ms, 1.25x as fast as PyTorch fused, the "
                    "same detections; openvino-int8 is 1.33x faster still (30.0 ms) if its mAP is within tolerance: "
                    "check it with effdet val --weights on the int8 file")
    runtimes["openvino-int8"] = ms(41.0)
    assert recommend_runtime(runtimes, "Some CPU").endswith("; no int8 export is faster on this CPU")
    runtimes["ours"] = ms(20.0)
    assert recommend_runtime(runtimes, "Some CPU").startswith(
        "recommendation for Some CPU: ours (PyTorch, the fused checkpoint) 20.0 ms, the fastest with the same detections")


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture) -> None:
    assert effdet_main(["benchmark", "--tasks", "forward", "no_such_key=1"]) == 2
    assert "unknown model config key" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        effdet_main(["benchmark", "--tasks", "forward,fly", *TINY_OVERRIDES, "--image-size", "128"])
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert "unknown task(s) ['fly']; choose from forward,throughput,predict,train,onnx,runtimes" in err


def test_a_flag_and_an_override_of_one_field_must_agree(capsys: pytest.CaptureFixture) -> None:
    args = parse(["benchmark", "--image-size", "128", "--num-classes", "3", "image_size=128", "num_classes=3"])
    assert bench_tool.model_overrides(args) == {"image_size": [128, 128], "num_classes": 3}
    args = parse(["benchmark", "--image-size", "128x192", "image_size=[128, 192]"])
    assert bench_tool.model_overrides(args) == {"image_size": [128, 192]}
    assert effdet_main(["benchmark", "--image-size", "128", "image_size=256", "--tasks", "forward"]) == 2
    err = capsys.readouterr().err
    assert "--image-size 128x128 and the override image_size=256 disagree; give the value once" in err
    assert effdet_main(["benchmark", "--num-classes", "3", "num_classes=4", "--tasks", "forward"]) == 2
    assert "--num-classes 3 and the override num_classes=4 disagree" in capsys.readouterr().err


def test_settings_are_checked_once_for_library_callers() -> None:
    with pytest.raises(BenchmarkError, match=r"unknown task\(s\) \['fly'\]"):
        BenchmarkSettings(tasks=("forward", "fly"))
    with pytest.raises(ConfigError, match="benchmark runs must be an integer of at least 1, got 0"):
        BenchmarkSettings(runs=0)
    with pytest.raises(ConfigError, match="benchmark warmup must be an integer of at least 0, got -1"):
        BenchmarkSettings(warmup=-1)
    with pytest.raises(ConfigError, match="benchmark threads must be an integer of at least 1, got 2.5"):
        BenchmarkSettings(threads=2.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("flag, value, least", [("--runs", "0", 1), ("--rounds", "0", 1), ("--warmup", "-1", 0),
                                                 ("--train-runs", "0", 1), ("--train-batch-size", "0", 1)])
def test_counts_are_checked_by_the_settings_and_name_the_flag(flag: str, value: str, least: int,
                                                               capsys: pytest.CaptureFixture) -> None:
    assert effdet_main(["benchmark", flag, value, "--tasks", "forward", *TINY_OVERRIDES]) == 2
    assert capsys.readouterr().err == (f"effdet benchmark: error: {flag} {value}: must be an integer of at least "
                                       f"{least}; use e.g. {flag} {least}\n")
    with pytest.raises(BenchmarkError, match="amp must be one of bf16, fp16"):
        BenchmarkSettings(amp="fp8")


def test_compare_reference_without_the_checkout_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """As from an installed package: refport is neither importable nor in the current folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".") and Path(p).resolve() != ROOT])
    for name in [m for m in sys.modules if m == "refport" or m.startswith("refport.")]:
        monkeypatch.delitem(sys.modules, name)
    assert effdet_main(["benchmark", "--compare-reference", "--tasks", "forward", *TINY_OVERRIDES]) == 2
    err = capsys.readouterr().err
    assert err.startswith("effdet benchmark: error: --compare-reference needs the reference-port harness "
                          "refport/bench.py, which is part of a source checkout") and err.count("\n") == 1
    assert "run the benchmark from the checkout's root folder" in err


def test_compare_reference_from_the_checkout_root_finds_the_harness(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".") and Path(p).resolve() != ROOT])
    for name in [m for m in sys.modules if m == "refport" or m.startswith("refport.")]:
        monkeypatch.delitem(sys.modules, name)
    harness = bench_tool.reference_harness()
    assert Path(harness.__file__).resolve() == ROOT / "refport" / "bench.py"


@pytest.mark.parametrize("flags, message", [
    (["--weights", "any.pt"], "uses random weights made by the reference; drop --weights"),
    (["--nms-iou", "0.6"], "--compare-reference needs hard NMS at IoU 0.5, the reference's fixed setting (got 0.6)"),
])
def test_compare_reference_refuses_what_the_reference_cannot_match(flags: list[str], message: str,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """Refused in one line before the reference port is installed or anything is built."""
    assert effdet_main(["benchmark", "--compare-reference", "--tasks", "forward", *flags, *TINY_OVERRIDES]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.slow
def test_compare_reference_tiny(tmp_path: Path) -> None:
    """Side by side with the reference port at 128 px: same detections and the same loss at every step."""
    sys.path.insert(0, str(ROOT))
    from refport.env import require_reference

    require_reference()
    out = tmp_path / "bench.json"
    rc = effdet_main(["benchmark", "--threads", "1", "--image-size", "128", "--runs", "2", "--rounds", "2", "--warmup", "1",
                          "--tasks", "forward,predict,train", "--train-batch-size", "2", "--compare-reference",
                          "--no-eager", "--reference-keep-freed-memory", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["settings"]["keep_freed_memory"]["reference"]  # the worker saw glibc's settings
    assert report["checks"]["predict_vs_reference"]["equal"]
    assert report["checks"]["train_loss_vs_reference"]["equal"]
    for key in ("forward_b1", "predict", "train"):
        result = report["results"][key]
        ours, reference = result["ours"], result["reference"]
        expected = (ours["images_per_s"] / reference["images_per_s"] if key == "train"
                    else ours["median_ms_per_image"] / reference["median_ms_per_image"])
        assert result["ratio"] == pytest.approx(expected)  # from this report's own figures
        assert 0.05 < result["ratio"] < 20, (key, result)  # same network, same machine: not a unit slip
