"""Short trainings over several data sets and seeds, to find what makes fine-tuning learn.

    python tools/ablate.py --output runs/ablate --set demo=demo_data --set photo=photo_shapes \
        --seeds 0 1 --variant "base:" --variant "bn01: model.bn_momentum=0.1 --freeze-backbone-bn" \
        -- --model efficientdet_lite0 --image-size 256 --epochs 8 --batch-size 8

Each ``--set NAME=DIR`` is a folder in the layout ``effdet data demo`` writes (``DIR/train``,
``DIR/val``, ``DIR/annotations/{train,val}.json``). Each ``--variant "NAME: [ARG ...]"`` (one quoted string) is a list of
extra ``effdet train`` arguments (flags or ``key=value`` overrides) added to the common arguments
after ``--``. Every (variant, set, seed) is one ``effdet train`` run into
``OUTPUT/<variant>/<set>/seed<seed>``; a run whose ``metrics.csv`` is complete is not run again, so
an interrupted sweep continues where it stopped. Runs go one at a time (the machine's CPUs are
shared by every run's threads; two at once only slow each other down).

Writes ``OUTPUT/summary.md`` (per variant and set: the final validation mAP@[.5:.95] of the
runs that ended, as the mean of the seeds with the spread min-max, and AP50) and
``OUTPUT/summary.json`` (every run's per-epoch mAP), and ``OUTPUT/curves.png``. ``--report``
rewrites them from the runs present without training.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from effdet.fileio import atomic_write


def parse_variants(specs: list[str]) -> dict[str, list[str]]:
    """``["base:", "bn: model.bn_momentum=0.1 --lr 4e-3"]`` -> ``{"base": [], "bn": ["model.bn_momentum=0.1", "--lr", "4e-3"]}``."""
    variants: dict[str, list[str]] = {}
    for spec in specs:
        name, colon, rest = spec.partition(":")
        if not colon or not name.strip() or " " in name.strip():
            raise SystemExit(f"ablate: a variant is 'NAME: ARG ...', got {spec!r}")
        variants[name.strip()] = shlex.split(rest)
    return variants


def read_metrics(run: Path) -> list[dict[str, str]]:
    path = run / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if row.get("map")]


def train_one(run: Path, data: Path, seed: int, common: list[str], extra: list[str], epochs: int,
              log: Path) -> float:
    """Run ``effdet train`` into ``run`` (skipped when its metrics reach ``epochs``); returns minutes."""
    rows = read_metrics(run)
    if complete(rows, epochs):
        return float(rows[-1].get("time_s") or 0) / 60
    overrides = [t for t in [*common, *extra] if "=" in t and not t.startswith("-")]
    flags = [t for t in [*common, *extra] if t not in overrides]  # argparse wants key=value overrides last
    cmd = [sys.executable, "-m", "effdet", "train", *flags,
           "--train-ann", str(data / "annotations" / "train.json"), "--train-images", str(data / "train"),
           "--val-ann", str(data / "annotations" / "val.json"), "--val-images", str(data / "val"),
           "--seed", str(seed), "--output", str(run), "--exist-ok", "--no-progress", *overrides]
    run.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        out.write(" ".join(cmd) + "\n")
        out.flush()
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
    minutes = (time.perf_counter() - start) / 60
    if code != 0:
        print(f"  failed (exit {code}); see {log}", file=sys.stderr)
    return minutes


def complete(rows: list[dict[str, str]], epochs: int) -> bool:
    """A run that ended: its last row says why (``stop``), or it reached ``epochs``."""
    return bool(rows) and (bool(rows[-1].get("stop")) or (epochs > 0 and int(rows[-1]["epoch"]) >= epochs))


def summarise(output: Path, variants: dict[str, list[str]], sets: dict[str, Path], seeds: list[int],
              epochs: int = 0) -> str:
    results: dict[str, dict[str, dict[str, list[dict[str, str]]]]] = {}
    lines = ["| variant | " + " | ".join(sets) + " | mean |", "|---" * (len(sets) + 2) + "|"]
    for variant, extra in variants.items():
        cells, finals_all = [], []
        results[variant] = {"args": extra, "runs": {}}  # type: ignore[dict-item]
        for name in sets:
            finals, ap50s = [], []
            for seed in seeds:
                rows = read_metrics(output / variant / name / f"seed{seed}")
                results[variant]["runs"][f"{name}/seed{seed}"] = [  # type: ignore[index]
                    {"epoch": int(r["epoch"]), "map": float(r["map"]), "map50": float(r["map50"] or "nan"),
                     "class_loss": float(r["class_loss"] or "nan"), "time_s": float(r["time_s"] or "nan")}
                    for r in rows]
                if complete(rows, epochs):  # a run still in progress is not a result
                    finals.append(float(rows[-1]["map"]))
                    ap50s.append(float(rows[-1]["map50"] or "nan"))
            if finals:
                mean = statistics.fmean(finals)
                finals_all.append(mean)
                cells.append(f"{mean:.3f} ({min(finals):.3f}-{max(finals):.3f}; AP50 {statistics.fmean(ap50s):.3f})"
                             f"{'' if len(finals) == len(seeds) else f' [{len(finals)} of {len(seeds)} seeds]'}")
            else:
                cells.append("-")
        overall = f"{statistics.fmean(finals_all):.3f}" if len(finals_all) == len(sets) else "-"
        lines.append(f"| {variant} `{' '.join(extra) or '(common arguments only)'}` | " + " | ".join(cells)
                     + f" | {overall} |")
    table = "\n".join(lines)
    text = (f"# Ablation: {output}\n\nFinal validation mAP@[.5:.95], mean of seeds {seeds} (min-max; AP50 mean).\n\n"
            f"{table}\n")
    with atomic_write(output / "summary.md", "w", encoding="utf-8") as f:
        f.write(text)
    with atomic_write(output / "summary.json", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    plot_curves(results, sets, output / "curves.png")
    return text


def plot_curves(results: dict, sets: dict[str, Path], path: Path) -> None:
    """Validation mAP per epoch, one panel per set, one line per variant (mean of seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for variant, data in results.items():
            curves = [r for key, r in data["runs"].items() if key.startswith(name + "/") and r]
            if not curves:
                continue
            epochs = sorted({row["epoch"] for c in curves for row in c})
            means = [statistics.fmean([row["map"] for c in curves for row in c if row["epoch"] == e]) for e in epochs]
            ax.plot(epochs, means, marker="o", label=variant)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val mAP@[.5:.95]")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(path, "wb", suffix=".png") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, common = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--set", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs a complete run has (default: the --epochs of the common arguments)")
    parser.add_argument("--report", action="store_true", help="only rewrite the summary from the runs present")
    parser.add_argument("--variant", action="append", default=[], metavar="'NAME: ARG ...'")
    args = parser.parse_args(own)
    sets = {}
    for item in args.set:
        name, _, folder = item.partition("=")
        sets[name] = Path(folder)
    variants = parse_variants(args.variant) or {"base": []}
    epochs = args.epochs or (int(common[common.index("--epochs") + 1]) if "--epochs" in common else 0)
    if not args.report:
        total = len(variants) * len(sets) * len(args.seeds)
        done = 0
        for variant, extra in variants.items():
            for name, folder in sets.items():
                for seed in args.seeds:
                    run = args.output / variant / name / f"seed{seed}"
                    done += 1
                    print(f"[{done}/{total}] {variant} {name} seed {seed} -> {run}", flush=True)
                    minutes = train_one(run, folder, seed, common, extra, epochs,
                                        args.output / "logs" / f"{variant}_{name}_seed{seed}.log")
                    rows = read_metrics(run)
                    print(f"  mAP per epoch {[round(float(r['map']), 3) for r in rows]} ({minutes:.1f} min)",
                          flush=True)
                    summarise(args.output, variants, sets, args.seeds, epochs)
    print(summarise(args.output, variants, sets, args.seeds, epochs))
    print(f"Summary in {args.output / 'summary.md'}, curves in {args.output / 'curves.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
