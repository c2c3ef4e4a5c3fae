"""Universal perturbations on `mnist5k`: UAP and FG-UAP held-out fooling rates beside random noise.

A CPU check of the UAP (arXiv 1610.08401) and FG-UAP (arXiv 2209.13113) papers' claims: `small_cnn` trained with the
standard recipe (the checkpoint cached by `evasion_peers.py` in benchmarks/_peers/checkpoints/, or
trained here), v fitted on the first `--fit` training images, the fooling rate (share of images
whose predicted label v changes, correct or not) measured on the 1,000 test images. Expected: the
fooling rate grows with xi, FG-UAP's >= UAP's, both far above a random +-xi sign pattern's.
Writes benchmarks/results/universal_mnist5k.json.

    python benchmarks/universal_mnist5k.py [--xi 0.2 0.3] [--fit 1000]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from bastion._atomic import write_json
from bastion.attacks.evasion import FGUAP, UAP
from bastion.core import ThreatModel, Victim, make_generator
from bastion.data import load_dataset
from bastion.models import load_checkpoint
from bastion.train import train_checkpoint

CHECKPOINT = Path(__file__).parent / "_peers" / "checkpoints" / "small_cnn-mnist5k-standard-e12-s0.safetensors"
RESULTS = Path(__file__).parent / "results" / "universal_mnist5k.json"


def fooling_rate(victim: Victim, x: torch.Tensor, v: torch.Tensor) -> float:
    clean = victim.predict(x)
    return float((victim.predict((x + v).clamp(0, 1)) != clean).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xi", type=float, nargs="+", default=[0.2, 0.3])
    parser.add_argument("--fit", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not CHECKPOINT.exists():
        train_checkpoint(model="small_cnn", data="mnist5k", out=CHECKPOINT, epochs=12, device="cpu")
    model, meta = load_checkpoint(CHECKPOINT)
    data = load_dataset(meta.dataset, seed=meta.split_seed)
    victim = Victim(model, input_shape=meta.input_shape)
    x_fit, x_eval = data.x_train[: args.fit], data.x_test
    rows = []
    for xi in args.xi:
        threat = ThreatModel(eps=xi)
        gen = make_generator(args.seed)
        noise = xi * torch.randn((1, *x_eval.shape[1:]), generator=gen).sign()
        row = {"xi": xi, "random_sign": fooling_rate(victim, x_eval, noise)}
        for attack in (UAP(threat=threat, seed=args.seed), FGUAP(threat=threat, seed=args.seed)):
            start = time.perf_counter()
            v = attack.fit(victim, x_fit)
            row[attack.name] = fooling_rate(victim, x_eval, v)
            row[f"{attack.name}_seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(row, flush=True)
    write_json(
        RESULTS,
        {
            "checkpoint": CHECKPOINT.name,
            "clean_accuracy": float((victim.predict(x_eval) == data.y_test).float().mean()),
            "n_fit": x_fit.shape[0],
            "n_eval": x_eval.shape[0],
            "rows": rows,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
    )


if __name__ == "__main__":
    main()
