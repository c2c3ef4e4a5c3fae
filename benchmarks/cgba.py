"""CGBA and CGBA-H (arXiv 2308.03163) beside HSJA: median L2 against queries, label-only, equal budgets.

A CPU check of the paper's claim (lower median L2 than HSJA at equal budgets): `small_cnn` on
`mnist5k` (the `standard` recipe; the checkpoint `evasion_peers.py` caches is reused when present), the
first `--n` correctly classified test images, untargeted, L2 with eps 100 so that the projection cuts
nothing and `extra["query_curve"]["median_dist"]` is the median distance reached after each budget. Every
attack runs once with `n_queries = --budget`; the medians at the smaller budgets come from its query trace.
`--data digits` runs the same on the 8x8 digits with a freshly trained `small_cnn`. Writes
benchmarks/results/cgba_<data>[_targeted]_f<f>.json.

    python benchmarks/cgba.py [--data mnist5k|digits] [--n 100] [--budget 2000] [--targeted] [--dim-reduction 4]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bastion._atomic import write_json
from bastion.attacks.evasion import CGBA, CGBAH, HSJA
from bastion.core import ThreatModel, Victim
from bastion.data import load_dataset
from bastion.models import load_checkpoint
from bastion.train import train_checkpoint

CACHED = Path(__file__).parent / "_peers" / "checkpoints" / "small_cnn-mnist5k-standard-e12-s0.safetensors"


def _victim(data: str, tmp: Path) -> Victim:
    path = CACHED if data == "mnist5k" and CACHED.exists() else tmp / f"small_cnn-{data}.safetensors"
    if not path.exists():
        train_checkpoint(model="small_cnn", data=data, out=path, device="cpu")
    model, meta = load_checkpoint(path)
    return Victim(model, input_shape=meta.input_shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist5k", choices=["mnist5k", "digits"])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--targeted", action="store_true")
    parser.add_argument("--attacks", default="hsja,cgba,cgba-h")
    parser.add_argument("--dim-reduction", type=float, default=4.0, help="CGBA's f (the reference's 4 by default)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        victim = _victim(args.data, Path(tmp))
    x, y = ds.x_test, ds.y_test
    correct = victim.predict(x) == y
    x, y = x[correct][: args.n], y[correct][: args.n]
    targets = (y + 1) % 10 if args.targeted else None
    threat = ThreatModel(norm="l2", eps=100.0, targeted=args.targeted)
    makers: dict[str, Any] = {
        "hsja": lambda: HSJA(threat=threat, n_queries=args.budget, init_pool=x if args.targeted else None),
        "cgba": lambda: CGBA(threat=threat, n_queries=args.budget, dim_reduction=args.dim_reduction),
        "cgba-h": lambda: CGBAH(threat=threat, n_queries=args.budget, dim_reduction=args.dim_reduction),
    }
    rows = []
    for name in args.attacks.split(","):
        start = time.perf_counter()
        r = makers[name]().run(victim, x, y, target_labels=targets)
        curve = r.extra["query_curve"]
        rows.append(
            {
                "attack": name,
                "budgets": curve["budgets"],
                "median_l2": [None if m is None else round(m, 4) for m in curve["median_dist"]],
                "success_rate": round(float(r.success.float().mean()), 4),
                "max_queries": int(r.queries.max()),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(json.dumps(rows[-1]))
    report = {
        "benchmark": "cgba",
        "data": args.data,
        "n": int(x.shape[0]),
        "targeted": args.targeted,
        "budget": args.budget,
        "dim_reduction": args.dim_reduction,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "rows": rows,
    }
    suffix = ("_targeted" if args.targeted else "") + f"_f{args.dim_reduction:g}"
    path = write_json(Path(__file__).parent / "results" / f"cgba_{args.data}{suffix}.json", report)
    print("->", path)


if __name__ == "__main__":
    main()
