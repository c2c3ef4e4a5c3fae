"""Sign-OPT (arXiv 1909.10773) beside ART's `SignOPTAttack` and bastion HSJA: median L2 against queries.

`small_cnn` on `mnist5k` (the `standard` recipe checkpoint `evasion_peers.py` caches, trained when
missing), the first `--n` correctly classified test images, untargeted. bastion's attacks run once on the
whole batch with eps 100 (the projection cuts nothing) and `n_queries` = the largest budget; the medians at
the smaller budgets come from their query traces. ART runs one image at a time behind `blackbox_peers`'s
`Recorder`, which counts every row it sends and records the L2 of each adversarial one, and stops it at the
largest budget (ART's own `query_limit` is checked only between iterations). Writes
benchmarks/results/sign_opt.json.

    python benchmarks/sign_opt.py [--n 50] [--budgets 250,500,1000] [--peers art]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from _peer_adapters import peer_status
from bastion._atomic import write_json
from bastion.core import Victim
from bastion.data import load_dataset
from bastion.models import load_checkpoint
from blackbox_peers import Recorder, median, run_bastion, run_peer
from evasion_peers import checkpoint, provenance

HERE = Path(__file__).resolve().parent


def art_sign_opt(rec: Recorder, budget: int) -> Any:
    from art.attacks.evasion import SignOPTAttack
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(
        model=rec, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10, clip_values=(0.0, 1.0)
    )
    # the reference's defaults, as bastion's: k 200, alpha 0.2, beta 0.001, 100 starting directions
    atk = SignOPTAttack(clf, targeted=False, k=200, alpha=0.2, beta=0.001, num_trial=100, query_limit=budget)
    atk.set_params(verbose=False)

    def run(x: Tensor, y: Tensor) -> None:
        atk.generate(x=x.numpy(), y=y.numpy())

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--budgets", default="250,500,1000")
    p.add_argument("--peers", default="art")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    args.budgets = sorted(int(b) for b in args.budgets.split(","))
    args.device, args.ckpt_dir, args.retrain, args.pgd_at_epochs = "cpu", HERE / "_peers" / "checkpoints", False, None
    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(checkpoint("standard", args))
    model.eval().requires_grad_(False)
    victim = Victim(model, input_shape=(1, 28, 28))
    ds = load_dataset("mnist5k")
    correct = victim.predict(ds.x_test) == ds.y_test
    x, y = ds.x_test[correct][: args.n], ds.y_test[correct][: args.n]
    peers = peer_status()
    rows: dict[str, dict[str, Any]] = {}
    print(f"{x.shape[0]} images, budgets {args.budgets}; peers: {peers}", flush=True)
    for name in ("sign-opt", "hsja"):
        rows[f"bastion {name} (batch)"] = run_bastion(name, victim, x, y, args)
    if "art" in args.peers.split(",") and not peers.get("art", "not installed").startswith("not installed"):
        rec = Recorder(model, x, y, stop_at=max(args.budgets)).eval()
        label = "ART SignOPTAttack (one image at a time)"
        rows[label] = run_peer(label, art_sign_opt(rec, max(args.budgets)), rec, x, y, True, args)
    head = " | ".join(f"median L2 @{b}" for b in args.budgets)
    lines = [f"| method | {head} | seconds |", "|---|" + "---:|" * (len(args.budgets) + 1)]
    shown: dict[str, Any] = {}
    for key, row in rows.items():
        if row.get("status") != "ok":
            lines.append(f"| {key} | {row.get('status', '')[:70]} |")
            shown[key] = {"status": row.get("status")}
            continue
        meds = [median(row["dist"][:, j]) for j in range(len(args.budgets))]
        lines.append(f"| {key} | " + " | ".join(f"{m:.3f}" for m in meds) + f" | {row['seconds']:.1f} |")
        shown[key] = {
            "median_l2": [m if math.isfinite(m) else None for m in meds],
            "seconds": row["seconds"],
            "max_queries": row.get("max_queries"),
        }
    table = "\n".join(lines)
    settings = {"n": int(x.shape[0]), "budgets": args.budgets, "seed": args.seed, "threads": args.threads}
    report = {"benchmark": "sign_opt", "provenance": provenance(), "peers": peers, "settings": settings}
    path = write_json(HERE / "results" / "sign_opt.json", report | {"rows": shown, "table": table})
    print("\n" + table + f"\n-> {path}")


if __name__ == "__main__":
    main()
