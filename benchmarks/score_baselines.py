"""Score-based baselines: success rate against queries of Square, Bandits-TD and NES (L-inf), and of
SimBA-DCT, SimBA (pixel) and Square (L2), beside random noise of the same norm and budget; the papers
(arXiv 1912.00049, 1807.07978, 1905.07121) report Square >= Bandits-TD >= NES and SimBA-DCT >= SimBA.

The model is `small_cnn` trained on `mnist5k` with the standard recipe (the checkpoint `evasion_peers.py`
caches, trained if missing); the images are the first N correctly classified test images. Each attack
runs once with the largest budget as its `n_queries`; the success rate at a smaller budget b is read from
`extra["first_success_query"]` (fooled with at most b queries). Random noise: a sample counts as fooled
at budget b when any of b independent draws (L-inf: a random vertex of the cube; L2: a random point on
the sphere of radius eps) fools it. Figures go to benchmarks/results/score_baselines.json.

    python benchmarks/score_baselines.py [--n 100] [--budgets 100,250,500,1000] [--linf-eps 0.3] [--l2-eps 2.0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import bastion.attacks.evasion  # noqa: F401  (registers the attacks)
from bastion._atomic import write_json
from bastion.core import ATTACKS, ThreatModel, Victim
from bastion.core.random import make_generator
from bastion.data import load_dataset
from bastion.models import load_checkpoint
from evasion_peers import checkpoint, provenance

HERE = Path(__file__).resolve().parent

# (row name, attack, norm, parameters); the defaults are the papers' unless set here
RUNS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("square", "square", "linf", {}),
    ("bandits-td", "bandits", "linf", {}),
    ("bandits-td, lr eps/5", "bandits", "linf", {"lr": "eps/5"}),
    ("bandits-t, lr eps/5", "bandits", "linf", {"lr": "eps/5", "data_prior": False}),
    ("nes", "nes", "linf", {}),
    ("nes, lr eps/5", "nes", "linf", {"lr": "eps/5"}),
    ("square", "square", "l2", {}),
    ("simba-dct", "simba", "l2", {}),
    ("simba-pixel", "simba", "l2", {"basis": "pixel"}),
    ("bandits-td", "bandits", "l2", {}),
    ("nes", "nes", "l2", {}),
]


def random_noise(victim: Victim, x: Tensor, y: Tensor, norm: str, eps: float, budgets: list[int]) -> list[float]:
    gen = make_generator(1)
    first = torch.full((x.shape[0],), -1)
    for q in range(1, budgets[-1] + 1):
        if norm == "linf":
            noise = eps * (torch.randint(0, 2, x.shape, generator=gen) * 2.0 - 1)
        else:
            noise = torch.randn(x.shape, generator=gen)
            noise = eps * noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        fooled = victim.predict((x + noise).clamp(0, 1)) != y
        first[(first < 0) & fooled] = q
    return [float(((first > 0) & (first <= b)).float().mean()) for b in budgets]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--budgets", default="100,250,500,1000")
    p.add_argument("--linf-eps", type=float, default=0.3)
    p.add_argument("--l2-eps", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE / "results" / "score_baselines.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    # what `evasion_peers.checkpoint` reads
    args.device, args.ckpt_dir, args.retrain, args.pgd_at_epochs = "cpu", HERE / "_peers" / "checkpoints", False, None
    model, _ = load_checkpoint(checkpoint("standard", args))
    model.eval().requires_grad_(False)
    victim = Victim(model, input_shape=(1, 28, 28))
    ds = load_dataset("mnist5k")
    correct = victim.predict(ds.x_test) == ds.y_test
    x, y = ds.x_test[correct][: args.n], ds.y_test[correct][: args.n]
    eps = {"linf": args.linf_eps, "l2": args.l2_eps}
    report: dict[str, Any] = {
        "benchmark": "score_baselines",
        "provenance": provenance(),
        "settings": {"n": int(x.shape[0]), "budgets": budgets, "eps": eps, "threads": args.threads},
        "rows": [],
    }
    print(f"{x.shape[0]} images, budgets {budgets}, eps {eps}", flush=True)
    print("| norm | method | " + " | ".join(f"@{b}" for b in budgets) + " | mean queries (fooled) | seconds |")
    print("|---|---|" + "---|" * len(budgets) + "---|---|")
    for norm in ("linf", "l2"):
        rate = random_noise(victim, x, y, norm, eps[norm], budgets)
        report["rows"].append({"norm": norm, "method": "random noise", "success": rate})
        print(f"| {norm} | random noise | " + " | ".join(f"{r:.2f}" for r in rate) + " | | |", flush=True)
        for row, name, run_norm, kw in RUNS:
            if run_norm != norm:
                continue
            threat = ThreatModel(norm=norm, eps=eps[norm])
            if kw.get("lr") == "eps/5":  # the references' L-inf ratio (lr 0.01 for eps 0.05) at this eps
                kw = kw | {"lr": eps[norm] / 5}
            attack = ATTACKS.get(name)(threat=threat, n_queries=budgets[-1], seed=0, **kw)
            start = time.perf_counter()
            r = attack.run(victim, x, y)
            seconds = time.perf_counter() - start
            first = torch.tensor(r.extra["first_success_query"])
            rate = [float(((first >= 0) & (first <= b)).float().mean()) for b in budgets]
            mean_q = float(first[first >= 0].float().mean()) if bool((first >= 0).any()) else None
            report["rows"].append(
                {"norm": norm, "method": row, "attack": name, "params": attack.params(), "success": rate,
                 "mean_queries_fooled": mean_q, "max_queries": int(r.queries.max()), "seconds": seconds}
            )  # fmt: skip
            cells = " | ".join(f"{v:.2f}" for v in rate)
            shown = "-" if mean_q is None else f"{mean_q:.0f}"
            print(f"| {norm} | {row} | {cells} | {shown} | {seconds:.1f} |", flush=True)
            write_json(args.out, report)  # partial results survive a kill
    write_json(args.out, report)


if __name__ == "__main__":
    main()
