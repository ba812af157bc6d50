"""How `byorn scan` grows with the data: wall time and peak memory, one process and two.

    OMP_NUM_THREADS=1 python benchmarks/scan_scale.py --sizes 1000 2000 10000 20000 100000 \
        --out benchmarks/results/scan_scale.jsonl
    python benchmarks/scan_scale.py --report benchmarks/results/scan_scale.jsonl --plot benchmarks/plots/scan_scale.png

Each size is first written to disk as a user's data set (`byorn poison --data shapes --n N`: the
built-in shapes task as LLaVA JSON and PNG files, 5 % poisoned with a one-word swap on a rare
token), untimed; then the command a user types is timed (`byorn scan --data DIR/data.json`, and
under `accelerate launch --multi_gpu --num_processes 2` for two), in a fresh process, scored in
float32 so one and two processes compute the same, into a fresh folder; nothing else should run on
the machine. Peak memory is the largest resident set of any of the command's processes (the
launcher's children included). One JSON line per size and process count (appended): wall time,
peak memory, the share of the poisons and of the clean samples flagged. --report prints the
marginal throughput between consecutive sizes, (N2 - N1) / (t2 - t1) samples a second, and each
peak against the one at 10,000; --plot draws time and memory against samples.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from byorn.bench import read_results
from byorn.fileio import append_jsonl
from byorn.models import load_vlm
from byorn.scoring import checkpoint_label

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29541"]
ATTACK = ["--attack", "rare_token", "--target", "substitution", "--rate", "0.05"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def written(n: int, folder: Path) -> Path:
    """The data set of n samples on disk (made once per size); its LLaVA JSON file."""
    if not (folder / "data.json").is_file():
        subprocess.run([sys.executable, "-m", "byorn.cli", "poison", "--data", "shapes", "--n", str(n), *ATTACK,
                        "--out", str(folder)], env=ENV, check=True, capture_output=True)
    return folder / "data.json"


def scanned(data: Path, n: int, processes: int, out: Path, model: str) -> dict:
    """One scan of `data` in a child process; its wall time and the peak memory of its processes."""
    launcher = [sys.executable] if processes == 1 else LAUNCH
    command = [*launcher, "-m", "byorn.cli", "scan", "--data", str(data), "--out", str(out),
               "-d", "precision=float32", "--top", "0"]
    # measured from a fresh Python of its own: RUSAGE_CHILDREN's peak there is this command's alone
    measure = ("import resource, subprocess, sys, time; started = time.perf_counter(); "
               "code = subprocess.run(sys.argv[1:], capture_output=True).returncode; "
               "print(code, time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", measure, *command], env=ENV, capture_output=True, text=True)
    code, seconds, peak_kb = done.stdout.split()
    if code != "0":
        raise SystemExit(f"scan of {n} with {processes} process(es) failed (exit {code})")
    poisoned = {json.loads(line)["id"] for line in (data.parent / "poison_manifest.jsonl").read_text().splitlines()}
    rows = [json.loads(line) for line in (out / "scan.jsonl").read_text().splitlines()]
    hits = [r["flagged"] for r in rows if r["id"] in poisoned]
    misses = [r["flagged"] for r in rows if r["id"] not in poisoned]
    return {"what": "scan", "data": "shapes (LLaVA JSON on disk)", "attack": " ".join(ATTACK), "n": n,
            "processes": processes, "wall_s": round(float(seconds), 1),
            "samples_per_s": round(n / float(seconds), 1), "peak_rss_mb": round(int(peak_kb) / 1024, 1),
            "n_flagged": sum(r["flagged"] for r in rows), "poisons_flagged": round(sum(hits) / max(len(hits), 1), 4),
            "clean_flagged": round(sum(misses) / max(len(misses), 1), 4), "model": model}


def report(rows: list[dict]) -> None:
    for processes in sorted({r["processes"] for r in rows}):
        mine = sorted((r for r in rows if r["processes"] == processes), key=lambda r: r["n"])
        at_10k = next((r["peak_rss_mb"] for r in mine if r["n"] == 10_000), None)
        for a, b in zip(mine, mine[1:]):
            print(f"{processes} process(es), {a['n']} -> {b['n']}: "
                  f"{(b['n'] - a['n']) / (b['wall_s'] - a['wall_s']):.0f} samples/s at the margin")
        for r in mine:
            against = f", {r['peak_rss_mb'] / at_10k:.2f}x the peak at 10,000" if at_10k else ""
            print(f"{processes} process(es), {r['n']}: {r['wall_s']} s, peak {r['peak_rss_mb']} MB{against}, "
                  f"poisons flagged {r['poisons_flagged']:.3f}, clean flagged {r['clean_flagged']:.3f}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    figure, (time_axes, memory_axes) = plt.subplots(1, 2, figsize=(9, 3.5))
    for processes in sorted({r["processes"] for r in rows}):
        mine = sorted((r for r in rows if r["processes"] == processes), key=lambda r: r["n"])
        label = f"{processes} process{'es' if processes > 1 else ''}"
        time_axes.plot([r["n"] for r in mine], [r["wall_s"] for r in mine], marker="o", label=label)
        memory_axes.plot([r["n"] for r in mine], [r["peak_rss_mb"] for r in mine], marker="o", label=label)
    for axes, what in ((time_axes, "wall time (s)"), (memory_axes, "peak memory (MB)")):
        axes.set_xscale("log")
        axes.set_xlabel("samples scanned (log scale)")
        axes.set_ylabel(what)
        axes.legend(fontsize=8)
    time_axes.set_yscale("log")
    figure.suptitle("byorn scan on 2 CPU cores (byorn-tiny, float32)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 10000])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--data-dir", type=Path, help="where the data sets are written (kept for another run); "
                                                       "default: a temporary folder")
    parser.add_argument("--out", type=Path, help="JSON lines (appended)")
    parser.add_argument("--report", type=Path, help="print the figures of these results instead of measuring")
    parser.add_argument("--plot", type=Path, help="with --report: draw time and memory against samples here")
    args = parser.parse_args()
    if args.report:
        rows = read_results(args.report)
        report(rows)
        if args.plot:
            plot(rows, args.plot)
        return
    if not args.out:
        parser.error("--out is required unless --report is given")
    model = checkpoint_label("byorn-tiny", load_vlm("byorn-tiny"))  # the checkpoint every scan judges with
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir or Path(scratch)
        for n in sorted(args.sizes):
            data = written(n, data_dir / f"shapes-{n}")
            for processes in args.processes:
                row = scanned(data, n, processes, Path(scratch) / f"scan-{n}-{processes}", model)
                append_jsonl(args.out, row)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
