"""Output-defense benchmark: AAA on the standard `small_cnn` / `mnist5k` model against Square and PGD.

Issue "Defenses", AAA evidence (spec section 4, Verify, CPU proxy), on the cached `small_cnn` trained on
`mnist5k` with the `standard` recipe (the checkpoint `benchmarks/evasion_peers.py` uses), the first N
test images, L-inf eps 0.3:
- label agreement of the AAA-served argmax with the undefended model on every test image: 100%;
- Square (margin loss, p_init 0.8, 1,000 queries) robust accuracy, undefended vs through AAA: the issue's
  target is +30 points or more;
- expected calibration error (15 bins), undefended vs AAA with T = 1 and with T fitted through AAA on
  held-out images (the test images after the first N: never attacked, never trained on): not worse;
- PGD-40 (white-box, step 0.01) robust accuracy of the defended API: unchanged, since AAA keeps labels.

    python benchmarks/defenses.py [--n 200] [--queries 1000]
    python benchmarks/defenses.py --quick      # smoke: 50 images, 100 Square queries
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

import bastion
import bastion.attacks.evasion
import bastion.defenses
from bastion._atomic import write_json
from bastion.attacks.evasion import PGD
from bastion.attacks.evasion.square import Square
from bastion.core import RECIPES, AttackResult, ThreatModel, Victim
from bastion.core.calibration import ece
from bastion.data import load_dataset
from bastion.defenses.postprocess import AAA, PostProcess
from bastion.models import load_checkpoint

HERE = Path(__file__).resolve().parent
TARGET_GAIN = 0.30  # Square robust accuracy points AAA must add


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="evaluation images, the first N of the test split (200)")
    p.add_argument("--queries", type=int, default=None, help="Square's query budget (1000)")
    p.add_argument("--p-init", type=float, default=0.8, help="Square's p_init (bastion and AutoAttack default)")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--t-step", type=float, default=0.01, help="grid step of the temperature fit through AAA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--ckpt-dir", type=Path, default=HERE / "_peers" / "checkpoints", help="checkpoint cache")
    p.add_argument("--quick", action="store_true", help="smoke run: 50 images, 100 Square queries")
    p.add_argument("--out", type=Path, default=None, help="JSON (default benchmarks/results/defenses.json)")
    a = p.parse_args()
    a.n = a.n or (50 if a.quick else 200)
    a.queries = a.queries or (100 if a.quick else 1000)
    a.out = a.out or HERE / "results" / ("defenses_quick.json" if a.quick else "defenses.json")
    return a


def checkpoint(args: argparse.Namespace) -> Path:
    """The cached standard `small_cnn` on `mnist5k` (named as in evasion_peers.py), trained if missing."""
    from bastion.train import train_checkpoint

    epochs = RECIPES.get("standard")().config((1, 28, 28)).epochs
    path = args.ckpt_dir / f"small_cnn-mnist5k-standard-e{epochs}-s0.safetensors"
    if not path.is_file():
        print(f"training small_cnn on mnist5k, {epochs} epochs -> {path}", flush=True)
        train_checkpoint(model="small_cnn", data="mnist5k", out=path, epochs=epochs, device=args.device)
    return path


def provenance(args: argparse.Namespace) -> dict[str, Any]:
    def git(*cmd: str) -> str:
        try:
            out = subprocess.run(["git", *cmd], cwd=HERE, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return "unknown"
        return out.stdout.strip()

    return {
        "bastion": bastion.__version__,
        "commit": git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain") else ""),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "device": args.device,
        "script": (HERE / "defenses.py").read_text(),
    }


def square(
    victim: Victim, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace, post: list[PostProcess]
) -> tuple[AttackResult, float]:
    threat = ThreatModel(norm="linf", eps=args.eps, access="scores")
    atk = Square(threat=threat, n_queries=args.queries, p_init=args.p_init, seed=args.seed)
    start = time.perf_counter()
    result = atk.run(victim, x, y, postprocess=post)
    return result, time.perf_counter() - start


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    model, meta = load_checkpoint(checkpoint(args), device=args.device)
    data = load_dataset(meta.dataset, seed=meta.split_seed)
    victim = Victim(model, input_shape=meta.input_shape, device=args.device)
    dev = victim.device
    x, y = data.x_test[: args.n].to(dev), data.y_test[: args.n].to(dev)
    x_val, y_val = data.x_test[args.n :].to(dev), data.y_test[args.n :].to(dev)
    if x_val.shape[0] < 100:
        raise SystemExit(f"--n {args.n} leaves {x_val.shape[0]} held-out test images for the temperature; keep 100")
    z, z_val = victim.logits(x), victim.logits(x_val)
    aaa = AAA()
    start = time.perf_counter()
    fitted = AAA.calibrated(z_val, y_val, step=args.t_step)
    fit_seconds = time.perf_counter() - start
    print(f"temperature fitted through AAA on {x_val.shape[0]} held-out images: {fitted.temperature:.3f}", flush=True)

    z_all = torch.cat([z, z_val])
    agreement = {d.name + ("" if d is aaa else "-calibrated"): d for d in (aaa, fitted)}
    labels = {k: float((d(z_all, x).argmax(1) == z_all.argmax(1)).float().mean()) for k, d in agreement.items()}
    calib = {
        "undefended": ece(z, y),
        "aaa": ece(aaa(z, x), y),
        "aaa-calibrated": ece(fitted(z, x), y),
        "temperature-scaled (no AAA)": ece(z / fitted.temperature, y),
    }
    print(f"label agreement {labels}; ECE {calib}", flush=True)

    runs: dict[str, dict[str, Any]] = {}
    for key, post in (("undefended", []), ("aaa", [aaa]), ("aaa-calibrated", [fitted])):
        result, seconds = square(victim, x, y, args, post)
        runs[key] = {
            "robust_accuracy": result.robust_accuracy,
            "clean_accuracy": float(result.clean_correct.float().mean()),
            "queries_mean": float(result.queries.float().mean()),
            "seconds": seconds,
        }
        print(f"square {key}: robust {result.robust_accuracy:.2%} ({seconds:.0f} s)", flush=True)

    pgd = PGD(threat=ThreatModel(norm="linf", eps=args.eps), steps=40, alpha=0.01, seed=args.seed)
    res = pgd.run(victim, x, y)
    served = victim.oracle(x.shape[0], output="label", postprocess=[aaa]).query(res.x_adv)
    pgd_out = {
        "undefended": res.robust_accuracy,
        "aaa": float((served == y).float().mean()),
        "labels_identical": bool(torch.equal(served, res.y_adv)),
    }
    print(f"pgd-40 robust: {pgd_out}", flush=True)

    gain = runs["aaa"]["robust_accuracy"] - runs["undefended"]["robust_accuracy"]
    checks = {
        "label_agreement_100": all(v == 1.0 for v in labels.values()),
        "square_gain_at_least_30_points": gain >= TARGET_GAIN,
        "ece_not_worse_calibrated": calib["aaa-calibrated"] <= calib["undefended"],
        "pgd_unchanged": pgd_out["labels_identical"] and pgd_out["aaa"] == pgd_out["undefended"],
    }
    report = {
        "settings": {
            "model": "small_cnn",
            "data": "mnist5k",
            "recipe": "standard",
            "n": args.n,
            "held_out": int(x_val.shape[0]),
            "eps": args.eps,
            "square_queries": args.queries,
            "square_p_init": args.p_init,
            "aaa": aaa.params(),
            "aaa_calibrated_temperature": fitted.temperature,
            "temperature_fit_seconds": fit_seconds,
        },
        "label_agreement": labels,
        "ece": calib,
        "square": runs,
        "square_gain_points": 100 * gain,
        "pgd40": pgd_out,
        "checks": checks,
        "provenance": provenance(args),
    }
    write_json(args.out, report)
    print(f"checks {checks} -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
