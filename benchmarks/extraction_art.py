"""Model extraction beside IBM ART 1.20.1: bastion's `knockoff` and ART's `KnockoffNets`, same victim, pool and budgets.

Claim checked: at every budget, strategy and answer type, bastion's copy is as faithful to the victim as
ART's (fidelity ratio >= 1, up to the seed-to-seed noise of the pool subset), in no more wall time. The
table (means over the seeds) is printed and written with the ratios bastion / ART, met or missed.

How it is measured:
- The victim: the audit's `small_cnn` / `mnist5k` fixture (tests/fixtures/small_cnn-mnist5k.safetensors,
  standard recipe, 98.4% test accuracy). The test images: the first `--n` (1,000: all) `mnist5k` test
  images, never queried. Fidelity = label agreement between surrogate and victim on them; accuracy =
  the surrogate's.
- The pool, the same for both: `bastion.data.digits.digits_pool((1, 28, 28), --pool-size, seed 0)`,
  scikit-learn's 8x8 digits upsampled at seeded sizes and places (another distribution than MNIST),
  with their digit labels (the adaptive strategy's classes).
- The surrogate: a fresh `small_cnn` (the victim's architecture), the same initial weights for both
  libraries (`torch.manual_seed(seed)` before building), trained `--epochs` (10) epochs, batch 64.
  bastion: Adam, one-cycle to lr 3e-3 (its defaults), the soft cross-entropy of the answers
  (probabilities, or one-hot labels). ART: `PyTorchClassifier` with `CrossEntropyLoss` and Adam at a
  constant lr 3e-3 (`nb_epochs`, `batch_size_fit` 64); for the probability rows `use_probability=True`
  and a victim classifier that ends in a softmax (ART passes on whatever the victim's `predict`
  returns; given the logits it trains on logits as targets and the copy fails: 10% fidelity).
  `PyTorchClassifier` hands probability targets to `CrossEntropyLoss` as they are (the soft
  cross-entropy, as bastion trains); ART's adaptive strategy queries one-hot labels whatever
  `use_probability` says.
- Seeds `--seeds` (0 1 2): each seed draws its own pool order (bastion's generator, ART's NumPy
  generator: different subsets of the same pool) and both copies start from the same initial weights;
  the table reports each library's mean over the seeds (at 500 queries the subset alone moves the
  fidelity by about 5 points: on identical subsets the two libraries' random copies agree within that).
- Strategies: `random` (B pool images without replacement: both) and `adaptive` (bastion: the paper's
  gradient bandit over the pool's classes with the standardised certainty + diversity + loss reward,
  an online SGD knockoff, images without replacement, then a fresh surrogate trained on the transfer
  set; ART: its bandit with step 1/N(action), images drawn with replacement, the online classifier
  trained one step per query on one-hot labels and then `nb_epochs` more on the transfer set).
- Budgets `--budgets` (500, 1,000, 2,000) queries; bastion's API counts them (an `Oracle` with the
  total budget; ART's queries are `nb_stolen`).
- Transfer: PGD-40 at L-inf 0.3 (no early stop) crafted on each surrogate against the first
  `--transfer-n` (200) test images the victim classifies correctly, shown to the victim: the same
  bastion code for both surrogates. Seconds: wall time of the extraction (queries and training; for
  bastion `result.attack_seconds`, which leaves out its measurements on the test images), one process,
  `--threads` (1) torch threads; machine-dependent.

    bash benchmarks/setup_peers.sh
    python benchmarks/extraction_art.py [--budgets 500 1000 2000] [--epochs 10] [--threads 1]
    # or one process per seed, then one table:
    python benchmarks/extraction_art.py --seeds 1 --out benchmarks/results/extraction_art-1.json
    python benchmarks/extraction_art.py --merge benchmarks/results/extraction_art-*.json

Writes benchmarks/results/extraction_art.json (`--out`).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bastion._atomic import write_json
from bastion.attacks.extraction import Knockoff
from bastion.core import Victim
from bastion.data import load_dataset
from bastion.data.digits import digits_pool
from bastion.models.checkpoint import load_checkpoint

HERE = Path(__file__).resolve().parent
CHECKPOINT = HERE.parent / "tests" / "fixtures" / "small_cnn-mnist5k.safetensors"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", type=int, nargs="+", default=[500, 1000, 2000])
    p.add_argument("--strategies", nargs="+", default=["random", "adaptive"])
    p.add_argument("--outputs", nargs="+", default=["probs", "label"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--n", type=int, default=1000, help="test images measured (the first N)")
    p.add_argument("--pool-size", type=int, default=4000)
    p.add_argument("--transfer-n", type=int, default=200)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE / "results" / "extraction_art.json")
    p.add_argument("--merge", type=Path, nargs="+", help="only merge these result files (runs of other seeds)")
    return p.parse_args()


def art_extract(
    victim_model: nn.Module, fresh: nn.Module, pool_x: np.ndarray, pool_y: np.ndarray, args: Any, **kw: Any
) -> nn.Module:
    from art.attacks.extraction import KnockoffNets
    from art.estimators.classification import PyTorchClassifier

    def wrap(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Any:
        return PyTorchClassifier(
            model=model,
            loss=nn.CrossEntropyLoss(),
            optimizer=optimizer,
            input_shape=(1, 28, 28),
            nb_classes=10,
            clip_values=(0.0, 1.0),
            device_type="cpu",
        )

    thief = wrap(fresh, torch.optim.Adam(fresh.parameters(), lr=3e-3))
    # ART's `use_probability` passes on what the victim classifier's `predict` returns: a probability API is
    # a victim that ends in a softmax (with the logits, ART would train on logits as if they were targets)
    api = nn.Sequential(victim_model, nn.Softmax(dim=1)) if kw.get("use_probability") else victim_model
    attack = KnockoffNets(wrap(api), batch_size_fit=64, batch_size_query=256, nb_epochs=args.epochs,
                          verbose=False, **kw)  # fmt: skip
    y = pool_y if kw["sampling_strategy"] == "adaptive" else None
    stolen = attack.extract(pool_x, y, thieved_classifier=thief)
    return stolen.model.eval()


def summarise(runs: dict[tuple[int, str, str], dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """One row per (budget, strategy, answers): each library's means over the seeds, and the ratios."""
    rows = []
    for (budget, strategy, output), got in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1] != "random")):
        row: dict[str, Any] = {"budget": budget, "strategy": strategy, "output": output, "runs": got}
        for lib in ("bastion", "art"):
            row[lib] = {k: _mean([r[k] for r in got[lib]]) for k in METRICS}
        b, a = row["bastion"], row["art"]
        row["ratios"] = {k: (b[k] / a[k] if a[k] else None) for k in ("accuracy", "fidelity", "seconds")}
        rows.append(row)
    return rows


