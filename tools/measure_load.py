"""Measure the tools on an idle machine and with a second process competing for the CPU.

    python tools/measure_load.py --weights runs/demo/best.pt [--data demo_data] [--repeats 2]
        [--competitor-threads 2] [--json load.json]

Each job below runs ``--repeats`` times idle and ``--repeats`` times while a competitor runs (a
separate Python process multiplying 1024 x 1024 matrices with PyTorch on ``--competitor-threads``
threads, as a test suite or a second model would), the two conditions alternating. Jobs (their
wall-clock seconds, or the figures they print):

* ``val``: ``effdet val`` of the checkpoint on the data's val split (default threads, 2 loader workers);
* ``predict``: ``effdet predict`` on the val images (no drawings);
* ``forward fused`` / ``forward plain``: ``effdet benchmark --tasks forward`` at the model's size,
  D0 at 512 px, random weights, 2 threads: the fused and the plain network, alternating;
* ``predict start-up``: which network ``effdet predict`` keeps after timing fused and plain at
  start-up (D0 at 512 px, random weights, one image, 2 threads);
* ``train step 1 / 2 threads``: ``effdet benchmark --tasks train --image-size 128 --train-batch-size 8``;
* ``epoch`` / ``epoch_fixed``: one epoch of ``effdet train`` (D0 from scratch, 256 px, batch 8, the data's
  train split, then its validation), with the thread count chosen by the job and following the load
  (``epoch``), or fixed at start with ``--threads 2`` (``epoch_fixed``, how every job ran before the
  threads followed the load).

With ``--competitor-after S`` the competitor starts S seconds after the job instead of 2 s before it:
load that arrives mid-run. The table then adds what a fair share of the machine would give, the idle
time with everything after S taking twice as long (two processes, half the machine each), and
loaded / fair.

Prints one table (median of the repeats per condition, and loaded / idle).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from effdet.data.results import write_json

COMPETITOR = ("import torch, sys\ntorch.set_num_threads(int(sys.argv[1]))\na = torch.randn(1024, 1024)\n"
              "while True:\n    a = (a @ a).clamp_(-1, 1)\n")


def run(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def figure(pattern: str, text: str) -> float:
    found = re.search(pattern, text, re.M)
    if not found:
        raise SystemExit(f"no match for {pattern!r} in:\n{text[-2000:]}")
    return float(found.group(1))


def jobs(args: argparse.Namespace) -> dict[str, callable]:
    effdet = [sys.executable, "-m", "effdet"]
    data = Path(args.data)
    val = [*effdet, "val", "--weights", args.weights, "--ann", str(data / "annotations" / "val.json"),
           "--images", str(data / "val"), "--quiet", "--no-plots", "--output-json", str(args.work / "m.json")]
    predict = [*effdet, "predict", "--weights", args.weights, str(data / "val"), "--no-images", "--quiet",
               "--output", str(args.work / "pred")]
    forward = [*effdet, "benchmark", "--threads", "2", "--tasks", "forward", "--runs", "6", "--rounds", "3"]
    train = [*effdet, "benchmark", "--tasks", "train", "--image-size", "128", "--train-batch-size", "8",
             "--runs", "4", "--rounds", "2", "--no-eager"]
    epoch = [*effdet, "train", "--model", "efficientdet_d0", "--backbone-weights", "none", "--image-size", "256",
             "--epochs", "1", "--batch-size", "8", "--train-ann", str(data / "annotations" / "train.json"),
             "--train-images", str(data / "train"), "--val-ann", str(data / "annotations" / "val.json"),
             "--val-images", str(data / "val"), "--output", str(args.work / "epoch"), "--exist-ok", "--no-progress"]
    choice = [*effdet, "predict", "--weights", str(args.work / "d0_random.pt"), str(sorted((data / "val").glob("*.jpg"))[0]),
              "--no-images", "--quiet", "--threads", "2", "--output", str(args.work / "pred")]

    def forward_figures() -> dict[str, float]:
        _, out = run(forward)
        line = re.search(r"^forward b1 \(ms\)\s+([\d.]+)\s+([\d.]+)", out, re.M)
        return {"forward fused (ms)": float(line.group(1)), "forward plain (ms)": float(line.group(2))}

    def choice_figures() -> dict[str, float]:
        if not (args.work / "d0_random.pt").is_file():  # D0 at 512 px, random weights
            run([sys.executable, "-c", "from effdet import create_model\n"
                 "from effdet.weights.checkpoint import save_checkpoint\n"
                 f"save_checkpoint({str(args.work / 'd0_random.pt')!r}, create_model('efficientdet_d0'))"])
        _, out = run(choice)
        return {"predict keeps fused (1 = yes)": float("network: fused" in out),
                "predict start-up timing fused (ms)": figure(r"fused ([\d.]+) ms", out),
                "predict start-up timing plain (ms)": figure(r"plain ([\d.]+) ms", out)}

    def train_figures(threads: int) -> dict[str, float]:
        _, out = run([*train, "--threads", str(threads)])
        return {f"train step, {threads} thread(s) (img/s)": figure(r"^train step b8 \(img/s\)\s+([\d.]+)", out)}

    return {"val": lambda: {"effdet val (s)": run(val)[0]},
            "predict": lambda: {"effdet predict (s)": run(predict)[0]},
            "forward": forward_figures, "choice": choice_figures,
            "train1": lambda: train_figures(1), "train2": lambda: train_figures(2),
            "epoch": lambda: {"train epoch, threads follow the load (s)": run(epoch)[0]},
            "epoch_fixed": lambda: {"train epoch, --threads 2 (s)": run([*epoch, "--threads", "2"])[0]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", default="demo_data")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--competitor-threads", type=int, default=2)
    parser.add_argument("--competitor-after", type=float, metavar="S",
                        help="start the competitor S seconds after each loaded job (default: 2 s before it)")
    parser.add_argument("--jobs", default="val,predict,forward,choice,train1,train2")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    args.work = Path("runs/measure_load")
    args.work.mkdir(parents=True, exist_ok=True)
    table: dict[str, dict[str, list[float]]] = {}
    available = jobs(args)
    for name in args.jobs.split(","):
        for repeat in range(args.repeats):
            for condition in ("idle", "loaded"):
                started: list[subprocess.Popen] = []

                def start_competitor() -> None:
                    started.append(subprocess.Popen([sys.executable, "-c", COMPETITOR, str(args.competitor_threads)]))

                timer = None
                if condition == "loaded" and args.competitor_after is None:
                    start_competitor()
                    time.sleep(2.0)
                elif condition == "loaded":
                    timer = threading.Timer(args.competitor_after, start_competitor)
                    timer.start()
                try:
                    figures = available[name]()
                finally:
                    if timer is not None:
                        timer.cancel()
                        timer.join()
                    for competitor in started:
                        competitor.kill()
                        competitor.wait()
                for key, value in figures.items():
                    table.setdefault(key, {"idle": [], "loaded": []})[condition].append(value)
                print(f"{name} {condition} #{repeat + 1}: {figures}", flush=True)
    after = args.competitor_after
    print(f"\n{'figure':42s}{'idle':>10s}{'loaded':>10s}{'loaded/idle':>13s}"
          + (f"{'fair':>10s}{'loaded/fair':>13s}" if after is not None else ""))
    summary = {}
    for key, values in table.items():
        idle, loaded = statistics.median(values["idle"]), statistics.median(values["loaded"])
        summary[key] = {"idle": values["idle"], "loaded": values["loaded"], "idle_median": idle,
                        "loaded_median": loaded}
        line = f"{key:42s}{idle:10.2f}{loaded:10.2f}{loaded / idle if idle else float('nan'):13.2f}"
        if after is not None and key.endswith("(s)"):  # a duration: what half the machine after S gives
            fair = min(idle, after) + 2 * max(0.0, idle - after)
            summary[key].update(fair=fair, competitor_after_s=after)
            line += f"{fair:10.2f}{loaded / fair:13.2f}"
        print(line)
    if args.json:
        write_json(summary, args.json, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
