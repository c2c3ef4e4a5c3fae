"""Data-side threats beside IBM ART 1.20.1: BadNets poisoning, STRIP, spectral signatures, activation clustering.

The same architecture and recipe (the default `small_cnn` checkpoint's, `tests/fixtures`), the same
`mnist5k` training split, the same poisoned images, the same test images, for both libraries.

- Poisoning: bastion's `badnets` (a 3 x 3 white patch at the bottom-right corner) poisons `--rate` (5%)
  of the 4,000 training images, drawn from the classes other than the target 0, seed 0. ART's
  `PoisoningAttackBackdoor` with `add_pattern_bd` (its four-pixel pattern two pixels from the
  bottom-right corner) poisons the *same* images with the same label. Each set trains a fresh model
  (`AuditTarget.train_fresh`; cached in benchmarks/results/data_threats_models/); reported: clean
  accuracy and ASR on the first `--n` (800) test images (ASR over those of the other classes, each with
  its own library's trigger), and the trigger on the clean model.
- Run-time screening of bastion's BadNets model, on its screening sets (clean test images it gets right
  against triggered test images it sends to the target; the last 200 test images are the defender's
  held-out clean data): bastion's `strip` (`n` = 100 blends, threshold for 1% FRR) against ART's
  `STRIP` (`num_samples` 20, its default, and 100; `false_acceptance_rate` 0.01; `mitigate` on the same
  200 held-out images; an input is flagged when the defended classifier abstains). ART hands its
  classifier's output to `scipy.stats.entropy(..., axis=0)`: with a `PyTorchClassifier` around a model
  that returns logits, that is the entropy of each class's logits *across the blends* (normalised to
  sum to one), not of the softmax over classes for each blend: negative logits make it non-finite and
  `mitigate` fails (reported as an error). The `ART softmax` rows give it a model that ends in a
  softmax, so that only the axis differs.
- Training-set inspection of bastion's poisoned set through the model trained on it: bastion's
  `spectral-signatures` and `activation-clustering` (when registered) against ART's
  `SpectralSignatureDefense` (`expected_pp_poison` = the rate, `eps_multiplier` 1.5) and
  `ActivationDefence` (k-means k = 2 on PCA to 10 dimensions, `cluster_analysis` `smaller` and
  `relative-size`). ART reads activations at `layer_names[-1]`, the last module of the model: for this
  `nn.Sequential` the logits (10 values), not the last hidden layer the papers use; the
  `ART penultimate` rows hand ART the model without its last `Linear`, so that it sees the 128 hidden
  features bastion uses. Reported: poisons removed (share of the poisoned images), clean images removed,
  seconds. Where an ART call fails, its row says how. ART 1.20.1's `relative-size` analysis fails on
  every class without a small cluster under NumPy 2: its report tests `cluster_id in poison_clusters`,
  where `poison_clusters` is the tuple `np.where` returns, and comparing an integer with an empty array
  has no truth value (NumPy 1 warned and answered False).

    bash benchmarks/setup_peers.sh
    python benchmarks/data_threats.py [--rate 0.05] [--n 800] [--retrain]
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import bastion.defenses  # noqa: F401  (registers the detectors)
from bastion._atomic import write_json
from bastion.attacks.poisoning import BadNets
from bastion.audit.target import AuditTarget
from bastion.cli._target import ModelSource
from bastion.core import UnknownNameError, Victim
from bastion.core.registry import DEFENSES

HERE = Path(__file__).resolve().parent
CHECKPOINT = HERE.parent / "tests" / "fixtures" / "small_cnn-mnist5k.safetensors"
HELDOUT = 200  # the defender's clean held-out images: the last test images, as the backdoor audit uses


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=0.05)
    p.add_argument("--n", type=int, default=800, help="test images measured (the first N)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retrain", action="store_true", help="train the poisoned models again even if cached")
    p.add_argument("--out", type=Path, default=HERE / "results" / "data_threats.json")
    return p.parse_args()


# ---- ART ------------------------------------------------------------------------------------------


def art_classifier(model: nn.Module, nb_classes: int = 10) -> Any:
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=nb_classes,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


def add_pattern_bd_cf(batch: np.ndarray) -> np.ndarray:
    """ART's BadNets pattern (`add_pattern_bd`) on NCHW images."""
    from art.attacks.poisoning.perturbations import add_pattern_bd

    return add_pattern_bd(batch, channels_first=True)


def art_trigger(x: Tensor) -> Tensor:
    return torch.from_numpy(add_pattern_bd_cf(x.numpy()))


