"""Ownership evidence on `mnist5k`: watermark, BlackMarks and dataset inference, per suspect model, over seeds.

Claims checked (the specs' CPU proxies, `small_cnn`, owner models on the first half of the 4,000
training images, the thief's data the second half):
- backdoor watermark (Adi et al., USENIX Security 2018): p < 1e-10 on the marked model and after
  2 epochs of FTAL; p > 0.01 on independent models (the paper: key accuracy about 100%, kept under
  FTLL and FTAL);
- BlackMarks (Chen, Rouhani, Koushanfar, arXiv 1904.00344), N bits: BER 0 on the marked model,
  about 0.5 on independent ones;
- dataset inference (Maini, Yaghini, Papernot, ICLR 2021; Blind Walk or, `--di-features mingd`, MinGD;
  m = 20): p < 0.01 for the source model and a distilled copy (soft labels of the thief's images),
  p > 0.05 for a model trained on the other half (the reference's CIFAR-10 table: source 1e-42,
  independent 0.675). Each row gives the deciding p-value (one Welch test on all tested points) and
  the reference's harmonic mean over subsets; the JSON keeps the regressor's scores.

Per seed, the table gives each suspect's statistic, p-value, BER and clean accuracy (1,000 test
images); the watermark's and BlackMarks' embedding cost is the clean owner's accuracy less the
marked model's. Suspects: the marked model; FTLL, FTAL, RTLL, RTAL (2 epochs, SGD lr 0.01, the
reference's fine-tuning, on the thief's 2,000 images); global magnitude pruning at 50% and 90% and
90% then 1 epoch of fine-tuning; independent models (first half, other seeds) and, for dataset
inference, the other-half model and the distilled copy.

    python benchmarks/ownership_mnist5k.py [--seeds 0 1 2] [--epochs 3] [--methods watermark blackmarks di]
    python benchmarks/ownership_mnist5k.py --methods di --di-features mingd --device cuda

MinGD costs about 5 s a point on one CPU thread (600 points a seed), 1 minute a seed on one GPU.

Writes benchmarks/results/ownership_mnist5k.json (`--out`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion._atomic import write_json
from bastion.core import Victim
from bastion.data import Dataset, load_dataset
from bastion.defenses.ownership import BlackMarks, DatasetInference, Watermark
from bastion.models import build_model
from bastion.train import Hooks, TrainConfig, accuracy, fit
from bastion.train.surgery import fine_tune, prune_global
from evasion_peers import provenance

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3, help="training epochs of every model (Adam, lr 3e-3, no augment)")
    p.add_argument("--methods", nargs="+", default=["watermark", "blackmarks", "di"])
    p.add_argument("--wm-n", type=int, default=50, help="watermark key images")
    p.add_argument("--wm-batch", type=int, default=4, help="key images per training batch of 64")
    p.add_argument("--bits", type=int, default=16, help="BlackMarks signature length")
    p.add_argument("--di-fit", type=int, default=100, help="dataset inference: regressor points per side")
    p.add_argument("--di-test", type=int, default=40, help="dataset inference: tested points per side")
    p.add_argument("--di-directions", type=int, default=10)
    p.add_argument("--di-scale", type=float, default=8.0, help="Blind Walk noise, times the reference's")
    p.add_argument("--di-steps", type=int, default=25, help="Blind Walk steps per direction")
    p.add_argument("--di-features", choices=["blind-walk", "mingd"], default="blind-walk")
    p.add_argument("--di-mingd-steps", type=int, default=None, help="MinGD steps per target (the reference's 500)")
    p.add_argument("--device", default="cpu", help="where models train and run (cuda for MinGD at full size)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE / "results" / "ownership_mnist5k.json")
    return p.parse_args()


DEVICE = torch.device("cpu")


def train(d: Dataset, x: Tensor, y: Tensor, seed: int, epochs: int, hooks: Hooks | None = None) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=28, mean=d.mean, std=d.std)
    model.to(DEVICE)
    fit(model, x, y, TrainConfig(epochs=epochs, lr=3e-3, augment="none", seed=seed), hooks=hooks)
    return model.eval()


def distil(d: Dataset, teacher: nn.Module, x: Tensor, seed: int, epochs: int) -> nn.Module:
    with torch.no_grad():
        soft = torch.softmax(teacher(x.to(DEVICE)), dim=1)

    def loss(model: nn.Module, xb: Tensor, idx: Tensor) -> Tensor:
        return F.kl_div(F.log_softmax(model(xb), dim=1), soft[idx], reduction="batchmean")

    return train(d, x, torch.arange(x.shape[0]), seed, epochs, Hooks(loss=loss))


def victim(model: nn.Module) -> Victim:
    return Victim(model, input_shape=(1, 28, 28), num_classes=10, batch_size=256 if DEVICE.type == "cpu" else 8192)


def derived(model: nn.Module, x: Tensor, y: Tensor, seed: int) -> dict[str, nn.Module]:
    """The robustness suite: the four fine-tunings on the thief's data and pruning."""
    out = {"marked": model}
    for mode in ("ftll", "ftal", "rtll", "rtal"):
        out[mode.upper()], _ = fine_tune(model, x, y, mode=mode, epochs=2, seed=seed)  # type: ignore[arg-type]
    for frac in (0.5, 0.9):
        out[f"prune {int(frac * 100)}%"], masks = prune_global(model, frac)
    pruned, masks = prune_global(model, 0.9)
    out["prune 90% + FT"], _ = fine_tune(pruned, x, y, mode="ftal", epochs=1, seed=seed, masks=masks)
    return out


