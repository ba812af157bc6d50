"""How `byorn scan` grows with the data: wall time and peak memory, one process and two.

    OMP_NUM_THREADS=1 python benchmarks/scan_scale.py --sizes 1000 2000 10000 --out benchmarks/results/scan_scale.jsonl

Each run is the command a user types (`byorn scan --data shapes --n N`, and under `accelerate launch
--multi_gpu --num_processes 2` for two), in a fresh process, on the built-in shapes task, scored in
float32 so one and two processes compute the same, into a fresh folder; nothing else should run on
the machine. Peak memory is the largest resident set of any of the command's processes (the
launcher's children included). One JSON line per size and process count (appended), then the
marginal throughput between consecutive sizes: (N2 - N1) / (t2 - t1) samples a second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from byorn.fileio import append_jsonl

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29541"]


def scanned(n: int, processes: int, out: Path) -> dict:
    """One scan of n samples in a child process; its wall time and the peak memory of its processes."""
    launcher = [sys.executable] if processes == 1 else LAUNCH
    command = [*launcher, "-m", "byorn.cli", "scan", "--data", "shapes", "--n", str(n), "--out", str(out),
               "-d", "precision=float32", "--top", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # measured from a fresh Python of its own: RUSAGE_CHILDREN's peak there is this command's alone
    measure = ("import resource, subprocess, sys, time; started = time.perf_counter(); "
               "code = subprocess.run(sys.argv[1:], capture_output=True).returncode; "
               "print(code, time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", measure, *command], env=env, capture_output=True, text=True)
    code, seconds, peak_kb = done.stdout.split()
    if code != "0":
        raise SystemExit(f"scan of {n} with {processes} process(es) failed (exit {code})")
    flagged = sum(json.loads(line)["flagged"] for line in (out / "scan.jsonl").read_text().splitlines())
    return {"what": "scan", "n": n, "processes": processes, "wall_s": round(float(seconds), 1),
            "samples_per_s": round(n / float(seconds), 1), "peak_rss_mb": round(int(peak_kb) / 1024, 1),
            "n_flagged": flagged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 10000])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", required=True, type=Path, help="JSON lines (appended)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for processes in args.processes:
            for n in sorted(args.sizes):
                rows.append(scanned(n, processes, Path(scratch) / f"scan-{n}-{processes}"))
                append_jsonl(args.out, rows[-1])
                print(json.dumps(rows[-1]), flush=True)
    for processes in args.processes:
        mine = [r for r in rows if r["processes"] == processes]
        for a, b in zip(mine, mine[1:]):
            print(f"{processes} process(es), {a['n']} -> {b['n']}: "
                  f"{(b['n'] - a['n']) / (b['wall_s'] - a['wall_s']):.0f} samples/s at the margin")


if __name__ == "__main__":
    main()
