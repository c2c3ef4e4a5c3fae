"""Training-recipe benchmark on `mnist5k` with `small_cnn`: catastrophic overfitting, and TRADES vs PGD-AT.

(a) Catastrophic overfitting (CO), peak lr 0.02, 10 epochs, the CO monitor on. At eps 0.3: `fgsm-rs`
    with alpha 2 eps, plain FGSM from x (`gradalign` with lam 0), FGSM + GradAlign with lam 0.5 and
    1.0 (the grayscale default); at eps 0.35: `fgsm-rs` (alpha 2 eps) and `gradalign` (lam 1.0).
    Records the monitor's checks (PGD-5 and clean accuracy of the training batch, every 50 steps and
    after the last), its events (collapse caught, weights restored), and the final model's clean and
    PGD-40 accuracy on test images (at the run's eps).
(b) `trades` and `pgd-at` side by side at eps 0.3: clean, PGD-40 and (with --n-aa > 0) AutoAttack
    accuracy. The inner attacks use fewer steps than the papers (--at-steps, alpha = 2.5 eps / steps)
    and a short schedule, to fit a 2-core CPU budget; the papers train for 100 epochs with 40 steps.

Writes benchmarks/results/defenses_training.json (the parts run are updated, others kept).

    python benchmarks/defenses_training.py [--parts a b] [--epochs-co 10] [--seed 0] [--epochs-at 4] [--at-steps 7]
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

import bastion.defenses  # noqa: F401  (registers the recipes)
from bastion._atomic import write_json
from bastion.attacks.evasion.autoattack import AutoAttack
from bastion.attacks.evasion.pgd import PGD
from bastion.core import ThreatModel, Victim
from bastion.core.progress import ProgressEvent
from bastion.data import load_dataset
from bastion.train import train_checkpoint

RESULTS = Path(__file__).parent / "results" / "defenses_training.json"


def evaluate(model: torch.nn.Module, eps: float, n: int, n_aa: int) -> dict[str, Any]:
    ds = load_dataset("mnist5k", seed=0)
    x, y = ds.x_test[:n], ds.y_test[:n]
    victim = Victim(model, input_shape=ds.input_shape)
    pgd = PGD(threat=ThreatModel(eps=eps), steps=40, alpha=0.01, seed=0).run(victim, x, y)
    row: dict[str, Any] = {"n": n, "clean": float(pgd.clean_correct.float().mean()), "pgd40": pgd.robust_accuracy}
    if n_aa > 0:
        start = time.perf_counter()
        aa = AutoAttack(threat=ThreatModel(eps=eps), seed=0).run(victim, x[:n_aa], y[:n_aa])
        row.update(n_aa=n_aa, autoattack=aa.robust_accuracy, autoattack_seconds=round(time.perf_counter() - start, 1))
    return row


def train(recipe: str, params: dict[str, Any], tmp: Path, **overrides: Any) -> dict[str, Any]:
    trace: list[dict[str, Any]] = []

    def progress(event: ProgressEvent) -> None:
        if event.task == "co-monitor":
            trace.append({"step": event.completed, **event.info})
            print(f"  {recipe} step {event.completed}: {event.info}", flush=True)

    start = time.perf_counter()
    out = train_checkpoint(
        model="small_cnn",
        data="mnist5k",
        out=tmp / f"{recipe}.safetensors",
        recipe=recipe,
        recipe_params=params,
        device="cpu",
        progress=progress,
        **overrides,
    )
    return {
        "recipe": recipe,
        "params": params,
        "overrides": overrides,
        "recipe_settings": out.meta.recipe,
        "epochs_run": len(out.history.epochs),
        "train_seconds": round(time.perf_counter() - start, 1),
        "monitor_trace": trace,
        "events": list(out.history.events),
        "model": out.model,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["a", "b"], choices=["a", "b"])
    parser.add_argument("--co-lr", type=float, default=0.02)
    parser.add_argument("--epochs-co", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="training seed of the CO runs")
    parser.add_argument("--epochs-at", type=int, default=4)
    parser.add_argument("--at-steps", type=int, default=7)
    parser.add_argument("--n-eval", type=int, default=500)
    parser.add_argument("--n-aa", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "a" in args.parts:
            rows = []
            runs = [
                ("fgsm-rs", {"eps": 0.3, "alpha": 0.6}),
                ("gradalign", {"eps": 0.3, "lam": 0.0}),  # plain FGSM from x
                ("gradalign", {"eps": 0.3, "lam": 0.5}),
                ("gradalign", {"eps": 0.3, "lam": 1.0}),
                ("fgsm-rs", {"eps": 0.35, "alpha": 0.7}),
                ("gradalign", {"eps": 0.35, "lam": 1.0}),
            ]
            for recipe, params in runs:
                run = train(recipe, params, Path(tmp), epochs=args.epochs_co, lr=args.co_lr, seed=args.seed)
                run.update(evaluate(run.pop("model"), params["eps"], args.n_eval, 0))
                rows.append(run)
                print(json.dumps({k: v for k, v in run.items() if k != "monitor_trace"}), flush=True)
            report[f"catastrophic_overfitting_seed{args.seed}"] = {"lr": args.co_lr, "runs": rows}
        if "b" in args.parts:
            eps, steps = 0.3, args.at_steps
            rows = []
            for recipe in ("pgd-at", "trades"):
                params = {"eps": eps, "steps": steps, "alpha": 2.5 * eps / steps}
                run = train(recipe, params, Path(tmp), epochs=args.epochs_at)
                run.update(evaluate(run.pop("model"), eps, args.n_eval, args.n_aa))
                rows.append(run)
                print(json.dumps({k: v for k, v in run.items() if k != "monitor_trace"}), flush=True)
            report["trades_vs_pgd_at"] = {"eps": eps, "runs": rows}
    # re-read just before writing: parts run as separate processes keep each other's results
    merged: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    merged.update(report, benchmark="defenses_training", torch=torch.__version__, machine=platform.machine())
    path = write_json(RESULTS, merged)
    print("->", path)


if __name__ == "__main__":
    main()