def row(seed: int, method: str, suspect: str, res: Any) -> dict[str, Any]:
    keep = ("p_all_points", "p_subsets", "mean_private", "mean_public", "scores_private", "scores_public")
    extra = {k: res.extra[k] for k in keep if k in res.extra}
    return extra | {
        "seed": seed,
        "method": method,
        "suspect": suspect,
        "statistic": res.statistic,
        "p_value": res.p_value,
        "ber": res.ber,
        "claimed": res.claimed,
        "clean_accuracy": res.clean_accuracy,
        "queries": int(res.queries.sum()),
    }


def main() -> None:
    global DEVICE
    args = parse_args()
    torch.set_num_threads(args.threads)
    DEVICE = torch.device(args.device)
    d = load_dataset("mnist5k")
    xa, ya, xb, yb = d.x_train[:2000], d.y_train[:2000], d.x_train[2000:], d.y_train[2000:]
    xt, yt = d.x_test, d.y_test
    rows: list[dict[str, Any]] = []
    costs: list[dict[str, Any]] = []
    start = time.perf_counter()
    for seed in args.seeds:
        owner = train(d, xa, ya, 10 * seed, args.epochs)
        independent = [train(d, xa, ya, 10 * seed + i, args.epochs) for i in (1, 2, 3)]
        base = accuracy(owner, xt, yt)
        if "watermark" in args.methods:
            wm = Watermark(n=args.wm_n, wm_batch=args.wm_batch, seed=seed)
            key = wm.make_key((1, 28, 28), 10)
            marked = train(d, xa, ya, 10 * seed, args.epochs, Hooks(batch=wm.batch_edit(key)))
            costs.append({"seed": seed, "method": "watermark", "clean": base, "marked": accuracy(marked, xt, yt)})
            for name, m in derived(marked, xb, yb, seed).items():
                rows.append(row(seed, "watermark", name, wm.verify(victim(m), key, x_test=xt, y_test=yt)))
            for i, m in enumerate(independent):
                rows.append(
                    row(seed, "watermark", f"independent {i + 1}", wm.verify(victim(m), key, x_test=xt, y_test=yt))
                )
        if "blackmarks" in args.methods:
            bm = BlackMarks(bits=args.bits, seed=seed)
            other = train(d, xb, yb, 10 * seed + 4, args.epochs)  # the owner's reference unmarked model
            bits = bm.encode(victim(owner), xa, ya)
            bkey = bm.make_key(victim(owner), xa, ya, bits, references=[victim(other)])
            marked, _ = bm.embed(owner, xa, ya, bkey)
            costs.append({"seed": seed, "method": "blackmarks", "clean": base, "marked": accuracy(marked, xt, yt)})
            for name, m in derived(marked, xb, yb, seed).items():
                rows.append(row(seed, "blackmarks", name, bm.verify(victim(m), bkey, x_test=xt, y_test=yt)))
            for i, m in enumerate(independent):
                rows.append(
                    row(seed, "blackmarks", f"independent {i + 1}", bm.verify(victim(m), bkey, x_test=xt, y_test=yt))
                )
        if "di" in args.methods:
            mingd = args.di_features == "mingd"
            di = DatasetInference(
                features=args.di_features,
                m=20,
                directions=args.di_directions,
                scale=args.di_scale,
                max_steps=args.di_mingd_steps if mingd else args.di_steps,
                seed=seed,
            )
            f, t = args.di_fit, args.di_test
            state = di.fit(victim(owner), xa[:f], ya[:f], xt[:f], yt[:f])
            suspects = {
                "source": owner,
                "FTAL": fine_tune(owner, xb, yb, mode="ftal", epochs=2, seed=seed)[0],
                "distilled": distil(d, owner, xb, 10 * seed + 5, args.epochs),
                "other half": train(d, xb, yb, 10 * seed + 4, args.epochs),
                "independent 1": independent[0],
            }
            for name, m in suspects.items():
                res = di.verify(
                    victim(m), state, xa[f : f + t], ya[f : f + t], xt[f : f + t], yt[f : f + t], x_test=xt, y_test=yt
                )
                rows.append(row(seed, "dataset-inference", name, res))
        print(f"seed {seed} done, {time.perf_counter() - start:.0f} s", flush=True)
    head = ["method", "suspect", "seed", "statistic", "p-value", "BER", "claimed", "clean acc"]
    widths = [18, 16, 5, 11, 11, 7, 9, 11]
    print(
        "\n" + "".join(f"{h:<{w}}" if i < 2 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(head, widths, strict=True)))
    )
    for r in rows:
        ber = "-" if r["ber"] is None else f"{r['ber']:.3f}"
        print(
            f"{r['method']:<18}{r['suspect']:<16}{r['seed']:>5}{r['statistic']:>11.3g}{r['p_value']:>11.2g}{ber:>7}"
            f"{'yes' if r['claimed'] else 'no':>9}{100 * r['clean_accuracy']:>10.1f}%"
        )
    if any(r["method"] == "dataset-inference" for r in rows):
        print(f"\ndataset inference ({args.di_features}): p on all points / harmonic mean over subsets (ref)")
        for r in rows:
            if r["method"] == "dataset-inference":
                print(f"  {r['suspect']:<16}seed {r['seed']}: {r['p_all_points']:.2g} / {r['p_subsets']:.2g}")
    print("\nembedding cost (clean accuracy on 1,000 test images):")
    for c in costs:
        print(f"  {c['method']:<11} seed {c['seed']}: {100 * c['clean']:.1f}% -> {100 * c['marked']:.1f}%")
    write_json(
        args.out,
        {"provenance": provenance(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "costs": costs},
    )


if __name__ == "__main__":
    main()
