"""Label-consistent backdoor on `mnist5k`: ASR against the PGD radius, through the audit's `backdoor`
scenario on the `small_cnn` fixture.

Claim checked (Turner, Tsipras, Madry, arXiv 1912.02771): clean-label poisons stamped as they are
barely teach the trigger; made hard to classify first (PGD on an adversarially robust model) they teach
it far better. Per radius (0: no PGD step, the plain clean-label baseline): 5% of the training set
poisoned (half of class 0), the robust surrogate trained with `--surrogate-recipe` (`fgsm-rs`) on the clean set,
the poisoned model trained with the fixture's recipe, clean accuracy and ASR on the first 800 test
images. Models are cached in `benchmarks/_peers/protection/`.

    python benchmarks/label_consistent_mnist5k.py [--eps 0 0.1 0.15 0.2 0.3] [--rate 0.05] [--seeds 0 1 2]
        [--surrogate-recipe fgsm-rs|pgd-at]

Writes benchmarks/results/label_consistent_mnist5k.json (`--out`).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bastion._atomic import write_json
from bastion.audit import KINDS, parse_plan
from bastion.cli._target import ModelSource
from evasion_peers import provenance

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=ROOT / "tests" / "fixtures" / "small_cnn-mnist5k.safetensors")
    p.add_argument("--eps", type=float, nargs="+", default=[0.0, 0.1, 0.15, 0.2, 0.3])
    p.add_argument("--rate", type=float, default=0.05)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--surrogate-recipe", default="fgsm-rs", help="recipe of the robust surrogate (pgd-at, ...)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "label_consistent_mnist5k.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    target = replace(ModelSource(checkpoint=args.checkpoint).target(), model_dir=HERE / "_peers" / "protection")
    kind = KINDS.get("backdoor")
    rows: list[dict[str, Any]] = []
    surrogate = args.surrogate_recipe
    for seed in args.seeds:
        for eps in args.eps:
            params = f"rate: {args.rate}, " + ("adversarial: false" if eps == 0 else f"eps: {eps}")
            params += f", surrogate_recipe: {surrogate}" if eps else ""
            plan = f"scenarios:\n  - attack: label-consistent\n    n: 800\n    params: {{{params}}}\n"
            (scenario,) = parse_plan(plan).scenarios
            m = kind.run(scenario, target, seed=seed, progress=None).metrics
            keys = ("clean_accuracy", "asr", "clean_model_asr", "seconds")
            rows.append({"seed": seed, "eps": eps, "surrogate": surrogate if eps else None, **{k: m[k] for k in keys}})
            how = surrogate if eps else "plain"
            print(f"seed {seed} eps {eps} ({how}): clean {m['clean_accuracy']:.1%}, ASR {m['asr']:.1%}", flush=True)
            write_json(args.out, {"rate": args.rate, "rows": rows, "provenance": provenance()})


if __name__ == "__main__":
    main()
