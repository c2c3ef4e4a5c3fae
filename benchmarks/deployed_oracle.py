"""What a deployed model costs per query: the in-process oracle beside the ONNX (onnxruntime) and HTTP ones.

The audit's `small_cnn` / `mnist5k` fixture (tests/fixtures/small_cnn-mnist5k.safetensors) three ways:

- in-process: `Victim.oracle` (PyTorch, this process);
- onnx: the model exported by `export_onnx` (as `bastion export onnx` does), queried with onnxruntime on
  as many threads as torch uses;
- http-json and http-b64: the same PyTorch model behind `bastion.deploy.ModelServer` on loopback (stdlib
  `http.server`, HTTP/1.1 keep-alive, a thread of this process), queried by `EndpointModel` (httpx) with
  one request per query call (`batch_size` = the images attacked), the images sent as nested JSON lists
  or as base64 float32; the server answers logits, so its answers are the in-process ones bit for bit
  and the attack takes the same path.

Two measurements:

1. raw throughput: `oracle.query` on batches of 1, 10 and 100 test images, repeated, in microseconds per
   call and per image, with the ratio to in-process;
2. Square (L-inf, `--eps`, `n_queries` = max_queries = `--queries`, seed 0) on the first `--n` test images:
   seconds, images answered, microseconds per answered image and the overhead per answered image
   against in-process; robust accuracy and queries must agree (they do exactly over http; onnx's logits
   differ from PyTorch's in the last float bits, so its path may part on a near tie).

Prints a markdown table and writes benchmarks/results/deployed_oracle.json.

    python benchmarks/deployed_oracle.py [--n 100] [--queries 1000] [--eps 0.1] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import bastion
from bastion._atomic import write_json
from bastion.attacks.evasion.square import Square
from bastion.core import BlackBoxModel, ThreatModel, Victim
from bastion.data import load_dataset
from bastion.deploy import EndpointModel, ModelServer, OnnxModel, export_onnx
from bastion.models import load_checkpoint

HERE = Path(__file__).resolve().parent
CHECKPOINT = HERE.parent / "tests" / "fixtures" / "small_cnn-mnist5k.safetensors"


def provenance(args: argparse.Namespace) -> dict[str, Any]:
    def git(*cmd: str) -> str:
        try:
            out = subprocess.run(["git", *cmd], cwd=HERE, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return "unknown"
        return out.stdout.strip()

    import httpx
    import onnxruntime

    return {
        "bastion": bastion.__version__,
        "commit": git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain") else ""),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "httpx": httpx.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }


def throughput(model: Victim | BlackBoxModel, x: torch.Tensor, batch: int, seconds: float) -> dict[str, float]:
    """Microseconds per `oracle.query` call of `batch` images, repeated for about `seconds`."""
    oracle = model.oracle(batch, output="probs")
    xb = x[:batch]
    oracle.query(xb)  # warm up (the first call of a session or a connection costs more)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        oracle.query(xb)
        calls += 1
    per_call = (time.perf_counter() - start) / calls * 1e6
    assert int(oracle.queries.max()) == calls + 1
    return {"us_per_call": per_call, "us_per_image": per_call / batch, "calls": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="images attacked by Square")
    parser.add_argument("--queries", type=int, default=1000, help="Square's per-image budget")
    parser.add_argument("--eps", type=float, default=0.1, help="Square's L-inf radius")
    parser.add_argument("--threads", type=int, default=1, help="torch (and onnxruntime) intra-op threads")
    parser.add_argument("--seconds", type=float, default=2.0, help="how long each throughput cell runs")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "deployed_oracle.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    net, meta = load_checkpoint(CHECKPOINT)
    data = load_dataset(meta.dataset, seed=meta.split_seed)
    x, y = data.x_test[: args.n], data.y_test[: args.n]
    victim = Victim(net, input_shape=meta.input_shape)
    tmp = Path(tempfile.mkdtemp())
    onnx_path = export_onnx(net, tmp / "small_cnn.onnx", input_shape=meta.input_shape)
    server = ModelServer(victim.logits, input_shape=meta.input_shape, output="logits").start()
    models: dict[str, Victim | BlackBoxModel] = {
        "in-process": victim,
        "onnx": OnnxModel(onnx_path, threads=args.threads),
        "http-json": EndpointModel(server.url, batch_size=max(args.n, 100), encoding="json"),
        "http-b64": EndpointModel(server.url, batch_size=max(args.n, 100), encoding="f32-base64"),
    }
    report: dict[str, Any] = {"provenance": provenance(args), "throughput": {}, "square": {}}
    try:
        for batch in (1, 10, 100):
            report["throughput"][batch] = {
                name: throughput(m, data.x_test, batch, args.seconds) for name, m in models.items()
            }
        threat = ThreatModel(eps=args.eps, max_queries=args.queries)
        for name, m in models.items():
            attack = Square(threat=threat, n_queries=args.queries, seed=0)
            start = time.perf_counter()
            result = attack.run(m, x, y)
            seconds = time.perf_counter() - start
            answered = int(result.queries.sum())
            report["square"][name] = {
                "seconds": seconds,
                "answered": answered,
                "robust_accuracy": result.robust_accuracy,
                "queries_max": int(result.queries.max()),
                "queries": result.queries.tolist(),
            }
    finally:
        server.close()
    base = report["square"]["in-process"]
    for r in report["square"].values():
        r["us_per_image"] = r["seconds"] / max(r["answered"], 1) * 1e6
        r["overhead_us_per_query"] = (r["seconds"] - base["seconds"]) / max(r["answered"], 1) * 1e6
        r["same_as_in_process"] = r["queries"] == base["queries"] and r["robust_accuracy"] == base["robust_accuracy"]
    write_json(args.out, report)
    _print(report, args)


def _print(report: dict[str, Any], args: argparse.Namespace) -> None:
    names = list(report["square"])
    print(f"\nraw oracle.query (probs), {args.threads} thread(s): microseconds per call (ratio to in-process)\n")
    print("| batch | " + " | ".join(names) + " | per image: " + " | ".join(names) + " |")
    print("|---" * (2 * len(names) + 1) + "|")
    for batch, cells in report["throughput"].items():
        base = cells["in-process"]["us_per_call"]
        calls = [f"{c['us_per_call']:.0f} ({c['us_per_call'] / base:.1f}x)" for c in cells.values()]
        images = [f"{c['us_per_image']:.0f}" for c in cells.values()]
        print(f"| {batch} | " + " | ".join(calls) + " | " + " | ".join(images) + " |")
    sq = report["square"]
    print(f"\nSquare L-inf eps {args.eps}, {args.n} images, {args.queries} queries, seed 0\n")
    print("| oracle | seconds | ratio | images answered | us per answered image | overhead per query ", end="")
    print("| robust acc | same |")
    print("|---|---|---|---|---|---|---|---|")
    base = sq["in-process"]["seconds"]
    for name, r in sq.items():
        print(
            f"| {name} | {r['seconds']:.2f} | {r['seconds'] / base:.2f}x | {r['answered']} | "
            f"{r['us_per_image']:.1f} | {r['overhead_us_per_query']:+.1f} us | {r['robust_accuracy']:.2%} | "
            f"{'yes' if r['same_as_in_process'] else 'no'} |"
        )


if __name__ == "__main__":
    main()
