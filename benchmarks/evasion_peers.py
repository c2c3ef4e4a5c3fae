"""Evasion benchmark: bastion's FGSM, PGD, AutoAttack and Square beside torchattacks, ART, Foolbox, the reference.

The same model, images and parameters for every library, in one process (the reference: fra31/auto-attack).

The targets below, on a `small_cnn` trained on `mnist5k` (recipe `standard`)
and a `pgd-at` one, the first N test images, L-inf eps 0.3:
- correctness: FGSM and PGD-40 robust accuracy within 1.0 point of torchattacks and of ART;
  AutoAttack (standard) within 0.5 point of the reference (fra31/auto-attack); Square at 1,000
  queries no higher than ART's Square;
- speed, as ratios (library seconds / bastion seconds): PGD-40 within 10% of the floor (the same
  number of bare forward+backward passes on the same batch) and no slower than the fastest peer;
  AutoAttack >= 3x faster than the reference on the standard model, no slower on the pgd-at one, at
  the reference's robust accuracy; Square no slower than the reference and >= 3x faster than ART.
PGD is compared with `early_stop=False` (every sample runs all steps and keeps its last iterate, as
the peers do); bastion's default (`early_stop=True`) is timed too and reported beside it.
Square's query count swings with the seed (its windows are random), and time follows it: `--seeds K`
runs every entry at K seeds and reports the summed seconds, the mean robust accuracy and the model's
forward rows per image (counted by a forward hook on the shared module, warm-up excluded).
Every library gets the same nn.Module in eval mode with frozen parameters (as bastion's Victim
holds it), the same batch, seeds set before each call, one warm-up call before timing. Figures are
machine-dependent: read the ratios. Peer quirks and how they are aligned: `_peer_adapters.py`.

    bash benchmarks/setup_peers.sh
    python benchmarks/evasion_peers.py [--n 500] [--models standard,pgd-at] [--attacks fgsm,pgd,autoattack,square]
    python benchmarks/evasion_peers.py --attacks square --peers reference --seeds 10
    python benchmarks/evasion_peers.py --quick      # smoke: 20 images, standard model, 100 Square queries
    python benchmarks/evasion_peers.py --data photo-digits --device cuda   # resnet20, CIFAR-format, 8/255

`--data photo-digits` runs the same comparison on 32 x 32 colour images in the CIFAR-10 format (made here,
since nothing can be downloaded; see `cgba.py`): a `resnet20` trained on them for `--photo-epochs`
(standard model only), L-inf eps 8/255 and PGD step 2/255 unless `--eps`/`--pgd-alpha` say otherwise.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import bastion
import bastion.attacks.evasion  # registers the attacks
from _peer_adapters import PEERS, Entry, Settings, peer_entries, peer_status
from bastion._atomic import write_json
from bastion.core import ATTACKS, RECIPES, ThreatModel, UnknownNameError, Victim
from bastion.core.random import seed_everything
from bastion.data import Dataset, load_dataset
from bastion.models import build_model, load_checkpoint
from bastion.train import accuracy, default_config, fit

HERE = Path(__file__).resolve().parent
ATTACK_NAMES = ("fgsm", "pgd", "autoattack", "square")
MODEL_RECIPES = {"standard": "standard", "pgd-at": "pgd-at"}
ACC_POINTS = {"fgsm": 1.0, "pgd": 1.0, "autoattack": 0.5}  # largest gap in robust accuracy, points
FLOOR_SLACK = 1.10  # PGD-40 within 10% of the floor
AA_SPEEDUP = {"standard": 3.0, "pgd-at": 1.0}  # reference seconds / bastion seconds, at least
SQUARE_SPEEDUP = {"reference": 1.0, "art": 3.0}


# ---- setup ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=None, help="test images (the first N of mnist5k's test split); 500")
    p.add_argument("--models", default=None, help="comma-separated: standard, pgd-at (--quick: standard)")
    p.add_argument("--pgd-at-epochs", type=int, default=None, help="epochs of the pgd-at model (recipe default)")
    p.add_argument("--attacks", default=",".join(ATTACK_NAMES), help="comma-separated: " + ", ".join(ATTACK_NAMES))
    p.add_argument("--peers", default=",".join(PEERS), help="comma-separated peers to run: " + ", ".join(PEERS))
    p.add_argument("--optional", action="store_true", help="also torchattacks' and ART's AutoAttack (slow)")
    p.add_argument("--repeat", type=int, default=1, help="timed calls per entry; the fastest is reported")
    p.add_argument("--warmup-n", type=int, default=None, help="images of the warm-up call (default 16)")
    p.add_argument("--batch-size", type=int, default=None, help="batch for every library (default N: one batch)")
    p.add_argument("--data", default="mnist5k", choices=["mnist5k", "photo-digits"], help="images and model")
    p.add_argument("--photo-epochs", type=int, default=15, help="photo-digits: resnet20 training epochs")
    p.add_argument("--eps", type=float, default=None, help="L-inf radius (0.3 on mnist5k, 8/255 on photo-digits)")
    p.add_argument("--pgd-steps", type=int, default=40)
    p.add_argument("--pgd-alpha", type=float, default=None, help="PGD step (0.01 on mnist5k, 2/255 on photo-digits)")
    p.add_argument("--square-queries", type=int, default=None, help="Square's query budget (default 1000)")
    p.add_argument("--square-p-init", type=float, default=0.8)
    p.add_argument(
        "--square-rescale",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="map Square's p schedule onto 10,000 queries (reference and bastion default; ART cannot)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="seeds per entry (seed, seed + 1, ...): seconds summed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--ckpt-dir", type=Path, default=HERE / "_peers" / "checkpoints", help="checkpoint cache")
    p.add_argument("--retrain", action="store_true", help="train the checkpoints again even if cached")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20 images, the standard model (pgd-at: 1 epoch), 100 Square queries",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON (default benchmarks/results/evasion_peers.json)")
    a = p.parse_args()
    quick = a.quick
    a.n = a.n or (20 if quick else 500)
    a.pgd_at_epochs = a.pgd_at_epochs or (1 if quick else None)
    a.square_queries = a.square_queries or (100 if quick else 1000)
    a.warmup_n = a.warmup_n or (4 if quick else 16)
    a.batch_size = a.batch_size or a.n
    colour = a.data == "photo-digits"
    a.eps = a.eps if a.eps is not None else (8 / 255 if colour else 0.3)
    a.pgd_alpha = a.pgd_alpha if a.pgd_alpha is not None else (2 / 255 if colour else 0.01)
    name = "evasion_peers" + ("_photo" if colour else "") + ("_quick" if quick else "") + ".json"
    a.out = a.out or HERE / "results" / name
    a.models = [m for m in (a.models or ("standard" if quick else "standard,pgd-at")).split(",") if m]
    a.attacks = [m for m in a.attacks.split(",") if m]
    a.peers = [m for m in a.peers.split(",") if m]
    for values, allowed, flag in ((a.models, MODEL_RECIPES, "--models"), (a.attacks, ATTACK_NAMES, "--attacks")):
        bad = [v for v in values if v not in allowed]
        if bad:
            p.error(f"{flag}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    if colour and a.models != ["standard"]:
        p.error("--data photo-digits: only the standard model (--models standard)")
    if bad := [v for v in a.peers if v not in PEERS]:
        p.error(f"--peers: unknown {', '.join(bad)}; choose from {', '.join(PEERS)}")
    return a


def checkpoint(kind: str, args: argparse.Namespace) -> Path:
    """The cached checkpoint of `small_cnn` on `mnist5k` trained with recipe `kind`, trained if missing."""
    import bastion.defenses  # noqa: F401  (registers pgd-at)
    from bastion.train import train_checkpoint

    recipe = MODEL_RECIPES[kind]
    epochs = args.pgd_at_epochs if kind == "pgd-at" else None
    if epochs is None:  # name the file after the recipe's current default, so a changed default retrains
        epochs = RECIPES.get(recipe)().config((1, 28, 28)).epochs
    path = args.ckpt_dir / f"small_cnn-mnist5k-{recipe}-e{epochs}-s0.safetensors"
    if path.is_file() and not args.retrain:
        return path
    print(f"training {kind} small_cnn on mnist5k, {epochs} epochs -> {path}", flush=True)
    start = time.perf_counter()
    train_checkpoint(model="small_cnn", data="mnist5k", out=path, recipe=recipe, epochs=epochs, device=args.device)
    print(f"  trained in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def photo_digits_model(ds: Dataset, epochs: int, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """A `resnet20` trained on the photo-digits images (Adam 3e-3, one-cycle, batches of 64, no augmentation:
    `cgba.py`'s brief recipe), on `device`; not cached (seconds on a GPU)."""
    seed_everything(0)
    model = build_model("resnet20", num_classes=10, in_channels=3, image_size=32, mean=ds.mean, std=ds.std).to(device)
    cfg = default_config((3, 32, 32), epochs=epochs, optimizer="adam", lr=3e-3, batch_size=64, augment="none")
    start = time.perf_counter()
    fit(model, ds.x_train, ds.y_train, cfg)
    seconds = time.perf_counter() - start
    acc = accuracy(model.eval(), ds.x_test.to(device), ds.y_test.to(device))
    print(f"resnet20 on photo-digits: {epochs} epochs, {seconds:.0f} s on {device}, test {acc:.3f}", flush=True)
    return model, {"architecture": "resnet20", "data": "photo-digits", "epochs": epochs, "train_seconds": seconds}


def provenance() -> dict[str, Any]:
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
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


# ---- measuring -----------------------------------------------------------------------------------


def seed_all(seed: int) -> None:
    """The peers draw from the global generators: seed them before every call."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def predict(model: nn.Module, x: Tensor, batch: int) -> Tensor:
    return torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, x.shape[0], batch)])


def timed(fn: Any, x: Tensor, y: Tensor, seed: int, repeat: int) -> tuple[Tensor, list[float]]:
    """(x_adv of the first call, seconds of each call); every call gets fresh copies of x and y."""
    x_adv, times = None, []
    for _ in range(repeat):
        xc, yc = x.clone(), y.clone()
        seed_all(seed)
        sync(x.device)
        start = time.perf_counter()
        out = fn(xc, yc)
        sync(x.device)
        times.append(time.perf_counter() - start)
        if x_adv is None:
            x_adv = out.detach().to(x.device, torch.float32)
    assert x_adv is not None
    return x_adv, times


def floor_seconds(model: nn.Module, x: Tensor, y: Tensor, passes: int, repeat: int) -> list[float]:
    """Seconds of `passes` bare forward+backward passes (input gradient of the CE) on the whole batch."""

    def one() -> None:
        xg = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        torch.autograd.grad(loss, xg)

    one()  # warm-up
    times = []
    for _ in range(repeat):
        sync(x.device)
        start = time.perf_counter()
        for _ in range(passes):
            one()
        sync(x.device)
        times.append(time.perf_counter() - start)
    return times


def bastion_entries(attack: str, victim: Victim, s: Settings) -> list[Entry]:
    try:
        cls = ATTACKS.get(attack)
    except UnknownNameError:
        return [Entry("bastion", "bastion", None, status=f"not available: {attack!r} is not registered yet")]
    threat = ThreatModel(norm="linf", eps=s.eps)
    if attack == "pgd":
        pgd = {"steps": s.pgd_steps, "alpha": s.pgd_alpha, "restarts": 1, "loss": "ce", "random_start": True}
        variants = [("bastion", "bastion early_stop=False", {**pgd, "early_stop": False})]
        variants.append(("bastion-default", "bastion early_stop=True (default)", {**pgd, "early_stop": True}))
    elif attack == "square":
        sq = {"n_queries": s.square_queries, "p_init": s.square_p_init, "n_restarts": 1}
        variants = [("bastion", "bastion", {**sq, "rescale_schedule": s.square_rescale, "loss": "margin"})]
    else:
        variants = [("bastion", "bastion", {})]
    entries = []
    for key, label, params in variants:
        atk = cls(threat=threat, seed=s.seed, **params)
        entry = Entry(key, f"{label} {bastion.__version__}", None)

        def run(x: Tensor, y: Tensor, atk: Any = atk, entry: Entry = entry) -> Tensor:
            result = replace(atk, seed=torch.initial_seed()).run(victim, x, y)  # the seed the harness set
            entry.extra = {"robust_accuracy_reported": result.robust_accuracy, **result.extra}
            if result.warnings:
                entry.extra["warnings"] = list(result.warnings)
            return result.x_adv

        entry.run = run
        entries.append(entry)
    return entries


def run_entry(entry: Entry, model: nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace) -> dict[str, Any]:
    row: dict[str, Any] = {"key": entry.key, "library": entry.label, "status": entry.status, "notes": entry.notes}
    if entry.run is None:
        return row
    w = min(args.warmup_n, x.shape[0])
    seeds = range(args.seed, args.seed + args.seeds)
    rows_seen = [0]

    def count(_m: nn.Module, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
        rows_seen[0] += inputs[0].shape[0]

    try:
        timed(entry.run, x[:w], y[:w], args.seed, 1)  # warm-up, not counted
        hook = model.register_forward_hook(count)
        try:
            runs = [timed(entry.run, x, y, seed, args.repeat) for seed in seeds]
        finally:
            hook.remove()
    except Exception as e:  # a peer that breaks is reported, the benchmark goes on
        traceback.print_exc(file=sys.stderr)
        row["status"] = f"error: {type(e).__name__}: {e}"
        return row
    robust, linf, inside = [], 0.0, True
    for x_adv, _ in runs:
        robust.append((predict(model, x_adv, args.batch_size) == y).float().mean().item())
        d = (x_adv - x).abs().flatten(1).amax(1).max().item() if x.shape[0] else 0.0
        linf = max(linf, d)
        inside &= d <= args.eps + 1e-5 and bool(x_adv.min() >= -1e-6) and bool(x_adv.max() <= 1 + 1e-6)
        inside &= not math.isnan(d)
    row.update(
        robust_accuracy=sum(robust) / len(robust),
        seconds=sum(min(times) for _, times in runs),
        seconds_all=[[round(t, 4) for t in times] for _, times in runs],
        max_linf=round(linf, 6),
        # forward rows per image per call (the bare model's, for every library; the floor's passes excluded)
        forward_rows=rows_seen[0] / (x.shape[0] * args.repeat * len(runs)),
    )
    if len(runs) > 1:
        row["robust_accuracy_by_seed"] = robust
    if not inside:
        row["status"] = "invalid: x_adv outside the eps-ball or the bounds"
    if entry.extra:
        row["extra"] = entry.extra
    return row


# ---- targets -------------------------------------------------------------------------------------


def targets_for(model_name: str, attack: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets of the module docstring for one (model, attack), each met (True/False) or not measurable (None)."""
    by = {r["key"]: r for r in rows if r["status"] == "ok" and "seconds" in r}
    out: list[dict[str, Any]] = []

    def add(target: str, met: bool | None, detail: str) -> None:
        out.append({"model": model_name, "attack": attack, "target": target, "met": met, "detail": detail})

    def missing(*keys: str) -> str | None:
        gone = [k for k in keys if k not in by]
        return f"n/a: no result for {', '.join(gone)}" if gone else None

    def acc_gap(peer: str, points: float) -> tuple[bool | None, str]:
        if why := missing("bastion", peer):
            return None, why
        a, b = by["bastion"]["robust_accuracy"], by[peer]["robust_accuracy"]
        gap = 100 * abs(a - b)
        return gap <= points + 1e-9, f"bastion {a:.1%} vs {peer} {b:.1%}: {gap:.1f} pt"

    if attack in ("fgsm", "pgd"):
        for peer in ("torchattacks", "art"):
            add(f"robust accuracy within {ACC_POINTS[attack]} pt of {peer}", *acc_gap(peer, ACC_POINTS[attack]))
    if attack == "pgd":
        if why := missing("bastion", "floor"):
            add(f"within {FLOOR_SLACK - 1:.0%} of the floor", None, why)
        else:
            bs, fs = by["bastion"]["seconds"], by["floor"]["seconds"]
            add(f"within {FLOOR_SLACK - 1:.0%} of the floor", bs <= FLOOR_SLACK * fs, f"{bs:.2f} s vs floor {fs:.2f} s")
        peers = {k: by[k]["seconds"] for k in ("torchattacks", "art", "foolbox") if k in by}
        if "bastion" not in by or not peers:
            add("no slower than the fastest peer", None, "n/a: no bastion or no peer result")
        else:
            fastest = min(peers, key=peers.__getitem__)
            bs = by["bastion"]["seconds"]
            add(
                "no slower than the fastest peer",
                bs <= peers[fastest],
                f"bastion {bs:.2f} s vs {fastest} {peers[fastest]:.2f} s",
            )
    if attack == "autoattack":
        met, detail = acc_gap("reference", ACC_POINTS["autoattack"])
        add("robust accuracy within 0.5 pt of the reference", met, detail)
        need = AA_SPEEDUP.get(model_name, 1.0)
        if why := missing("bastion", "reference"):
            add(f">= {need:g}x faster than the reference", None, why)
        else:
            speedup = by["reference"]["seconds"] / by["bastion"]["seconds"]
            add(
                f">= {need:g}x faster than the reference, at its robust accuracy",
                speedup >= need and bool(met),
                f"reference / bastion = {speedup:.2f}x",
            )
    if attack == "square":
        if why := missing("bastion", "art"):
            add("robust accuracy no higher than ART's", None, why)
        else:
            a, b = by["bastion"]["robust_accuracy"], by["art"]["robust_accuracy"]
            add("robust accuracy no higher than ART's", a <= b + 1e-9, f"bastion {a:.1%} vs ART {b:.1%}")
        for peer, need in SQUARE_SPEEDUP.items():
            target = f">= {need:g}x faster than {peer}" if need > 1 else f"no slower than {peer}"
            if why := missing("bastion", peer):
                add(target, None, why)
            else:
                speedup = by[peer]["seconds"] / by["bastion"]["seconds"]
                add(target, speedup >= need, f"{peer} / bastion = {speedup:.2f}x")
    return out


# ---- reporting -----------------------------------------------------------------------------------


def _stages(extra: dict[str, Any]) -> str:
    stages = extra.get("stages")
    if isinstance(stages, dict):
        return "stages: " + " > ".join(
            f"{k} {v:.1%}" if isinstance(v, float) else f"{k} {v}" for k, v in stages.items()
        )
    if isinstance(stages, list):
        parts = []
        for st in stages:
            if isinstance(st, dict):
                name = st.get("attack", st.get("name", "?"))
                acc = st.get("robust_accuracy", st.get("accuracy"))
                parts.append(f"{name} {acc:.1%}" if isinstance(acc, float) else f"{name} {acc}")
        return "stages: " + " > ".join(parts)
    return ""


def table(model_name: str, info: dict[str, Any], rows: list[dict[str, Any]], targets: list[dict[str, Any]]) -> str:
    lines = [
        f"## {model_name}: {info.get('architecture', 'small_cnn')} on {info.get('data', 'mnist5k')}, "
        f"{'recipe ' + str(info['recipe']) if 'recipe' in info else str(info.get('epochs')) + ' epochs'}, "
        f"clean accuracy {info['clean_accuracy']:.1%} on {info['n']} images",
        "",
        "| attack | library | robust acc | seconds | ratio (lib / bastion) | forward rows / image | notes |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "seconds" in r and r["status"] == "ok":
            acc = "-" if r.get("robust_accuracy") is None else f"{r['robust_accuracy']:.1%}"
            ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.2f}"
            sec = f"{r['seconds']:.2f}"
            rows_ = f"{r['forward_rows']:.1f}" if "forward_rows" in r else "-"
        else:  # the JSON keeps the whole message
            status = r["status"]
            acc = "not installed" if status.startswith("not installed") else status[:60]
            sec, ratio, rows_ = "-", "-", "-"
        notes = "; ".join(n for n in (r.get("notes", ""), _stages(r.get("extra", {}))) if n)
        lines.append(f"| {r['attack']} | {r['library']} | {acc} | {sec} | {ratio} | {rows_} | {notes} |")
    if targets:
        lines += ["", "| attack | target | met | numbers |", "|---|---|---|---|"]
        for t in targets:
            met = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
            lines.append(f"| {t['attack']} | {t['target']} | {met} | {t['detail']} |")
    return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    peers = peer_status()
    print("peers: " + "; ".join(f"{k} {v}" for k, v in peers.items()), flush=True)
    photo = None
    if args.data == "photo-digits":
        from cgba import photo_digits

        with tempfile.TemporaryDirectory() as tmp:
            ds = photo_digits(Path(tmp))
        photo = photo_digits_model(ds, args.photo_epochs, device)
    else:
        ds = load_dataset("mnist5k")
    if args.n > ds.x_test.shape[0]:
        sys.exit(f"--n {args.n}: {args.data}'s test split has only {ds.x_test.shape[0]} images")
    x, y = ds.x_test[: args.n].to(device), ds.y_test[: args.n].to(device)
    s = Settings(
        eps=args.eps,
        pgd_steps=args.pgd_steps,
        pgd_alpha=args.pgd_alpha,
        square_queries=args.square_queries,
        square_p_init=args.square_p_init,
        square_rescale=args.square_rescale,
        batch_size=args.batch_size,
        input_shape=tuple(ds.input_shape),
        num_classes=ds.num_classes,
        seed=args.seed,
    )
    report: dict[str, Any] = {
        "benchmark": "evasion_peers",
        "provenance": provenance(),
        "peers": peers,
        "settings": {
            **vars(s),
            "n": args.n,
            "repeat": args.repeat,
            "seeds": args.seeds,
            "warmup_n": args.warmup_n,
            "quick": args.quick,
            "data": args.data,
        },
        "models": {},
        "rows": [],
        "targets": [],
    }
    for model_name in args.models:
        if photo is not None:
            model, info = photo
        else:
            path = checkpoint(model_name, args)
            model, meta = load_checkpoint(path, device=device)
            info = {"checkpoint": str(path), "recipe": meta.recipe.get("name"), "epochs": meta.recipe.get("epochs")}
            info["checkpoint_test_accuracy"] = meta.clean_accuracy
        model.eval().requires_grad_(False)  # what bastion's Victim does; every library shares this module
        victim = Victim(model, input_shape=tuple(ds.input_shape), batch_size=args.batch_size, device=device)
        clean = (predict(model, x, args.batch_size) == y).float().mean().item()
        info.update(clean_accuracy=clean, n=args.n)
        report["models"][model_name] = info
        model_rows, model_targets = [], []
        for attack in args.attacks:
            print(f"{model_name} / {attack} ...", flush=True)
            entries = bastion_entries(attack, victim, s)
            for peer in args.peers:
                try:
                    entries += peer_entries(peer, attack, model, s, args.optional)
                except Exception as e:  # a peer whose construction fails is reported, not fatal
                    traceback.print_exc(file=sys.stderr)
                    entries.append(Entry(peer, peer, None, status=f"error: {type(e).__name__}: {e}"))
            rows = []
            for entry in entries:
                row = {"model": model_name, "attack": attack, **run_entry(entry, model, x, y, args)}
                rows.append(row)
                shown = f"{row['robust_accuracy']:.1%} in {row['seconds']:.2f} s" if "seconds" in row else ""
                print(f"  {row['library']}: {row['status']} {shown}", flush=True)
            if attack in ("fgsm", "pgd"):
                passes = 1 if attack == "fgsm" else args.pgd_steps
                times = floor_seconds(model, x, y, passes, args.repeat)
                label = f"floor: {passes} bare forward+backward pass{'es' if passes > 1 else ''}"
                floor_row = {"model": model_name, "attack": attack, "key": "floor", "library": label}
                # once per seed, as the libraries' seconds are summed over the seeds
                rows.append({**floor_row, "status": "ok", "seconds": args.seeds * min(times), "seconds_all": times})
            base = next((r for r in rows if r["key"] == "bastion" and "seconds" in r), None)
            default = next((r for r in rows if r["key"] == "bastion-default" and "seconds" in r), None)
            for r in rows:
                if "seconds" in r:
                    r["ratio"] = r["seconds"] / base["seconds"] if base else None
                    if default:
                        r["ratio_vs_default"] = r["seconds"] / default["seconds"]
            targets = targets_for(model_name, attack, rows)
            model_rows += rows
            model_targets += targets
            report["rows"] += rows
            report["targets"] += targets
            write_json(args.out, report)  # partial results survive a kill
        print("\n" + table(model_name, info, model_rows, model_targets) + "\n", flush=True)
    measured = [t for t in report["targets"] if t["met"] is not None]
    report["met"] = bool(measured) and all(t["met"] for t in measured)
    report["missed"] = [f"{t['model']} {t['attack']}: {t['target']} ({t['detail']})" for t in measured if not t["met"]]
    path = write_json(args.out, report)
    print(f"targets met: {sum(t['met'] for t in measured)}/{len(measured)} measurable -> {path}")


if __name__ == "__main__":
    main()