def art_poison(x: Tensor, y: Tensor, index: Tensor, target: int) -> tuple[Tensor, Tensor]:
    """ART's BadNets (`PoisoningAttackBackdoor`, `add_pattern_bd`) on the images `index`, labelled `target`."""
    from art.attacks.poisoning import PoisoningAttackBackdoor

    attack = PoisoningAttackBackdoor(add_pattern_bd_cf)
    onehot = np.zeros((index.numel(), 10), dtype=np.float32)
    onehot[:, target] = 1
    x_p, _ = attack.poison(x[index].numpy(), y=onehot)
    xs, ys = x.clone(), y.clone()
    xs[index] = torch.from_numpy(np.asarray(x_p, dtype=np.float32))
    ys[index] = target
    return xs, ys


def art_strip(model: nn.Module, x_fit: Tensor, clean: Tensor, triggered: Tensor, samples: int) -> dict[str, Any]:
    from art.defences.transformer.poisoning import STRIP

    np.random.seed(0)
    start = time.perf_counter()
    defended = STRIP(art_classifier(model))(num_samples=samples, false_acceptance_rate=0.01)
    defended.mitigate(x_fit.numpy())
    out = defended.predict(np.concatenate([clean.numpy(), triggered.numpy()]))
    abstained = torch.from_numpy(~out.any(axis=1))  # ART abstains with a row of zeros
    n = clean.shape[0]
    return {
        "tpr": float(abstained[n:].float().mean()),
        "fpr": float(abstained[:n].float().mean()),
        "seconds": time.perf_counter() - start,
    }


def art_inspect(kind: str, model: nn.Module, x: Tensor, y: Tensor, rate: float, **kw: Any) -> tuple[Tensor, float]:
    """(removed mask, seconds) of ART's `SpectralSignatureDefense` or `ActivationDefence` on (x, y)."""
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    onehot = np.eye(10, dtype=np.float32)[y.numpy()]
    clf = art_classifier(model)
    start = time.perf_counter()
    if kind == "spectral":
        defence = SpectralSignatureDefense(clf, x.numpy(), onehot, expected_pp_poison=rate, eps_multiplier=1.5)
        _, is_clean = defence.detect_poison()
    else:
        defence = ActivationDefence(clf, x.numpy(), onehot)
        _, is_clean = defence.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA", **kw)
    return torch.tensor(is_clean) == 0, time.perf_counter() - start