def merge(files: list[Path], out: Path) -> None:
    """Merge result files written by runs of other seeds (same settings otherwise) into one table."""
    reports = [json.loads(f.read_text()) for f in files]
    runs: dict[tuple[int, str, str], dict[str, list[dict[str, Any]]]] = {}
    for rep in reports:
        for row in rep["rows"]:
            got = runs.setdefault((row["budget"], row["strategy"], row["output"]), {"bastion": [], "art": []})
            for lib in ("bastion", "art"):
                got[lib] += row["runs"][lib]
    seeds = sorted({r["seed"] for got in runs.values() for r in got["bastion"]})
    budgets = sorted({b for b, _, _ in runs})
    settings = {**reports[0]["settings"], "seeds": seeds, "budgets": budgets}
    report = {**reports[0], "settings": settings, "rows": summarise(runs)}
    report["merged_from"] = [str(f) for f in files]
    print(render(report))
    print("->", write_json(out, report))


def main() -> None:
    args = parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    torch.set_num_threads(args.threads)
    import art

    model, meta = load_checkpoint(CHECKPOINT)
    victim = Victim(model, input_shape=(1, 28, 28))
    data = load_dataset("mnist5k", seed=meta.split_seed)
    x, y = data.x_test[: args.n], data.y_test[: args.n]
    victim_pred = victim.predict(x)
    pool_x, pool_y = digits_pool((1, 28, 28), args.pool_size, seed=0)
    np_x, np_y = pool_x.numpy(), pool_y.numpy()
    meter = Knockoff(transfer_n=args.transfer_n, seed=0)  # the transfer measurement both get

    def measure(sur: nn.Module) -> dict[str, Any]:
        s = Victim(sur, input_shape=(1, 28, 28))
        pred = s.predict(x)
        transfer = meter._transfer(victim, s, x, y, victim_pred)
        return {
            "accuracy": float((pred == y).double().mean()),
            "fidelity": float((pred == victim_pred).double().mean()),
            "transfer_success_rate": None if transfer is None else transfer["success_rate"],
        }

    # warm-up (first-call costs of both libraries stay out of the table)
    Knockoff(budget=50, epochs=1, curve_points=1, transfer_n=0).run(victim, meta.build, pool_x, pool_y, x, y)
    art_extract(model, meta.build(), np_x, np_y, args, nb_stolen=50, sampling_strategy="random")
    # seeds outermost: each seed's whole table is printed before the next seed starts
    runs: dict[tuple[int, str, str], dict[str, list[dict[str, Any]]]] = {}
    for seed in args.seeds:
        for budget in args.budgets:
            for strategy in args.strategies:
                for output in args.outputs:
                    attack = Knockoff(budget=budget, policy=strategy, epochs=args.epochs, curve_points=1,
                                      transfer_n=0, seed=seed)  # fmt: skip
                    result = attack.run(victim, meta.build, pool_x, pool_y, x, y, output=output)  # type: ignore[arg-type]
                    b_seconds = result.attack_seconds  # queries and training, not its measurements
                    assert result.queries == budget and result.model is not None
                    torch.manual_seed(seed)
                    np.random.seed(seed)
                    fresh = meta.build()  # the initial weights bastion's copy starts from too
                    t0 = time.perf_counter()
                    stolen = art_extract(model, fresh, np_x, np_y, args, nb_stolen=budget, sampling_strategy=strategy,
                                         use_probability=output == "probs")  # fmt: skip
                    a_seconds = time.perf_counter() - t0
                    got = runs.setdefault((budget, strategy, output), {"bastion": [], "art": []})
                    got["bastion"].append({"seed": seed, "seconds": b_seconds, **measure(result.model)})
                    got["art"].append({"seed": seed, "seconds": a_seconds, **measure(stolen)})
                    print(f"seed {seed} " + _line(budget, strategy, output, got["bastion"][-1], got["art"][-1]),
                          flush=True)  # fmt: skip
    rows = summarise(runs)
    report = {
        "benchmark": "extraction_art",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "victim": {"checkpoint": CHECKPOINT.name, "test_accuracy": float((victim_pred == y).double().mean())},
        "art": art.__version__,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "rows": rows,
    }
    print("\n" + render(report))
    print("->", write_json(args.out, report))


