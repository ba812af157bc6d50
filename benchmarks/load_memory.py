"""What loading a large data set costs: 100,000 JSONL records (each image checked, none kept).

    python benchmarks/load_memory.py --out benchmarks/results/load_memory.json

A made-up set: one 48 x 48 PNG that every record points at (the loader decodes each record's
image to check it, as it would distinct files, and keeps only the path), with shapes-style
instructions and responses. Records the wall time and the process's peak resident memory before
and after loading.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from byorn.datasets import load_jsonl
from byorn.fileio import atomic_write_text
from byorn.worlds import shapes


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--out", default="benchmarks/results/load_memory.json")
    args = parser.parse_args()
    example = shapes.downstream_samples(1, seed=0)[0]
    with tempfile.TemporaryDirectory() as folder:
        example.pil().save(Path(folder) / "img.png")
        lines = (json.dumps({"id": f"r{i}", "image": "img.png", "instruction": example.instruction,
                             "response": example.response}) for i in range(args.n))
        data = Path(folder) / "data.jsonl"
        data.write_text("\n".join(lines) + "\n", encoding="utf-8")
        before, started = peak_mb(), time.perf_counter()
        samples = load_jsonl(data)
        result = {"n": len(samples), "seconds": round(time.perf_counter() - started, 1),
                  "peak_rss_mb_before": round(before, 1), "peak_rss_mb_after": round(peak_mb(), 1),
                  "file_mb": round(data.stat().st_size / 2**20, 1)}
    atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    print(result)


if __name__ == "__main__":
    main()
