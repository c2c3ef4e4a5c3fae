"""WaNet on `mnist5k`: the reference's training-control threat model beside a fixed poisoned set.

Claim checked: Nguyen & Tran, "WaNet - Imperceptible Warping-based Backdoor Attack" (ICLR 2021) plant
a warp backdoor at an unchanged clean accuracy (MNIST clean / attack / noise 99.52 / 99.86 / 98.20,
the `VinAIResearch/Warping-based_Backdoor_Attack-release` README, reference-style ASR, up to 1,000
epochs). Here, at CPU scale: does `poisoning=train-control` reach ASR >= 90% within 2 points of the
clean model's accuracy for every seed, and what does `poisoning=dataset` (one fixed poisoned set,
where a stronger attack is not expected) reach? The verdict is printed and written, met or missed.

How it is measured:
- The model: `--checkpoint` (default tests/fixtures/small_cnn-mnist5k.safetensors: `small_cnn`, the
  standard recipe, 12 epochs, `mnist5k`), and the audit's `backdoor` scenario on it: the attack
  poisons the 4,000 training images the model learned from (train-control: every batch of 64 gets
  6 backdoor and 12 noise images, drawn afresh; dataset: 400 backdoor and 800 noise images, fixed),
  a model is trained from scratch with the checkpoint's own recipe, and the first `--n` (1,000) test
  images are measured. `--epochs` overrides the recipe's epochs.
- Per run: clean accuracy and its drop from the checkpoint's, ASR over the other classes, the
  reference-style ASR (every test image), accuracy under random noise warps, the warp's ASR on the
  clean checkpoint, seconds (machine-dependent). Seeds `--seeds` (0 1 2) seed the warp, the
  poisoning and the training alike.

    python benchmarks/wanet_mnist5k.py [--seeds 0 1 2] [--modes train-control dataset] [--epochs N]

Writes benchmarks/results/wanet_mnist5k.json (`--out`), rewritten after every run.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import bastion.attacks.poisoning  # noqa: F401  (registers wanet)
from bastion._atomic import write_json
from bastion.audit.kinds import KINDS, MethodParams, Scenario
from bastion.cli._target import ModelSource
from bastion.models import load_checkpoint
from bastion.train import train_like
from evasion_peers import provenance

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=ROOT / "tests" / "fixtures" / "small_cnn-mnist5k.safetensors")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--modes", nargs="+", default=["train-control", "dataset"], choices=["train-control", "dataset"])
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--n", type=int, default=1000, help="test images measured")
    p.add_argument("--out", type=Path, default=HERE / "results" / "wanet_mnist5k.json")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    target = ModelSource(checkpoint=args.checkpoint, device="cpu").target()
    if args.epochs is not None:
        _, meta = load_checkpoint(args.checkpoint)
        meta = replace(meta, recipe={**meta.recipe, "epochs": args.epochs})
        target = replace(target, trainer=partial(train_like, meta, device="cpu"))
    kind = KINDS.get("backdoor")
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"provenance": provenance(), "checkpoint": str(args.checkpoint), "rows": rows}
    print("| poisoning | seed | clean acc. | drop | ASR | ASR (ref. style) | noise acc. | clean-model ASR | s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode in args.modes:
        for seed in args.seeds:
            sc = Scenario(f"wanet-{mode}", "backdoor", "wanet", args.n, MethodParams(params={"poisoning": mode}))
            start = time.perf_counter()
            result = kind.run(sc, target, seed=seed, progress=None)
            m, extra = result.metrics, result.record["extra"]
            row = {
                "poisoning": mode,
                "seed": seed,
                **m,
                **{k: extra[k] for k in ("asr_reference_style", "noise_accuracy")},
            }
            row["wall_seconds"] = time.perf_counter() - start
            rows.append(row)
            print(
                f"| {mode} | {seed} | {m['clean_accuracy']:.1%} | {-m['clean_drop'] * 100:+.1f} | {m['asr']:.1%} | "
                f"{row['asr_reference_style']:.1%} | {row['noise_accuracy']:.1%} | {m['clean_model_asr']:.1%} | "
                f"{row['wall_seconds']:.0f} |",
                flush=True,
            )
            write_json(args.out, out)
    control = [r for r in rows if r["poisoning"] == "train-control"]
    if control:
        met = all(r["asr"] >= 0.9 and r["clean_drop"] <= 0.02 for r in control)
        worst = min(r["asr"] for r in control)
        out["verdict"] = {"train_control_met": met, "worst_train_control_asr": worst}
        print(
            f"train-control: ASR >= 90% within 2 points on every seed: {'met' if met else 'MISSED'} (worst {worst:.1%})"
        )
    dataset = [r for r in rows if r["poisoning"] == "dataset"]
    if dataset:
        mean = sum(r["asr"] for r in dataset) / len(dataset)
        out.setdefault("verdict", {})["dataset_mean_asr"] = mean
        print(f"dataset: mean ASR {mean:.1%} over {len(dataset)} seeds")
    write_json(args.out, out)


if __name__ == "__main__":
    main()
