"""Record the AutoAttack reference's per-image outcomes on a fixed model and images, for the parity test.

The reference is github fra31/auto-attack, version "standard" (APGD-CE, APGD-T, FAB-T, Square), from the
snapshot `bash benchmarks/setup_peers.sh` puts in benchmarks/_peers/auto-attack (its commit is read from
the snapshot's COMMIT file and written into the record; the shipped record was made at
a39220048b3c9f2cca9a4d3a54604793c68eca7e). It is run here, never imported by bastion or its tests.

What is recorded (tests/fixtures/autoattack-reference.json, written atomically):
- the model: tests/fixtures/mlp-digits-pgd-at.safetensors, an `mlp` with two hidden layers of 256
  units adversarially trained by bastion (`pgd-at`, L-inf 0.2) on scikit-learn's 8x8 `digits`
  (`--train-model` makes it again, settings in MODEL), and its SHA-256. On an undefended model every
  image's outcome is settled in a few iterations (APGD at 5 iterations leaves the same images robust
  as at 100), so the record could not tell a weakened attack from the real one; on this one APGD-CE
  at 25 iterations leaves 4 more images robust than at 100 (eps 0.2), and APGD-T fools 5 and 8
  images APGD-CE left robust;
- the images: the first `--n` (100) images of the checkpoint's test split (`digits`, split seed 0),
  by index;
- per L-inf radius (`--eps`, 0.2 and 0.25: robust accuracy well between 0 and the clean accuracy, so
  the comparison discriminates), per image, whether it is classified correctly clean and still robust
  after each stage, as the reference's own `robust_flags` say (read from its state file each time its
  log announces the end of a stage), and the per-stage robust accuracies of its log;
- the reference's call, `AutoAttack(model, norm='Linf', eps=eps, version='standard', seed=0,
  device='cpu').run_standard_evaluation(x, y, bs=n)`, the seed, the torch version and the machine.

The script also runs bastion's `autoattack` on the same images and prints both side by side with the
per-image disagreements (recorded under "bastion_at_record" for information; the test recomputes them).
tests/attacks/evasion/test_autoattack.py checks bastion against the record.

    bash benchmarks/setup_peers.sh                  # once: the reference snapshot
    python benchmarks/autoattack_record.py          # [--n 100] [--eps 0.2,0.25] [--out FILE] [--train-model]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from _peer_adapters import AUTOATTACK_DIR, peer_version
from bastion._atomic import sha256_file, write_json
from bastion.attacks.evasion.autoattack import AutoAttack, robust_after_stages
from bastion.core import ThreatModel, Victim
from bastion.data import load_dataset
from bastion.models import load_checkpoint
from evasion_peers import provenance

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "tests" / "fixtures"
STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")  # the standard version's order
# The model: an `mlp` (two hidden layers of 256 units) trained with PGD-AT at L-inf 0.2 (10 steps of
# 0.05). Its passes cost a fraction of `small_cnn`'s, so the ensemble runs in seconds on two CPU
# cores, and the test can; adversarial training makes the outcomes depend on the attack's strength.
MODEL: dict[str, Any] = {
    "model": "mlp",
    "data": "digits",
    "recipe": "pgd-at",
    "recipe_params": {"eps": 0.2, "steps": 10, "alpha": 0.05},
    "model_kwargs": {"hidden": [256, 256]},
    "epochs": 20,
    "augment": "none",
    "seed": 0,
}
_STAGE_LINE = re.compile(r"robust accuracy after ([A-Z0-9-]+): ([0-9.]+)%")
_CLEAN_LINE = re.compile(r"initial accuracy: ([0-9.]+)%")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=FIXTURES / "mlp-digits-pgd-at.safetensors", help="the model")
    p.add_argument("--train-model", action="store_true", help="train the model again (settings: MODEL) first")
    p.add_argument("--n", type=int, default=100, help="images: the first N of the checkpoint's test split")
    p.add_argument("--eps", default="0.2,0.25", help="comma-separated L-inf radii")
    p.add_argument("--seed", type=int, default=0, help="the reference's seed (and bastion's)")
    p.add_argument("--out", type=Path, default=FIXTURES / "autoattack-reference.json")
    a = p.parse_args()
    a.eps = [float(e) for e in a.eps.split(",") if e]
    if a.n < 1 or not a.eps or any(not 0 < e < 1 for e in a.eps):
        p.error("--n must be >= 1 and every --eps in (0, 1)")
    return a


def flags(bits: Tensor) -> str:
    """A (N,) bool tensor as a string of N characters: 1 = robust (correct), 0 = not."""
    return "".join("1" if b else "0" for b in bits.tolist())


class StageLog:
    """Stands in for the reference's `Logger` (its one method is `log(str)`): when a line announces the
    clean accuracy or the end of a stage, it reads the per-image `robust_flags` that the reference has
    just written to its state file (`EvaluationState`, saved on every change of the flags)."""

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        self.lines: list[str] = []
        self.flags: dict[str, list[bool]] = {}
        self.accuracy: dict[str, float] = {}

    def log(self, line: str) -> None:
        self.lines.append(line)
        if m := _CLEAN_LINE.search(line):
            self._take("clean", float(m.group(1)))
        elif m := _STAGE_LINE.search(line):
            self._take(m.group(1).lower(), float(m.group(2)))

    def _take(self, name: str, percent: float) -> None:
        state = json.loads(self.state_path.read_text())
        self.flags[name] = [bool(b) for b in state["_robust_flags"]]
        self.accuracy[name] = percent / 100


def run_reference(model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int) -> dict[str, Any]:
    """The reference's standard evaluation of (x, y) at L-inf `eps`: per-stage flags and accuracies, its log."""
    if str(AUTOATTACK_DIR) not in sys.path:
        sys.path.insert(0, str(AUTOATTACK_DIR))
    from autoattack import AutoAttack as ReferenceAutoAttack

    with tempfile.TemporaryDirectory() as tmp:
        log = StageLog(Path(tmp) / "state.json")
        with contextlib.redirect_stdout(io.StringIO()):  # it announces its version on stdout
            aa = ReferenceAutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed, device="cpu")
        aa.logger = log  # type: ignore[assignment]  (the ensemble logs through it; the stages have their own)
        start = time.perf_counter()
        x_adv = aa.run_standard_evaluation(x, y, bs=x.shape[0], state_path=log.state_path)
        seconds = time.perf_counter() - start
    for before, stage in zip(("clean", *STAGES), STAGES, strict=False):
        # the reference stops once no image is robust: the stages it skipped leave every flag down
        if stage not in log.flags and before in log.flags and not any(log.flags[before]):
            log.flags[stage], log.accuracy[stage] = log.flags[before], 0.0
    missing = [s for s in ("clean", *STAGES) if s not in log.flags]
    if missing:
        raise SystemExit(f"the reference's log announced no {', '.join(missing)}; its log:\n" + "\n".join(log.lines))
    with torch.no_grad():
        final = model(x_adv).argmax(1) == y
    if final.tolist() != log.flags[STAGES[-1]]:  # the flags read must be those its x_adv shows
        raise SystemExit("the reference's final robust flags differ from its x_adv's predictions")
    for name, bits in log.flags.items():
        if abs(sum(bits) / len(bits) - log.accuracy[name]) > 0.5 / len(bits):
            raise SystemExit(f"{name}: flags read {sum(bits)}/{len(bits)}, the log says {log.accuracy[name]:.2%}")
    linf = float((x_adv - x).abs().max())
    if linf > eps + 1e-6:
        raise SystemExit(f"the reference's x_adv left the ball: {linf} > {eps}")
    lines = [line for line in log.lines if not line.startswith("Created state in")]  # a temporary path
    return {"flags": log.flags, "log": lines, "seconds": round(seconds, 2)}