class Softmax(nn.Module):
    """The model followed by a softmax: what ART's STRIP expects its classifier to return."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).softmax(1)


# ---- measurements ---------------------------------------------------------------------------------


def asr(victim: Victim, x: Tensor, y: Tensor, trigger: Any, target: int) -> float:
    movable = y != target
    return float((victim.predict(trigger(x[movable]).clamp(0, 1)) == target).float().mean())


def trained(target: AuditTarget, x: Tensor, y: Tensor, key: str, args: argparse.Namespace) -> Victim:
    path = target.model_dir / f"{key}.safetensors" if target.model_dir else None
    if args.retrain and path is not None and path.exists():
        path.unlink()
    start = time.perf_counter()
    model = target.train_fresh(x, y, seed=args.seed, cache_key=key)
    print(f"  {key}: {time.perf_counter() - start:.0f} s (trained or read from the cache)", flush=True)
    return Victim(model, input_shape=(1, 28, 28), num_classes=10)


def removal_row(name: str, removed: Tensor, poisoned: Tensor, seconds: float, auroc: float | None) -> dict[str, Any]:
    return {
        "method": name,
        "poisons_removed": float(removed[poisoned].float().mean()),
        "clean_removed": int(removed[~poisoned].sum()),
        "auroc": auroc,
        "seconds": round(seconds, 2),
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    target = replace(ModelSource(checkpoint=CHECKPOINT).target(), model_dir=HERE / "results" / "data_threats_models")
    ds = target.dataset
    x_train, y_train = target.members(target.n_members)
    x, y = target.test(min(args.n, ds.x_test.shape[0] - HELDOUT))
    x_fit, y_fit = ds.x_test[-HELDOUT:], ds.y_test[-HELDOUT:]
    badnets = BadNets(rate=args.rate, seed=args.seed)
    poisoned = badnets.poison(x_train, y_train, 10)
    flags = torch.zeros(y_train.numel(), dtype=torch.bool)
    flags[poisoned.index] = True
    print(f"{poisoned.index.numel()} of {y_train.numel()} training images poisoned (target 0)", flush=True)

    # ---- poisoning
    ours = trained(target, poisoned.x, poisoned.y, f"bastion-badnets-{args.rate}-s{args.seed}", args)
    art_x, art_y = art_poison(x_train, y_train, poisoned.index, badnets.target)
    theirs = trained(target, art_x, art_y, f"art-badnets-{args.rate}-s{args.seed}", args)
    clean = target.victim
    poisoning = []
    for label, victim, trigger in (("bastion badnets", ours, badnets.apply_trigger), ("ART", theirs, art_trigger)):
        poisoning.append(
            {
                "library": label,
                "clean_accuracy": float((victim.predict(x) == y).float().mean()),
                "asr": asr(victim, x, y, trigger, badnets.target),
                "clean_model_asr": asr(clean, x, y, trigger, badnets.target),
            }
        )
        print(f"  {poisoning[-1]}", flush=True)

    # ---- run-time screening
    neg, pos = badnets.screening_sets(ours, x, y)
    screening = []
    start = time.perf_counter()
    r = DEFENSES.get("strip")(seed=args.seed).run(ours, neg, pos, x_fit=x_fit, y_fit=y_fit)
    screening.append(
        {"method": "bastion strip (n 100)", "auroc": r.auroc, "tpr": r.extra["tpr"], "fpr": r.extra["fpr"]}
    )
    screening[-1]["seconds"] = time.perf_counter() - start
    for samples in (20, 100):
        for label, model in (("ART", ours.model), ("ART softmax", Softmax(ours.model))):
            method = f"{label} STRIP (num_samples {samples})"
            try:
                row = art_strip(model, x_fit, neg, pos, samples)
            except ValueError as e:  # on logits, ART's entropies are not finite and its normal fit refuses them
                row = {"error": f"{type(e).__name__}: {e}"}
            screening.append({"method": method, "auroc": None, **row})
            print(f"  {screening[-1]}", flush=True)

    # ---- training-set inspection
    inspection = []
    for name in ("spectral-signatures", "activation-clustering"):
        try:
            detector = DEFENSES.get(name)(seed=args.seed)
        except UnknownNameError:
            print(f"  bastion {name}: not registered, skipped", flush=True)
            continue
        d = detector.run(ours, poisoned.x, poisoned.y, flags)
        removed = torch.zeros_like(flags)
        removed[d.extra["removed"]] = True
        inspection.append(removal_row(f"bastion {name}", removed, flags, d.seconds, d.auroc))
    penultimate = ours.model[:-1]  # the hidden features: the model without its last Linear
    for layer, model in (("logits", ours.model), ("penultimate", penultimate)):
        runs = [("spectral", "ART SpectralSignatureDefense", {})]
        runs += [
            ("ac", f"ART ActivationDefence {rule}", {"cluster_analysis": rule}) for rule in ("smaller", "relative-size")
        ]
        for kind, label, kw in runs:
            try:
                removed, s = art_inspect(kind, model, poisoned.x, poisoned.y, args.rate, **kw)
            except ValueError as e:  # ART 1.20.1's relative-size rule tests `id in array` on an empty array
                inspection.append({"method": f"{label} ({layer})", "error": f"{type(e).__name__}: {e}"})
                continue
            inspection.append(removal_row(f"{label} ({layer})", removed, flags, s, None))
    for row in inspection:
        print(f"  {row}", flush=True)

    report = {
        "benchmark": "data_threats",
        "settings": {"rate": args.rate, "n": int(x.shape[0]), "heldout": HELDOUT, "seed": args.seed},
        "torch": torch.__version__,
        "machine": platform.machine(),
        "poisoning": poisoning,
        "screening": screening,
        "inspection": inspection,
    }
    print("\n" + render(report))
    print("->", write_json(args.out, report))


def render(report: dict[str, Any]) -> str:
    lines = ["| poisoning | clean accuracy | ASR | ASR on the clean model |", "|---|---:|---:|---:|"]
    for r in report["poisoning"]:
        lines.append(f"| {r['library']} | {r['clean_accuracy']:.1%} | {r['asr']:.1%} | {r['clean_model_asr']:.1%} |")
    lines += ["", "| screening | AUROC | TPR | FPR | seconds |", "|---|---:|---:|---:|---:|"]
    for r in report["screening"]:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error']} | | | |")
            continue
        auroc = "-" if r["auroc"] is None else f"{r['auroc']:.3f}"
        lines.append(f"| {r['method']} | {auroc} | {r['tpr']:.1%} | {r['fpr']:.1%} | {r['seconds']:.1f} |")
    lines += ["", "| inspection | poisons removed | clean removed | AUROC | seconds |", "|---|---:|---:|---:|---:|"]
    for r in report["inspection"]:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error']} | | | |")
            continue
        auroc = "-" if r["auroc"] is None else f"{r['auroc']:.3f}"
        lines.append(
            f"| {r['method']} | {r['poisons_removed']:.1%} | {r['clean_removed']} | {auroc} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
