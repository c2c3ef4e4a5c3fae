"""Membership inference on an overfitted model: bastion's attacks beside IBM ART 1.20.1's, same model and split.

Claim checked: bastion's best membership attack reaches at least the AUROC of the strongest ART
attack on the same model and the same evaluation set, and on images the model never saw (the null
check) every bastion attack gives AUROC 0.50 +- 0.03. The verdict is printed and written, met or
missed, with the margin.

How it is measured:
- The model: `small_cnn` trained on the first `--train-n` (1,000) images of `mnist5k`'s seeded
  training split with the `standard` recipe but no augmentation and no weight decay, for `--epochs`
  (60): 100% training accuracy, test accuracy below it (both printed; digits generalise well from
  1,000 images, so the gap, and the membership signal, stay small: `--train-n 500 --n 500` overfits
  more). The checkpoint is cached in benchmarks/results/ (the file name carries train_n, epochs and
  seed; `--retrain` trains again).
- The candidates: members = the first `--n` (1,000) training images the model saw, non-members = the
  first N test images. Balanced. `full` = all 2N; ART's trained attacks need known members and
  non-members to fit on, so the candidates are cut in two: the attack models are fitted on members
  and non-members N/2..N-1 (`fit half`) and every attack, bastion's and ART's, is measured on members
  and non-members 0..N/2-1 (`eval half`). bastion's attacks are reported on both sets.
- bastion: every registered membership attack that needs no shadow models (LiRA is measured beside
  ART in benchmarks/lira_art.py), `run(victim, x, y, member)`, one query per candidate, twice: with
  one global threshold (a fixed score, no known member needed), and with Song & Mittal's
  class-dependent thresholds (`thresholds="class"`, rows `NAME +class`) fitted on the fit half, as
  ART's attack models are (`known=` the fit half), and measured on the eval half. ART's trained
  attacks see the one-hot label beside their feature, so they too can learn one threshold per class.
- ART (`PyTorchClassifier` around the same nn.Module, clip_values (0, 1), cross-entropy loss, inputs
  cast to float32 (`Float32`, for ART's HopSkipJump under NumPy 2); its `predict` returns the
  module's logits): `MembershipInferenceBlackBoxRuleBased` (member = correctly classified; needs no
  fitting, so it is measured on both sets) and `MembershipInferenceBlackBox` with attack models `nn`,
  `rf`, `gb` (ART's defaults otherwise) fitted on the fit half, each with input_type `prediction`
  (the logits with the one-hot label: ART's default) and `loss` (the cross-entropy with the label;
  `--art-inputs`), so that the strongest ART configuration is the one compared.
  `LabelOnlyDecisionBoundary` runs ART's HopSkipJump on every candidate, one image at a time: it is
  timed on a few images first and run only when the estimate for calibrating on the fit half and
  inferring on the eval half fits `--label-only-budget` seconds (else it is reported as skipped, with
  the estimate; `--label-only`). Scores: `infer(..., probabilities=True)`, the column of "member".
- Metrics, the same code for every library (`bastion.core.metrics` on the scores): AUROC, TPR at
  0.1% and 1% FPR (no interpolation: on 500 non-members 0.1% FPR means no false positive), the best
  balanced accuracy over thresholds; a 95% bootstrap interval of each AUROC (1,000 resamples,
  members and non-members resampled apart) and, for the claim, a paired bootstrap interval of the
  difference between bastion's best and ART's strongest on the same candidates. Seconds: wall time of
  the call (for ART's trained attacks fit plus infer), one process, bastion's Victim in batches of
  128 as ART's predict; machine-dependent.
- The null check: bastion's attacks with "members" = N training images the model never saw
  (train_n..train_n+N-1 of the training split) against the same N test images.

    bash benchmarks/setup_peers.sh           # once: ART 1.20.1 into .venv
    python benchmarks/membership.py [--train-n 1000] [--epochs 60] [--n 1000] [--retrain]

Writes benchmarks/results/membership.json (`--out`).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import bastion
import bastion.attacks.privacy  # registers the membership attacks
from _peer_adapters import peer_version
from bastion._atomic import write_json
from bastion.core import ATTACKS, Victim
from bastion.core.metrics import auroc, best_balanced_accuracy, tpr_at_fpr
from bastion.data import load_dataset
from bastion.models import load_checkpoint
from bastion.train import accuracy, train_checkpoint
from evasion_peers import provenance, seed_all

HERE = Path(__file__).resolve().parent
ART_MODELS = ("nn", "rf", "gb")
ART_INPUTS = ("prediction", "loss")
NULL_TOLERANCE = 0.03  # the null check: |AUROC - 0.5| <= this
FPRS = (1e-3, 1e-2)
BOOTSTRAP = 1000  # resamples for the AUROC intervals


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--train-n", type=int, default=1000, help="the model trains on the first N training images")
    p.add_argument("--epochs", type=int, default=60, help="training epochs (enough for 100%% training accuracy)")
    p.add_argument("--n", type=int, default=1000, help="members and non-members each (<= train-n, <= 1,000)")
    p.add_argument("--seed", type=int, default=0, help="training seed; the global generators before each ART call")
    p.add_argument("--retrain", action="store_true", help="train the model again even if cached")
    p.add_argument(
        "--art-inputs",
        default=",".join(ART_INPUTS),
        help="input_type of ART's MembershipInferenceBlackBox, comma-separated: " + ", ".join(ART_INPUTS),
    )
    p.add_argument(
        "--label-only",
        choices=("auto", "run", "skip"),
        default="auto",
        help="ART's LabelOnlyDecisionBoundary: auto = run only if the timed estimate fits the budget",
    )
    p.add_argument("--label-only-budget", type=float, default=600.0, help="seconds allowed to it (auto)")
    p.add_argument("--label-only-probe", type=int, default=4, help="images timed to estimate its cost")
    p.add_argument("--ckpt-dir", type=Path, default=HERE / "results", help="checkpoint cache")
    p.add_argument("--out", type=Path, default=HERE / "results" / "membership.json")
    a = p.parse_args()
    if not 2 <= a.n <= a.train_n:
        p.error(f"--n must lie in [2, --train-n = {a.train_n}]; got {a.n}")
    a.art_inputs = [v for v in a.art_inputs.split(",") if v]
    if bad := [v for v in a.art_inputs if v not in ART_INPUTS]:
        p.error(f"--art-inputs: unknown {', '.join(bad)}; choose from {', '.join(ART_INPUTS)}")
    return a


# ---- the model -----------------------------------------------------------------------------------


def checkpoint(args: argparse.Namespace) -> Path:
    """The cached overfitted `small_cnn`, trained if missing (or with --retrain)."""
    path = args.ckpt_dir / f"small_cnn-mnist5k-overfit-n{args.train_n}-e{args.epochs}-s{args.seed}.safetensors"
    if path.is_file() and not args.retrain:
        return path
    print(f"training small_cnn on the first {args.train_n} mnist5k images, {args.epochs} epochs -> {path}", flush=True)
    start = time.perf_counter()
    train_checkpoint(
        model="small_cnn",
        data="mnist5k",
        out=path,
        train_n=args.train_n,
        epochs=args.epochs,
        augment="none",
        weight_decay=0.0,
        seed=args.seed,
        device="cpu",
    )
    print(f"  trained in {time.perf_counter() - start:.0f} s", flush=True)
    return path


# ---- measuring -----------------------------------------------------------------------------------


def metrics(scores: Tensor, member: Tensor) -> dict[str, float]:
    s, m = scores.double().cpu(), member.bool().cpu()
    out = {"auroc": auroc(s, m), "balanced_accuracy": best_balanced_accuracy(s, m)}
    for fpr in FPRS:
        out[f"tpr_at_fpr_{fpr:g}"] = tpr_at_fpr(s, m, fpr)
    return out


def resamples(member: Tensor, count: int, seed: int) -> list[Tensor]:
    """`count` bootstrap index sets, members and non-members each resampled with replacement (stratified)."""
    gen = torch.Generator().manual_seed(seed)
    pos, neg = torch.nonzero(member)[:, 0], torch.nonzero(~member)[:, 0]
    return [
        torch.cat(
            [
                pos[torch.randint(len(pos), (len(pos),), generator=gen)],
                neg[torch.randint(len(neg), (len(neg),), generator=gen)],
            ]
        )
        for _ in range(count)
    ]


def interval(values: list[float]) -> list[float]:
    v = torch.tensor(values, dtype=torch.float64)
    return [float(v.quantile(0.025)), float(v.quantile(0.975))]


def row(method: str, library: str, on: str, scores: Tensor | None, member: Tensor, seconds: float | None, **kw: Any):
    """One line of the table; the scores travel along (`_scores`, `_member`, dropped from the JSON)."""
    r: dict[str, Any] = {"method": method, "library": library, "evaluated_on": on, "status": "ok"}
    if scores is not None:
        s, m = scores.double().cpu(), member.bool().cpu()
        r.update(metrics(s, m), seconds=seconds, n=int(m.numel()), n_members=int(m.sum()))
        r["auroc_ci95"] = interval([auroc(s[i], m[i]) for i in resamples(m, BOOTSTRAP, 0)])
        r.update(_scores=s, _member=m)
    r.update(kw)
    return r


def bastion_rows(victim: Victim, sets: list[tuple[str, Tensor, Tensor, Tensor, Tensor | None]]) -> list[dict[str, Any]]:
    """Every bastion attack on every set (name, x, y, member, known): with one global threshold on all
    of (x, y) where `known` is None, else with class thresholds fitted on the `known` candidates (the
    row then measures the other candidates, in their order)."""
    rows = []
    for name in ATTACKS.names("membership"):
        if ATTACKS.get(name).needs_reference:
            continue  # shadow models: benchmarks/lira_art.py
        for on, x, y, member, known in sets:
            method, attack = (
                (name, ATTACKS.get(name)())
                if known is None
                else (f"{name} +class", ATTACKS.get(name)(thresholds="class"))
            )
            start = time.perf_counter()
            result = attack.run(victim, x, y, member, known=known)
            seconds = time.perf_counter() - start
            truth = member if known is None else member[~known]
            lib = f"bastion {bastion.__version__}"
            rows.append(row(method, lib, on, result.scores, truth, seconds, extra=result.extra))
    return rows


class Float32(nn.Module):
    """The model, fed float32: ART 1.20.1's HopSkipJump sends float64 arrays under NumPy 2 (its binary search
    mixes NumPy float64 scalars into the images), which a float32 convolution rejects. Nothing else changes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.float())


