"""Black-box benchmark: HopSkipJump beside ART and Foolbox, and CGBA, CGBA-H, Square and SimBA beside it.

The same model and images for every library, in one process: `small_cnn` on `mnist5k` (the `standard`
checkpoint `evasion_peers.py` caches, trained if missing), the first N correctly classified test images,
untargeted, L2.

- HopSkipJump, median L2 after 250, 500 and 1,000 queries per image, and the seconds to spend 1,000:
  bastion `hsja` (the whole batch at once, eps 100 so that the projection cuts nothing); ART
  `HopSkipJump` (one image at a time, as ART runs); Foolbox `HopSkipJumpAttack` on the whole batch and
  on one image at a time. The peers count no queries: a wrapper around the model counts every row it
  answers, per image (batched Foolbox: row i is image i), records each adversarial row's L2 distance,
  and stops the peer (an exception) once its images have spent the largest budget. The distance of an
  image at budget b is the smallest L2 of an adversarial input queried within its first b queries; for
  bastion the same figure comes from its query trace (`extra["dist_at_budget"]`), which records every
  adversarial input the attack pays for, probes included.
- CGBA and CGBA-H (bastion, `n_queries` = the largest budget), median L2 at the same budgets, as ratios
  to bastion's HSJA: with their defaults (the subspace set by the image size: f = 2 on 28 x 28) and with
  the reference's f = 4; skipped with a message when they are not registered.
- Square and SimBA (bastion, score-based, L2 eps `--score-eps`), success rate against queries from
  `extra["query_curve"]`, beside the share of images HSJA and CGBA bring within that eps.

Targets: HSJA at 1,000 queries reaches a median L2 no larger than the best peer's, in at most
a quarter of ART's time; CGBA and CGBA-H with their defaults reach a lower median L2 than bastion's
HSJA at every budget (the CGBA paper's claim, arXiv 2308.03163). Figures are machine-dependent and
timings noisy on a shared machine: read the ratios measured in the same run.
`torch.set_num_threads(--threads)` (default 1) for everyone.

    python benchmarks/blackbox_peers.py [--n 100] [--budgets 250,500,1000] [--score-eps 2.0]
    python benchmarks/blackbox_peers.py --quick      # smoke: 8 images, budgets 50,100,250
    python benchmarks/blackbox_peers.py --n 50 --peers "" --others cgba,cgba-h   # CGBA vs HSJA only
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import bastion.attacks.evasion  # noqa: F401  (registers the attacks)
from _peer_adapters import peer_status
from bastion._atomic import write_json
from bastion.core import ATTACKS, ThreatModel, UnknownNameError, Victim
from bastion.core.params import parse_params
from bastion.data import load_dataset
from bastion.models import load_checkpoint
from evasion_peers import checkpoint, provenance, seed_all

HERE = Path(__file__).resolve().parent
TIME_RATIO = 0.25  # bastion HSJA seconds / ART seconds, at most
BIG_EPS = 100.0


class BudgetReached(Exception):
    """Raised by `Recorder` to stop a peer once its images have spent the largest budget."""


class Recorder(nn.Module):
    """The model behind a query counter: every answered row costs its image one query; adversarial rows
    (label != y) are recorded with their query number and L2 distance to the clean image.

    `current = i`: every row belongs to image i (a peer run on one image at a time); `current = None`:
    a call holds one row per image, in order (a peer run on the whole batch)."""

    def __init__(self, model: nn.Module, x0: Tensor, y: Tensor, stop_at: int) -> None:
        super().__init__()
        self.model, self.x0, self.y, self.stop_at = model, x0, y, stop_at
        self.q = torch.zeros(x0.shape[0], dtype=torch.long)
        self.events: list[tuple[Tensor, Tensor, Tensor]] = []  # (image, query number, L2) of adversarial rows
        self.current: int | None = None

    def forward(self, x: Tensor) -> Tensor:
        x = x.float()  # ART's HopSkipJump sends float64 arrays
        with torch.no_grad():
            if self.current is not None:
                i = self.current
                if int(self.q[i]) >= self.stop_at:
                    raise BudgetReached
                logits = self.model(x)
                qs = self.q[i] + torch.arange(1, x.shape[0] + 1)
                self.q[i] += x.shape[0]
                img = torch.full((x.shape[0],), i, dtype=torch.long)
                ref, lab = self.x0[i : i + 1], self.y[i].expand(x.shape[0])
            else:
                if x.shape[0] != self.x0.shape[0]:
                    raise RuntimeError(f"batched peer sent {x.shape[0]} rows for {self.x0.shape[0]} images")
                if bool((self.q >= self.stop_at).all()):
                    raise BudgetReached
                logits = self.model(x)
                self.q += 1
                qs, img, ref, lab = self.q.clone(), torch.arange(x.shape[0]), self.x0, self.y
            adv = logits.argmax(1).cpu() != lab.cpu()
            if bool(adv.any()):
                dist = (x.detach().cpu() - ref.cpu()).flatten(1).norm(dim=1)
                self.events.append((img[adv], qs[adv], dist[adv]))
        return logits

    def dist_at(self, budgets: list[int]) -> Tensor:
        """(N, B): per image, the smallest L2 of an adversarial row within its first b queries (inf: none)."""
        out = torch.full((self.x0.shape[0], len(budgets)), math.inf)
        if not self.events:
            return out
        img, qs, dist = (torch.cat(t) for t in zip(*self.events, strict=True))
        for j, b in enumerate(budgets):
            m = qs <= b
            out[:, j] = out[:, j].scatter_reduce(0, img[m], dist[m], "amin")
        return out


def median(v: Tensor) -> float:
    """Median of (N,) with inf allowed (the mean of the two middle values for even N, as the trace does)."""
    s = v.double().sort().values
    n = s.numel()
    return float(s[n // 2]) if n % 2 else float((s[n // 2 - 1] + s[n // 2]) / 2)


def trace_dists(extra: dict[str, Any], budgets: list[int]) -> Tensor:
    """(N, B) from a bastion result's `dist_at_budget` (null: inf) at the requested budgets."""
    have = extra["query_curve"]["budgets"]
    rows = torch.tensor([[math.inf if v is None else v for v in row] for row in extra["dist_at_budget"]])
    return torch.stack([rows[:, have.index(b)] for b in budgets], dim=1)