def run_bastion(model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int) -> dict[str, list[bool]]:
    """bastion's `autoattack` on the same images: per image, correct clean and robust after each stage."""
    victim = Victim(model, input_shape=tuple(x.shape[1:]), device="cpu")
    result = AutoAttack(threat=ThreatModel(eps=eps), seed=seed).run(victim, x, y)
    return {name: bits.tolist() for name, bits in robust_after_stages(result).items()}


def train_model(path: Path) -> None:
    import bastion.defenses  # noqa: F401  (registers pgd-at)
    from bastion.train import train_checkpoint

    print(f"training {MODEL} -> {path}", flush=True)
    train_checkpoint(out=path, device="cpu", **MODEL)  # type: ignore[arg-type]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    reference = peer_version("reference")
    if reference.startswith("not installed"):
        raise SystemExit(f"the AutoAttack reference is {reference}")
    commit = (AUTOATTACK_DIR / "COMMIT").read_text().strip()
    if args.train_model:
        train_model(args.checkpoint)
    model, meta = load_checkpoint(args.checkpoint, device="cpu")
    model.eval().requires_grad_(False)
    ds = load_dataset(meta.dataset, seed=meta.split_seed)
    if args.n > ds.x_test.shape[0]:
        raise SystemExit(f"--n {args.n}: {meta.dataset}'s test split has {ds.x_test.shape[0]} images")
    indices = list(range(args.n))
    x, y = ds.x_test[indices], ds.y_test[indices]
    radii, summary = [], []
    for eps in args.eps:
        ref = run_reference(model, x, y, eps, args.seed)
        ours = run_bastion(model, x, y, eps, args.seed)
        counts = {s: sum(ref["flags"][s]) for s in ("clean", *STAGES)}
        mine = {s: sum(ours[s]) for s in ("clean", *STAGES)}
        differ = {s: sum(a != b for a, b in zip(ref["flags"][s], ours[s], strict=True)) for s in ("clean", *STAGES)}
        radii.append(
            {
                "eps": eps,
                "robust": {s: flags(torch.tensor(ref["flags"][s])) for s in ("clean", *STAGES)},
                "robust_accuracy": {s: counts[s] / args.n for s in counts},
                "seconds": ref["seconds"],
                "log": ref["log"],
                "bastion_at_record": {"robust_accuracy": {s: mine[s] / args.n for s in mine}, "differ": differ},
            }
        )
        summary.append((eps, counts, mine, differ))
        print(f"eps {eps}: reference {ref['seconds']:.1f} s", flush=True)
    record = {
        "what": "per image, correct clean and still robust after each stage of the AutoAttack reference "
        "(standard version, L-inf); 'robust' strings hold one character per image, 1 = robust",
        "reference": {
            "repository": "https://github.com/fra31/auto-attack",
            "commit": commit,
            "version": "standard",
            "call": "AutoAttack(model, norm='Linf', eps=eps, version='standard', seed=seed, device='cpu')"
            ".run_standard_evaluation(x, y, bs=n)",
        },
        "model": {
            "file": args.checkpoint.name,
            "sha256": sha256_file(args.checkpoint),
            "architecture": meta.architecture,
            "arch_kwargs": meta.arch_kwargs,
            "clean_accuracy": meta.clean_accuracy,
        },
        "data": {"dataset": meta.dataset, "split": "test", "split_seed": meta.split_seed, "indices": indices},
        "norm": "linf",
        "stages": list(STAGES),
        "seed": args.seed,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "made_by": "benchmarks/autoattack_record.py",
        "provenance": provenance(),
        "radii": radii,
    }
    write_json(args.out, record)
    print(f"\n| eps | stage | reference | bastion | images that differ (of {args.n}) |\n|---|---|---:|---:|---:|")
    for eps, counts, mine, differ in summary:
        for s in ("clean", *STAGES):
            print(f"| {eps} | {s} | {counts[s] / args.n:.2%} | {mine[s] / args.n:.2%} | {differ[s]} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
