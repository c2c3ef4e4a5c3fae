"""CGBA and CGBA-H (arXiv 2308.03163) beside HSJA: median L2 against queries, label-only, equal budgets.

A CPU check of the paper's claim (lower median L2 than HSJA at equal budgets), untargeted (or `--targeted`,
target = label + 1), L2 with eps 100 so that the projection cuts nothing and each attack's query trace
gives the median distance reached after each budget. Every attack runs once with `n_queries` = the
largest budget, on the first `--n` correctly classified test images of:

- `mnist5k` (default): `small_cnn`, `standard` recipe (the checkpoint `evasion_peers.py` caches is reused
  when present, else trained).
- `digits`: the 8x8 digits, a freshly trained `small_cnn`.
- `photo-digits`: 32 x 32 colour inputs made here, since no download is possible: each `mnist5k` digit,
  padded to 32 x 32, in a random colour (light on dark crops, dark on light ones) over a random crop of
  scikit-learn's two sample photographs (`load_sample_images`, shipped with the package) at quarter size.
  They are written as a CIFAR-10 python archive (`cifar-10-python.tar.gz`: five training batches, a
  test batch, a meta file), read back by `load_cifar` (checked against the archive's own SHA-256), and a
  `resnet20` is trained on them for `--epochs` (SGD, one-cycle, no augmentation).

`--dim-reduction default,4` runs CGBA and CGBA-H once per value of f (`default`: the attacks' own rule,
which depends on the image size). Prints a markdown table of median L2 at `--budgets` and writes
benchmarks/results/cgba_<data>[_targeted].json.

    python benchmarks/cgba.py [--data mnist5k|digits|photo-digits] [--n 50] [--budgets 250,500,1000]
                              [--dim-reduction default,4] [--attacks hsja,cgba,cgba-h] [--targeted]
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import platform
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from bastion._atomic import sha256_file, write_json
from bastion.attacks.evasion import CGBA, CGBAH, HSJA
from bastion.core import ThreatModel, Victim
from bastion.core.random import make_generator, seed_everything
from bastion.data import Dataset, load_cifar, load_dataset
from bastion.models import build_model, load_checkpoint
from bastion.train import accuracy, default_config, fit, train_checkpoint

HERE = Path(__file__).resolve().parent
CACHED = HERE / "_peers" / "checkpoints" / "small_cnn-mnist5k-standard-e12-s0.safetensors"
CLASSES = [str(d).encode() for d in range(10)]


# ---- photo-digits: 32 x 32 colour images in the CIFAR-10 format ---------------------------------


def _compose(x: Tensor, photos: list[Tensor], gen: torch.Generator) -> np.ndarray:
    """Digits (N, 1, 28, 28) in [0, 1] over photo crops: uint8 rows (N, 3072), R, G, B planes in turn."""
    n = x.shape[0]
    alpha = F.pad(x, (2, 2, 2, 2))  # (N, 1, 32, 32): the digit's ink is its opacity
    which = torch.randint(len(photos), (n,), generator=gen)
    back = torch.empty(n, 3, 32, 32)
    for i in range(n):
        p = photos[int(which[i])]
        top = int(torch.randint(p.shape[1] - 31, (1,), generator=gen))
        left = int(torch.randint(p.shape[2] - 31, (1,), generator=gen))
        back[i] = p[:, top : top + 32, left : left + 32]
    shade = torch.rand(n, 3, 1, 1, generator=gen) * 0.4
    light = (back.mean((1, 2, 3)) < 0.5).view(-1, 1, 1, 1)  # light ink on a dark crop, dark ink on a light one
    ink = torch.where(light, 1 - shade, shade)
    img = (1 - alpha) * back + alpha * ink
    return img.mul(255).round().to(torch.uint8).flatten(1).numpy()


def photo_digits(folder: Path, seed: int = 0) -> Dataset:
    """Write the photo-digits archive in the CIFAR-10 python format to `folder` and load it with `load_cifar`."""
    from sklearn.datasets import load_sample_images

    gen = make_generator(seed)
    # quarter size (106 x 160): a 32-pixel crop holds part of a scene rather than a flat patch
    photos = [F.avg_pool2d(torch.tensor(p).permute(2, 0, 1)[None] / 255.0, 4)[0] for p in load_sample_images().images]
    mnist = load_dataset("mnist5k")
    train, test = _compose(mnist.x_train, photos, gen), _compose(mnist.x_test, photos, gen)
    members: dict[str, Any] = {"batches.meta": {b"label_names": CLASSES, b"num_cases_per_batch": len(train) // 5}}
    for k, rows in enumerate(np.array_split(np.arange(len(train)), 5), start=1):
        members[f"data_batch_{k}"] = {b"data": train[rows], b"labels": mnist.y_train[rows].tolist()}
    members["test_batch"] = {b"data": test, b"labels": mnist.y_test.tolist()}
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, content in members.items():
            blob = pickle.dumps(content, protocol=4)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return load_cifar("cifar10", archive, sha256=sha256_file(archive))


def _victim(args: argparse.Namespace, tmp: Path) -> tuple[Victim, Dataset]:
    if args.data == "photo-digits":
        ds = photo_digits(tmp)
        seed_everything(0)
        model = build_model("resnet20", num_classes=10, in_channels=3, image_size=32, mean=ds.mean, std=ds.std)
        start = time.perf_counter()
        # a brief run: AdamW at 3e-3 (the digits' settings) converges in fewer steps than the CIFAR SGD recipe
        cfg = default_config((3, 32, 32), epochs=args.epochs, optimizer="adam", lr=3e-3, batch_size=64, augment="none")
        fit(model, ds.x_train, ds.y_train, cfg)
        model.eval().requires_grad_(False)
        acc = accuracy(model, ds.x_test, ds.y_test)
        print(f"resnet20 on photo-digits: {args.epochs} epochs in {time.perf_counter() - start:.0f} s, test {acc:.3f}")
        return Victim(model, input_shape=(3, 32, 32)), ds
    ds = load_dataset(args.data)
    path = CACHED if args.data == "mnist5k" and CACHED.exists() else tmp / f"small_cnn-{args.data}.safetensors"
    if not path.exists():
        train_checkpoint(model="small_cnn", data=args.data, out=path, device="cpu")
    model, meta = load_checkpoint(path)
    return Victim(model, input_shape=meta.input_shape), ds


# ---- the runs -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist5k", choices=["mnist5k", "digits", "photo-digits"])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--budgets", default="250,500,1000", help="comma-separated query budgets")
    parser.add_argument("--targeted", action="store_true")
    parser.add_argument("--attacks", default="hsja,cgba,cgba-h")
    parser.add_argument("--dim-reduction", default="default,4", help="CGBA's f, comma-separated (default: by size)")
    parser.add_argument("--epochs", type=int, default=4, help="photo-digits: resnet20 training epochs")
    args = parser.parse_args()
    budgets = sorted(int(b) for b in args.budgets.split(","))
    factors = [None if f == "default" else float(f) for f in args.dim_reduction.split(",")]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        victim, ds = _victim(args, Path(tmp))
    x, y = ds.x_test, ds.y_test
    correct = victim.predict(x) == y
    x, y = x[correct][: args.n], y[correct][: args.n]
    targets = (y + 1) % ds.num_classes if args.targeted else None
    threat = ThreatModel(norm="l2", eps=100.0, targeted=args.targeted)
    runs: list[tuple[str, Any]] = []
    for name in args.attacks.split(","):
        if name == "hsja":
            runs.append(("hsja", HSJA(threat=threat, n_queries=max(budgets), init_pool=x if args.targeted else None)))
            continue
        cls = {"cgba": CGBA, "cgba-h": CGBAH}[name]
        runs += [(name, cls(threat=threat, n_queries=max(budgets), dim_reduction=f)) for f in factors]
    rows = []
    for name, attack in runs:
        start = time.perf_counter()
        r = attack.run(victim, x, y, target_labels=targets)
        curve = r.extra["query_curve"]
        f = r.extra.get("dim_reduction")
        label = name if f is None else f"{name}, f = {f:g}" + (" (default)" if attack.dim_reduction is None else "")
        medians = [curve["median_dist"][curve["budgets"].index(b)] for b in budgets]
        rows.append(
            {
                "attack": label,
                "median_l2": [None if m is None else round(m, 4) for m in medians],
                "success_rate": round(float(r.success.float().mean()), 4),
                "max_queries": int(r.queries.max()),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    table = [f"| {'attack':<24} | " + " | ".join(f"{b:>6}" for b in budgets) + " |"]
    table.append("|---|" + "---:|" * len(budgets))
    for row in rows:
        cells = " | ".join("     -" if m is None else f"{m:6.2f}" for m in row["median_l2"])
        table.append(f"| {row['attack']:<24} | {cells} |")
    print(f"\nmedian L2, {x.shape[0]} images of {args.data} ({'targeted' if args.targeted else 'untargeted'})")
    print("\n".join(table))
    report = {
        "benchmark": "cgba",
        "data": args.data,
        "input_shape": list(x.shape[1:]),
        "n": int(x.shape[0]),
        "targeted": args.targeted,
        "budgets": budgets,
        "epochs": args.epochs if args.data == "photo-digits" else None,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "rows": rows,
        "table": "\n".join(table),
    }
    suffix = "_targeted" if args.targeted else ""
    print("->", write_json(HERE / "results" / f"cgba_{args.data}{suffix}.json", report))


if __name__ == "__main__":
    main()