# ---- the runs ------------------------------------------------------------------------------------


def run_bastion(name: str, victim: Victim, x: Tensor, y: Tensor, args: argparse.Namespace, **kw: Any) -> dict[str, Any]:
    try:
        cls = ATTACKS.get(name)
    except UnknownNameError:
        return {"status": f"skipped: {name!r} is not registered (yet)"}
    eps = BIG_EPS if cls.access == "label" else args.score_eps
    threat = ThreatModel(norm="l2", eps=eps)
    attack = cls(threat=threat, seed=args.seed, n_queries=max(args.budgets), **kw)
    start = time.perf_counter()
    r = attack.run(victim, x, y)
    seconds = time.perf_counter() - start
    row: dict[str, Any] = {"status": "ok", "seconds": seconds, "max_queries": int(r.queries.max())}
    curve = r.extra["query_curve"]
    if "dist_at_budget" in r.extra:
        row["dist"] = trace_dists(r.extra, args.budgets)
    row["success_rate"] = [curve["success_rate"][curve["budgets"].index(b)] for b in args.budgets]
    if r.warnings:
        row["warnings"] = list(r.warnings)
    return row


def run_peer(
    label: str, attack: Any, rec: Recorder, x: Tensor, y: Tensor, one_at_a_time: bool, args: argparse.Namespace
) -> dict[str, Any]:
    """Run a peer until its images spent the largest budget; its adversarial finds come from `rec`."""
    seed_all(args.seed)
    start = time.perf_counter()
    try:
        if one_at_a_time:
            for i in range(x.shape[0]):
                rec.current = i
                with contextlib.suppress(BudgetReached):
                    attack(x[i : i + 1], y[i : i + 1])
        else:
            rec.current = None
            with contextlib.suppress(BudgetReached):
                attack(x, y)
    except Exception as e:  # a peer that breaks is reported, the benchmark goes on
        traceback.print_exc(file=sys.stderr)
        return {"status": f"error: {type(e).__name__}: {e}"}
    seconds = time.perf_counter() - start
    return {"status": "ok", "seconds": seconds, "dist": rec.dist_at(args.budgets), "max_queries": int(rec.q.max())}


def art_hsja(rec: Recorder, args: argparse.Namespace) -> Any:
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(
        model=rec, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10, clip_values=(0.0, 1.0)
    )
    atk = HopSkipJump(clf, targeted=False, norm=2, max_iter=50, max_eval=10_000, init_eval=100, init_size=100)
    atk.set_params(verbose=False)

    def run(x: Tensor, y: Tensor) -> None:
        atk.generate(x=x.numpy(), y=y.numpy())

    return run


def foolbox_hsja(rec: Recorder) -> Any:
    import foolbox as fb

    fmodel = fb.PyTorchModel(rec, bounds=(0.0, 1.0), device="cpu")
    atk = fb.attacks.HopSkipJumpAttack(steps=64, constraint="l2")

    def run(x: Tensor, y: Tensor) -> None:
        atk.run(fmodel, x, y)

    return run