def art_rows(
    model: nn.Module,
    fit: tuple[Tensor, Tensor, Tensor],
    sets: dict[str, tuple[Tensor, Tensor, Tensor]],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """ART's black-box membership attacks on the same module; fitted on `fit`, measured on `sets`."""
    art_version = peer_version("art")
    label = f"ART {art_version}"
    if art_version.startswith("not installed"):
        return [row("art", "ART", "-", None, torch.zeros(0), None, status=art_version)]
    from art.attacks.inference.membership_inference import (
        MembershipInferenceBlackBox,
        MembershipInferenceBlackBoxRuleBased,
    )
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(
        model=Float32(model),
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )

    def np_(t: Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    def member_column(p: np.ndarray) -> Tensor:
        return torch.from_numpy(np.asarray(p, dtype=np.float64).reshape(p.shape[0], -1)[:, -1].copy())

    def attempt(method: str, on: str, member: Tensor, fn: Callable[[], tuple[Tensor, dict[str, Any]]]) -> dict:
        seed_all(args.seed)
        start = time.perf_counter()
        try:
            scores, extra = fn()
        except Exception as e:  # a peer that breaks is reported, the benchmark goes on
            traceback.print_exc(file=sys.stderr)
            return row(method, label, on, None, member, None, status=f"error: {type(e).__name__}: {e}")
        return row(method, label, on, scores, member, time.perf_counter() - start, extra=extra)

    rows = []
    rule = MembershipInferenceBlackBoxRuleBased(clf)
    for on, (x, y, member) in sets.items():
        rows.append(
            attempt(
                "MembershipInferenceBlackBoxRuleBased",
                on,
                member,
                lambda x=x, y=y: (member_column(rule.infer(np_(x), np_(y), probabilities=True)), {}),
            )
        )
    fx, fy, fmember = fit
    xm, ym, xn, yn = np_(fx[fmember]), np_(fy[fmember]), np_(fx[~fmember]), np_(fy[~fmember])
    x, y, member = sets["eval half"]
    for input_type, kind in [(i, k) for i in args.art_inputs for k in ART_MODELS]:

        def trained(kind: str = kind, input_type: str = input_type) -> tuple[Tensor, dict[str, Any]]:
            attack = MembershipInferenceBlackBox(clf, input_type=input_type, attack_model_type=kind)
            start = time.perf_counter()
            attack.fit(x=xm, y=ym, test_x=xn, test_y=yn)
            fitted = time.perf_counter() - start
            scores = member_column(attack.infer(np_(x), np_(y), probabilities=True))
            return scores, {"fit_seconds": fitted, "infer_seconds": time.perf_counter() - start - fitted}

        method = f"MembershipInferenceBlackBox ({kind}, {input_type})"
        rows.append(attempt(method, "eval half", member, trained))
    rows.append(label_only(clf, fit, sets["eval half"], label, args, np_, member_column))
    return rows


def label_only(clf: Any, fit: Any, ev: Any, label: str, args: argparse.Namespace, np_: Any, member_column: Any):
    """ART's LabelOnlyDecisionBoundary (HopSkipJump distances, ART's defaults), if it fits the time budget."""
    from art.attacks.evasion import HopSkipJump
    from art.attacks.inference.membership_inference import LabelOnlyDecisionBoundary

    method = "LabelOnlyDecisionBoundary"
    fx, fy, fmember = fit
    x, y, member = ev
    n_images = fx.shape[0] + x.shape[0]  # calibrated on the fit half, inferred on the eval half
    if args.label_only == "skip":
        return row(method, label, "eval half", None, member, None, status="skipped (--label-only skip)")
    note = ""
    if args.label_only == "auto":
        k = max(1, args.label_only_probe // 2)  # as many members as non-members
        probe = torch.cat([torch.nonzero(fmember)[:k, 0], torch.nonzero(~fmember)[:k, 0]])
        hsj = HopSkipJump(classifier=clf, targeted=False, verbose=False)
        onehot = np.eye(10, dtype=np.float32)[np_(fy[probe])]
        seed_all(args.seed)
        start = time.perf_counter()
        try:
            hsj.generate(x=np_(fx[probe]), y=onehot)
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            return row(method, label, "eval half", None, member, None, status=f"error: {type(e).__name__}: {e}")
        per_image = (time.perf_counter() - start) / probe.numel()
        estimate = per_image * n_images
        note = (
            f"ART's HopSkipJump (its defaults: L2, max_iter 50, max_eval 10,000, one image at a time) took "
            f"{per_image:.1f} s per image on {probe.numel()} images: about {estimate / 60:.0f} min for the "
            f"{n_images:,} images (calibrate on the fit half, infer on the eval half)"
        )
        print(f"  {method}: {note}", flush=True)
        if estimate > args.label_only_budget:
            status = (
                f"skipped: about {estimate / 60:.0f} min estimated, over the --label-only-budget of "
                f"{args.label_only_budget:.0f} s ({note})"
            )
            return row(method, label, "eval half", None, member, None, status=status, estimate_seconds=estimate)
    attack = LabelOnlyDecisionBoundary(clf)
    seed_all(args.seed)
    start = time.perf_counter()
    try:
        kw = {"verbose": False}
        attack.calibrate_distance_threshold(
            np_(fx[fmember]), np_(fy[fmember]), np_(fx[~fmember]), np_(fy[~fmember]), **kw
        )
        scores = member_column(attack.infer(np_(x), np_(y), probabilities=True, **kw))
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        return row(method, label, "eval half", None, member, None, status=f"error: {type(e).__name__}: {e}")
    seconds = time.perf_counter() - start
    extra = {"distance_threshold_tau": float(attack.distance_threshold_tau), "probe": note}
    return row(method, label, "eval half", scores, member, seconds, extra=extra)


# ---- the claim -----------------------------------------------------------------------------------


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ok = [r for r in rows if r["status"] == "ok"]
    out = []
    for on in ("eval half", "full"):
        ours = [r for r in ok if r["library"].startswith("bastion") and r["evaluated_on"] == on]
        theirs = [r for r in ok if r["library"].startswith("ART") and r["evaluated_on"] == on]
        if not ours or not theirs:
            continue
        best = max(ours, key=lambda r: r["auroc"])
        peer = max(theirs, key=lambda r: r["auroc"])
        gap = best["auroc"] - peer["auroc"]
        # paired: the same resampled candidates for both, so the interval is that of the difference
        m, a, b = best["_member"], best["_scores"], peer["_scores"]
        lo, hi = interval([auroc(a[i], m[i]) - auroc(b[i], m[i]) for i in resamples(m, BOOTSTRAP, 1)])
        out.append(
            {
                "target": f"bastion's best AUROC >= the strongest ART attack's, on the {on}",
                "met": gap >= -1e-12,
                "detail": f"bastion {best['method']} {best['auroc']:.4f} vs ART {peer['method']} {peer['auroc']:.4f}"
                f" ({gap:+.4f}; paired bootstrap 95% interval of the difference [{lo:+.4f}, {hi:+.4f}])",
                "difference": gap,
                "difference_ci95": [lo, hi],
            }
        )
    null = [r for r in ok if r["evaluated_on"].startswith("null")]
    if null:
        worst = max(null, key=lambda r: abs(r["auroc"] - 0.5))
        out.append(
            {
                "target": f"null check: every bastion attack's AUROC within 0.50 +- {NULL_TOLERANCE}",
                "met": abs(worst["auroc"] - 0.5) <= NULL_TOLERANCE,
                "detail": ", ".join(f"{r['method']} {r['auroc']:.4f}" for r in null),
            }
        )
    return out


def table(rows: list[dict[str, Any]], targets: list[dict[str, Any]]) -> str:
    lines = [
        "| method | library | evaluated on | AUROC | AUROC 95% CI | TPR@0.1%FPR | TPR@1%FPR | balanced acc | seconds |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["status"] == "ok":
            figures = (
                f"{r['auroc']:.4f} | {r['auroc_ci95'][0]:.3f}-{r['auroc_ci95'][1]:.3f} | "
                f"{r['tpr_at_fpr_0.001']:.1%} | {r['tpr_at_fpr_0.01']:.1%} | "
                f"{r['balanced_accuracy']:.1%} | {r['seconds']:.3f}"
            )
        else:
            figures = f"{r['status'][:120]} | - | - | - | - | -"
        lines.append(f"| {r['method']} | {r['library']} | {r['evaluated_on']} | {figures} |")
    if targets:
        lines += ["", "| target | met | numbers |", "|---|---|---|"]
        lines += [f"| {t['target']} | {'MET' if t['met'] else 'MISSED'} | {t['detail']} |" for t in targets]
    return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    path = checkpoint(args)
    model, meta = load_checkpoint(path, device="cpu")
    model.eval().requires_grad_(False)  # what bastion's Victim does; both libraries share this module
    if meta.train_n != args.train_n:
        sys.exit(f"{path}: trained on train_n={meta.train_n}, not {args.train_n}; use --retrain")
    ds = load_dataset(meta.dataset, seed=meta.split_seed)
    n, tn = args.n, args.train_n
    if n > ds.x_test.shape[0]:
        sys.exit(f"--n {n}: {meta.dataset}'s test split has only {ds.x_test.shape[0]} images")
    train_acc = accuracy(model, ds.x_train[:tn], ds.y_train[:tn])
    test_acc = accuracy(model, ds.x_test, ds.y_test)
    print(
        f"model: small_cnn, train_n {tn}, {meta.recipe.get('epochs')} epochs, no augmentation, no weight decay: "
        f"train accuracy {train_acc:.2%}, test accuracy {test_acc:.2%} (gap {train_acc - test_acc:.2%})",
        flush=True,
    )
    if train_acc < 1.0:
        print("  warning: training accuracy below 100%: more --epochs would overfit further", flush=True)
    # batches of 128, as ART's predict: on one CPU thread a batch of 1,000 runs small_cnn twice as slowly
    victim = Victim(model, input_shape=ds.input_shape, batch_size=128, device="cpu")

    def candidates(xm: Tensor, ym: Tensor, xn: Tensor, yn: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        member = torch.cat([torch.ones(xm.shape[0], dtype=torch.bool), torch.zeros(xn.shape[0], dtype=torch.bool)])
        return torch.cat([xm, xn]), torch.cat([ym, yn]), member

    def second_halves(member: Tensor) -> Tensor:
        """Members and non-members past the first half of each: the fit half of a (members, non-members) set."""
        rank = torch.cat([torch.arange(int(member.sum())), torch.arange(int((~member).sum()))])
        return rank >= torch.where(member, int(member.sum()) // 2, int((~member).sum()) // 2)

    half = n // 2
    xm, ym, xn, yn = ds.x_train[:n], ds.y_train[:n], ds.x_test[:n], ds.y_test[:n]
    full = candidates(xm, ym, xn, yn)
    eval_half = candidates(xm[:half], ym[:half], xn[:half], yn[:half])
    fit_half = candidates(xm[half:], ym[half:], xn[half:], yn[half:])
    n_null = min(n, ds.x_train.shape[0] - tn)
    # bastion's class thresholds are fitted on the fit half, as ART's attack models are, and measured on
    # the eval half: the full candidate set with the fit half marked as known
    sets = [("full", *full, None), ("eval half", *eval_half, None), ("eval half", *full, second_halves(full[2]))]
    null_name = f"null: train {tn}..{tn + n_null - 1} (unseen) vs test"
    if n_null >= 1:
        null = candidates(ds.x_train[tn : tn + n_null], ds.y_train[tn : tn + n_null], xn[:n_null], yn[:n_null])
    report: dict[str, Any] = {
        "benchmark": "membership",
        "provenance": provenance(),
        "art": peer_version("art"),
        "model": {
            "checkpoint": str(path),
            "architecture": meta.architecture,
            "train_n": tn,
            "epochs": meta.recipe.get("epochs"),
            "augment": meta.recipe.get("augment"),
            "weight_decay": meta.recipe.get("weight_decay"),
            "train_accuracy": train_acc,
            "test_accuracy": test_acc,
        },
        "sets": {
            "full": f"members train 0..{n - 1}, non-members test 0..{n - 1}",
            "eval half": f"members train 0..{half - 1}, non-members test 0..{half - 1}",
            "fit half": f"members train {half}..{n - 1}, non-members test {half}..{n - 1} (ART's attack models)",
            "null": f"'members' train {tn}..{tn + n_null - 1} (never seen), non-members test 0..{n_null - 1}",
        },
        "rows": [],
    }
    print("bastion ...", flush=True)
    rows = bastion_rows(victim, sets)
    if n_null >= 1:
        rows += bastion_rows(victim, [(null_name, *null, None), (null_name, *null, second_halves(null[2]))])
    else:
        print(f"  null check skipped: train_n {tn} leaves no unseen training image", flush=True)
    report["rows"] = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    write_json(args.out, report)  # partial results survive a kill
    print(f"ART ({report['art']}) ...", flush=True)
    rows += art_rows(model, fit_half, {"full": full, "eval half": eval_half}, args)
    order = {"full": 0, "eval half": 1}
    rows.sort(key=lambda r: order.get(r["evaluated_on"], 2))  # stable: bastion before ART within a set
    targets = verdicts(rows)
    kept = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    report.update(rows=kept, targets=targets, met=bool(targets) and all(t["met"] for t in targets))
    out = write_json(args.out, report)
    print("\n" + table(rows, targets) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
