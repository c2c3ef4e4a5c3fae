"""Universal perturbations on `mnist5k`: UAP and FG-UAP fooling rates and accuracy under v, beside random noise.

Claims checked: UAP (Moosavi-Dezfooli et al., CVPR 2017, arXiv 1610.08401) finds one image-agnostic
perturbation that changes the prediction of most held-out images (ImageNet, L-inf 10/255: 78-93%,
its Table 1); FG-UAP (Ye, Cheng, Huang, arXiv 2209.13113) reaches higher fooling rates than UAP at the
same budget. Here, at small scale: does the fooling rate grow with xi, is FG-UAP's >= UAP's at each
xi, and are both far above a random +-xi sign pattern's? The verdict is printed and written, met or
missed.

How it is measured:
- The model: `--checkpoint` (default tests/fixtures/small_cnn-mnist5k.safetensors, what `bastion
  audit` trains: `small_cnn`, standard recipe, `mnist5k`; its test accuracy is printed).
- v: `ATTACK(threat=ThreatModel(eps=xi), seed=--seed).fit(victim, x_fit)` on the first `--fit`
  (1,000) training images, the attacks' defaults otherwise (FG-UAP picks its best epoch on a seeded
  fifth of those images, which its steps never see). The random baseline: `--draws` (5) seeded
  +-xi sign patterns, their mean.
- Measured on every test image of the checkpoint's split (1,000), correctly classified or not: the
  fooling rate (share whose prediction changes under v, the papers' metric), the accuracy under v
  (top-1 accuracy on clip(x + v)), and the share of perturbed predictions in the most frequent
  class (dominance). Seconds: wall time of `fit`; machine-dependent.

    python benchmarks/universal_mnist5k.py [--checkpoint PATH] [--xi 0.2 0.3] [--fit 1000]

Writes benchmarks/results/universal_mnist5k.json (`--out`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bastion._atomic import write_json
from bastion.attacks.evasion import FGUAP, UAP
from bastion.core import ThreatModel, Victim, make_generator
from bastion.data import load_dataset
from bastion.models import load_checkpoint
from evasion_peers import provenance

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=ROOT / "tests" / "fixtures" / "small_cnn-mnist5k.safetensors",
        help="the model (default: the fixture `bastion audit` trains)",
    )
    p.add_argument("--xi", type=float, nargs="+", default=[0.2, 0.3], help="L-inf radii of v")
    p.add_argument("--fit", type=int, default=1000, help="training images that fit v (the first ones)")
    p.add_argument("--draws", type=int, default=5, help="random sign patterns averaged for the baseline")
    p.add_argument("--seed", type=int, default=0, help="seeds the attacks and the sign patterns")
    p.add_argument("--out", type=Path, default=HERE / "results" / "universal_mnist5k.json")
    a = p.parse_args()
    if a.fit < 1 or a.draws < 1 or any(xi <= 0 for xi in a.xi):
        p.error("--fit and --draws must be at least 1, every --xi positive")
    return a


def measure(victim: Victim, x: Tensor, y: Tensor, clean: Tensor, v: Tensor) -> dict[str, float]:
    """Fooling rate, accuracy under v and dominance of one perturbation v on every image of (x, y)."""
    pred = victim.predict((x + v).clamp(*victim.bounds))
    return {
        "fooling_rate": float((pred != clean).double().mean()),
        "accuracy_under_v": float((pred == y).double().mean()),
        "dominant_share": float(torch.bincount(pred).max()) / pred.numel(),
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    model, meta = load_checkpoint(args.checkpoint)
    data = load_dataset(meta.dataset, seed=meta.split_seed)
    victim = Victim(model, input_shape=meta.input_shape)
    x_fit, x_eval, y_eval = data.x_train[: args.fit], data.x_test, data.y_test
    clean = victim.predict(x_eval)
    clean_accuracy = float((clean == y_eval).double().mean())
    print(f"{args.checkpoint.name}: test accuracy {clean_accuracy:.2%} on {x_eval.shape[0]} images", flush=True)
    rows: list[dict[str, Any]] = []
    for xi in args.xi:
        gen = make_generator(args.seed)
        signs = [xi * torch.randn((1, *x_eval.shape[1:]), generator=gen).sign() for _ in range(args.draws)]
        noise = [measure(victim, x_eval, y_eval, clean, v) for v in signs]
        row: dict[str, Any] = {"xi": xi, "random_sign": {k: sum(n[k] for n in noise) / len(noise) for k in noise[0]}}
        for attack in (
            UAP(threat=ThreatModel(eps=xi), seed=args.seed),
            FGUAP(threat=ThreatModel(eps=xi), seed=args.seed),
        ):
            start = time.perf_counter()
            v = attack.fit(victim, x_fit)
            seconds = time.perf_counter() - start
            row[attack.name] = {**measure(victim, x_eval, y_eval, clean, v), "seconds": round(seconds, 1)}
        rows.append(row)
        print(
            f"xi {xi:g}: "
            + ", ".join(
                f"{k} FR {row[k]['fooling_rate']:.1%} acc {row[k]['accuracy_under_v']:.1%}"
                for k in ("random_sign", "uap", "fg-uap")
            ),
            flush=True,
        )
    fr = {k: [r[k]["fooling_rate"] for r in rows] for k in ("random_sign", "uap", "fg-uap")}
    verdict = {
        "fg_uap_at_least_uap": all(f >= u for f, u in zip(fr["fg-uap"], fr["uap"], strict=True)),
        "both_above_random": all(
            min(f, u) >= r + 0.1 for f, u, r in zip(fr["fg-uap"], fr["uap"], fr["random_sign"], strict=True)
        ),
        "grows_with_xi": all(all(b >= a for a, b in zip(fr[k], fr[k][1:], strict=False)) for k in ("uap", "fg-uap"))
        if sorted(args.xi) == args.xi
        else None,
    }
    print(
        "verdict:",
        ", ".join(f"{k} {'met' if ok else 'missed' if ok is not None else 'n/a'}" for k, ok in verdict.items()),
    )
    write_json(
        args.out,
        {
            "checkpoint": args.checkpoint.name,
            "clean_accuracy": clean_accuracy,
            "n_fit": x_fit.shape[0],
            "n_eval": x_eval.shape[0],
            "rows": rows,
            "verdict": verdict,
            "provenance": provenance(),
        },
    )


if __name__ == "__main__":
    main()
