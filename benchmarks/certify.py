"""Certification benchmark: randomized smoothing of `gaussian`-trained `small_cnn` models on `mnist5k`.

Cohen, Rosenfeld, Kolter, ICML 2019, arXiv 1902.02918; a CPU check of the paper's trade-off: for each
sigma, train `small_cnn` on `mnist5k` with the `gaussian` recipe at that sigma, then CERTIFY the first
N test images (n0 selection samples, n estimation samples, alpha) and report certified accuracy at
L2 radii 0, 0.25, 0.5, 0.75, 1.0, the abstain rate, the average certified radius and the largest
radius n samples allow (sigma * Phi^{-1}(alpha^(1/n))). Expected shape: a larger sigma lowers the
accuracy at radius 0 and certifies larger radii. The paper's n = 100,000 is beyond a 2-core CPU;
n = 1,000 caps the radius at 2.46 sigma (0.62 at sigma 0.25, 1.23 at 0.5). Writes
benchmarks/results/certify.json.

    python benchmarks/certify.py [--sigmas 0.25 0.5] [--images 100] [--n 1000] [--epochs 4]
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
from bastion.core import Victim
from bastion.data import load_dataset
from bastion.defenses.certify import Smoothed, max_radius
from bastion.train import accuracy, train_checkpoint

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--images", type=int, default=100, help="first N test images to certify")
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=1000, help="estimation samples per image")
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--epochs", type=int, default=4, help="gaussian-recipe training epochs")
    parser.add_argument("--batch-size", type=int, default=1000, help="noisy images per forward pass")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("mnist5k")
    x, y = ds.x_test[: args.images], ds.y_test[: args.images]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sigma in args.sigmas:
            start = time.perf_counter()
            trained = train_checkpoint(
                model="small_cnn",
                data="mnist5k",
                out=Path(tmp) / f"gaussian-{sigma}.safetensors",
                recipe="gaussian",
                recipe_params={"sigma": sigma},
                epochs=args.epochs,
                seed=args.seed,
                device="cpu",
            )
            train_seconds = time.perf_counter() - start
            noisy = ds.x_test + sigma * torch.randn(ds.x_test.shape, generator=torch.Generator().manual_seed(1))
            noisy_acc = accuracy(trained.model, noisy, ds.y_test)
            smoothed = Smoothed(
                Victim(trained.model, input_shape=ds.input_shape, batch_size=args.batch_size),
                sigma=sigma,
                batch_size=args.batch_size,
                seed=args.seed,
            )
            result = smoothed.certify(x, y, n0=args.n0, n=args.n, alpha=args.alpha)
            row = {
                "sigma": sigma,
                "clean_accuracy": trained.meta.clean_accuracy,
                "noisy_accuracy": noisy_acc,
                "train_seconds": round(train_seconds, 1),
                "certify_seconds": round(result.seconds, 1),
                "abstain_rate": result.abstain_rate,
                "average_certified_radius": round(result.average_certified_radius, 4),
                "max_radius": round(max_radius(sigma, args.n, args.alpha), 4),
                "largest_certified_radius": round(float(result.radius.max()), 4),
                "certified_accuracy": {str(r): result.certified_accuracy(r) for r in RADII},
            }
            rows.append(row)
            curve = "  ".join(f"r={r:g}: {result.certified_accuracy(r):.2%}" for r in RADII)
            print(
                f"sigma {sigma:g}: base clean {row['clean_accuracy']:.2%}, noisy {noisy_acc:.2%}; {curve}; "
                f"abstain {result.abstain_rate:.2%}; ACR {row['average_certified_radius']:.3f}; "
                f"train {train_seconds:.0f} s, certify {result.seconds:.0f} s"
            )
    report = {
        "benchmark": "certify",
        "method": "randomized smoothing (Cohen et al. 2019), gaussian-recipe small_cnn",
        "data": "mnist5k",
        "images": args.images,
        "n0": args.n0,
        "n": args.n,
        "alpha": args.alpha,
        "epochs": args.epochs,
        "seed": args.seed,
        "recipe": {k: v for k, v in trained.meta.recipe.items() if k not in ("sigma", "seconds")},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "rows": rows,
    }
    path = write_json(Path(__file__).parent / "results" / "certify.json", report)
    print(json.dumps([{k: r[k] for k in ("sigma", "certified_accuracy")} for r in rows]), "->", path)


if __name__ == "__main__":
    main()