@torch.inference_mode()
def floor_seconds(model: nn.Module, x: Tensor, queries: int, sample: int = 5000, batch: int = 500) -> float:
    """Seconds of the N x `queries` bare forward passes an attack pays, in batches of `batch`, extrapolated
    from `sample` images (what no label-only attack spending every query can go below)."""
    rows = x.repeat((batch + x.shape[0] - 1) // x.shape[0], 1, 1, 1)[:batch]
    model(rows)  # warm-up
    start = time.perf_counter()
    for _ in range(sample // batch):
        model(rows)
    return (time.perf_counter() - start) / (sample // batch * batch) * x.shape[0] * queries


# ---- main ----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="correctly classified test images (100; --quick 8)")
    p.add_argument("--budgets", default=None, help="comma-separated query budgets (250,500,1000)")
    p.add_argument("--score-eps", type=float, default=2.0, help="L2 eps of Square and SimBA")
    p.add_argument("--peers", default="art,foolbox,foolbox-single", help="art, foolbox, foolbox-single")
    p.add_argument(
        "--others",
        default="cgba,cgba-h,cgba:dim_reduction=4,cgba-h:dim_reduction=4,square,simba",
        help="bastion attacks beside HSJA, each NAME or NAME:key=value+key=value",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: 8 images, budgets 50,100,250")
    p.add_argument("--out", type=Path, default=None, help="JSON (default benchmarks/results/blackbox_peers.json)")
    a = p.parse_args()
    a.n = a.n or (8 if a.quick else 100)
    a.budgets = sorted(int(b) for b in (a.budgets or ("50,100,250" if a.quick else "250,500,1000")).split(","))
    a.peers = [v for v in a.peers.split(",") if v]
    a.others = [v for v in a.others.split(",") if v]
    a.out = a.out or HERE / "results" / ("blackbox_peers_quick.json" if a.quick else "blackbox_peers.json")
    # what `evasion_peers.checkpoint` reads
    a.device, a.ckpt_dir, a.retrain, a.pgd_at_epochs = "cpu", HERE / "_peers" / "checkpoints", False, None
    return a


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    peers = peer_status()
    model, _ = load_checkpoint(checkpoint("standard", args))
    model.eval().requires_grad_(False)
    victim = Victim(model, input_shape=(1, 28, 28))
    ds = load_dataset("mnist5k")
    correct = victim.predict(ds.x_test) == ds.y_test
    x, y = ds.x_test[correct][: args.n], ds.y_test[correct][: args.n]
    b = args.budgets
    print(f"{x.shape[0]} images, budgets {b}, threads {args.threads}; peers: {peers}", flush=True)
    report: dict[str, Any] = {
        "benchmark": "blackbox_peers",
        "provenance": provenance(),
        "peers": peers,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "ckpt_dir")} | {"n": int(x.shape[0])},
        "rows": {},
    }
    rows: dict[str, dict[str, Any]] = {}

    def done(key: str, row: dict[str, Any]) -> None:
        rows[key] = row
        shown = dict(row)
        if "dist" in row:
            meds = [median(row["dist"][:, j]) for j in range(len(b))]
            shown["median_l2"] = [round(m, 4) if math.isfinite(m) else None for m in meds]
            shown["success_at_eps"] = [
                float((row["dist"][:, j] <= args.score_eps).float().mean()) for j in range(len(b))
            ]
            del shown["dist"]
        report["rows"][key] = shown
        print(f"  {key}: " + ", ".join(f"{k}={v}" for k, v in shown.items() if k != "warnings"), flush=True)
        write_json(args.out, report)  # partial results survive a kill

    print("bastion hsja ...", flush=True)
    done("bastion hsja (batch)", run_bastion("hsja", victim, x, y, args))
    makers = {
        "art": ("ART HopSkipJump (one image at a time)", lambda r: art_hsja(r, args), True),
        "foolbox": ("Foolbox HopSkipJump (batch)", foolbox_hsja, False),
        "foolbox-single": ("Foolbox HopSkipJump (one image at a time)", foolbox_hsja, True),
    }
    for peer in args.peers:
        label, make, single = makers[peer]
        lib = peer.split("-")[0]
        if peers.get(lib, "not installed").startswith("not installed"):
            done(label, {"status": peers[lib]})
            continue
        print(f"{label} ...", flush=True)
        rec = Recorder(model, x, y, stop_at=max(b)).eval()
        done(label, run_peer(label, make(rec), rec, x, y, single, args))
    for spec in args.others:  # NAME or NAME:key=value+key=value
        name, _, settings = spec.partition(":")
        kw = parse_params(ATTACKS.get(name), settings.split("+")) if settings else {}
        label = f"bastion {name}" + (f" ({settings})" if settings else "")
        print(f"{label} ...", flush=True)
        done(label, run_bastion(name, victim, x, y, args, **kw))
    report["floor_seconds"] = floor_seconds(model, x, max(b))
    print(f"floor: {report['floor_seconds']:.1f} s of bare forward passes for {x.shape[0]} x {max(b)} queries")

    table = render(rows, args, report["floor_seconds"])
    report["table"] = table
    report["targets"] = targets(rows, args)
    path = write_json(args.out, report)
    print("\n" + table + "\n")
    for t in report["targets"]:
        print(f"{'MET' if t['met'] else 'MISSED' if t['met'] is False else 'n/a'}: {t['target']} ({t['detail']})")
    print(f"-> {path}")


def render(rows: dict[str, dict[str, Any]], args: argparse.Namespace, floor: float) -> str:
    b = args.budgets
    base = rows.get("bastion hsja (batch)", {})
    head = " | ".join(f"median L2 @{q}" for q in b)
    lines = [
        f"| method | {head} | seconds | HSJA bastion / this: L2 @{b[-1]}, seconds | success @ L2 {args.score_eps} |",
        "|---|" + "---:|" * (len(b) + 3),
    ]
    for key, row in rows.items():
        if row.get("status") != "ok":
            lines.append(f"| {key} | {row.get('status', '')[:70]} |" + " |" * (len(b) + 2))
            continue
        if "dist" in row:
            meds = [median(row["dist"][:, j]) for j in range(len(b))]
            cells = " | ".join(f"{m:.3f}" for m in meds)
            succ = [float((row["dist"][:, j] <= args.score_eps).float().mean()) for j in range(len(b))]
        else:
            cells = " | ".join("-" for _ in b)
            succ = row["success_rate"]
        ratio = "-"
        if "dist" in row and "dist" in base:
            ours, theirs = median(base["dist"][:, -1]), median(row["dist"][:, -1])
            ratio = f"{ours / theirs:.2f}, {base['seconds'] / row['seconds']:.2f}"
        sr = " / ".join(f"{s:.0%}" for s in succ)
        lines.append(f"| {key} | {cells} | {row['seconds']:.1f} | {ratio} | {sr} |")
    if "seconds" in base:
        cells = " | ".join("-" for _ in b)
        ratio = base["seconds"] / floor
        lines.append(f"| floor: bare forward passes, N x {b[-1]} | {cells} | {floor:.1f} | -, {ratio:.2f} | - |")
    return "\n".join(lines)


def targets(rows: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    base = rows.get("bastion hsja (batch)", {})
    return peer_targets(rows, base, args) + cgba_targets(rows, base, args)


def cgba_targets(
    rows: dict[str, dict[str, Any]], base: dict[str, Any], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """CGBA and CGBA-H with their defaults below bastion's HSJA in median L2 at every budget."""
    out: list[dict[str, Any]] = []
    for name in ("cgba", "cgba-h"):
        row = rows.get(f"bastion {name}", {})
        target = f"{name} (defaults) median L2 below HSJA's at {', '.join(map(str, args.budgets))} queries"
        if "dist" not in base or "dist" not in row:
            out.append({"target": target, "met": None, "detail": "n/a: missing results"})
            continue
        ours = [median(row["dist"][:, j]) for j in range(len(args.budgets))]
        hsja = [median(base["dist"][:, j]) for j in range(len(args.budgets))]
        detail = ", ".join(f"@{b}: {o:.3f} vs {h:.3f}" for b, o, h in zip(args.budgets, ours, hsja, strict=True))
        out.append({"target": target, "met": all(o < h for o, h in zip(ours, hsja, strict=True)), "detail": detail})
    return out


def peer_targets(
    rows: dict[str, dict[str, Any]], base: dict[str, Any], args: argparse.Namespace
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    peers = {k: r for k, r in rows.items() if ("ART" in k or "Foolbox" in k) and r.get("status") == "ok"}
    if "dist" not in base or not peers:
        return [{"target": "HSJA median L2 and time vs peers", "met": None, "detail": "n/a: missing results"}]
    q = args.budgets[-1]
    ours = median(base["dist"][:, -1])
    best_key = min(peers, key=lambda k: median(peers[k]["dist"][:, -1]))
    best = median(peers[best_key]["dist"][:, -1])
    out.append(
        {
            "target": f"HSJA median L2 @{q} no larger than the best peer's",
            "met": ours <= best,
            "detail": f"bastion {ours:.3f} vs {best_key} {best:.3f}",
        }
    )
    art = next((r for k, r in peers.items() if "ART" in k), None)
    if art is None:
        out.append({"target": "at most a quarter of ART's time", "met": None, "detail": "n/a: no ART result"})
    else:
        ratio = base["seconds"] / art["seconds"]
        out.append(
            {
                "target": f"at most {TIME_RATIO:.0%} of ART's time",
                "met": ratio <= TIME_RATIO,
                "detail": f"bastion {base['seconds']:.1f} s vs ART {art['seconds']:.1f} s: {ratio:.2f}",
            }
        )
    return out


if __name__ == "__main__":
    np.random.seed(0)
    main()