METRICS = ("accuracy", "fidelity", "transfer_success_rate", "seconds")


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _line(budget: int, strategy: str, output: str, b: dict[str, Any], a: dict[str, Any]) -> str:
    return (
        f"{budget:>5} {strategy:<8} {output:<5} fidelity {b['fidelity']:.3f} / {a['fidelity']:.3f}"
        f"  acc {b['accuracy']:.3f} / {a['accuracy']:.3f}  s {b['seconds']:.1f} / {a['seconds']:.1f}"
    )


def render(report: dict[str, Any]) -> str:
    lines = [
        "| queries | strategy | answers | fidelity bastion | fidelity ART | ratio | accuracy bastion | accuracy ART "
        "| ratio | transfer bastion | transfer ART | seconds bastion | seconds ART | ratio |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        b, a, q = r["bastion"], r["art"], r["ratios"]

        def pct(v: float | None) -> str:
            return "-" if v is None else f"{v:.1%}"

        lines.append(
            f"| {r['budget']:,} | {r['strategy']} | {r['output']} | {pct(b['fidelity'])} | {pct(a['fidelity'])} | "
            f"{q['fidelity']:.2f} | {pct(b['accuracy'])} | {pct(a['accuracy'])} | {q['accuracy']:.2f} | "
            f"{pct(b['transfer_success_rate'])} | {pct(a['transfer_success_rate'])} | {b['seconds']:.1f} | "
            f"{a['seconds']:.1f} | {q['seconds']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
