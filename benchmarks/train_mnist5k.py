"""Training benchmark: `bastion train` with its defaults (`small_cnn` on `mnist5k`).

Target: at least 97% test accuracy within 90 s on a 2-core CPU machine.
Runs the default recipe for several seeds, end to end as the command does it (data loading, model
building, training, evaluation, checkpoint writing), and writes the figures to
benchmarks/results/train_mnist5k.json.

    python benchmarks/train_mnist5k.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from bastion._atomic import write_json
from bastion.train import train_checkpoint

TARGET_ACCURACY = 0.97
TARGET_SECONDS = 90.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            start = time.perf_counter()
            result = train_checkpoint(
                model="small_cnn", data="mnist5k", out=Path(tmp) / f"s{seed}.safetensors", seed=seed, device="cpu"
            )
            seconds = time.perf_counter() - start
            acc = result.meta.clean_accuracy
            assert acc is not None
            rows.append({"seed": seed, "test_accuracy": acc, "seconds": round(seconds, 1)})
            loop = result.history.seconds
            print(f"seed {seed}: test accuracy {acc:.2%} in {seconds:.1f} s (training loop {loop:.1f} s)")
    report = {
        "benchmark": "train_mnist5k",
        "recipe": result.meta.recipe,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "runs": rows,
        "min_accuracy": min(r["test_accuracy"] for r in rows),
        "max_seconds": max(r["seconds"] for r in rows),
        "targets": {"accuracy": TARGET_ACCURACY, "seconds": TARGET_SECONDS},
    }
    report["met"] = report["min_accuracy"] >= TARGET_ACCURACY and report["max_seconds"] <= TARGET_SECONDS
    path = write_json(Path(__file__).parent / "results" / "train_mnist5k.json", report)
    print(json.dumps({k: report[k] for k in ("min_accuracy", "max_seconds", "met")}), "->", path)


if __name__ == "__main__":
    main()
