"""The peer libraries behind one interface, for `evasion_peers.py`: `run(x, y) -> x_adv`.

Every peer gets the same `nn.Module` (eval mode, parameters frozen, inputs in [0, 1], normalisation
inside), the same images, labels and hyperparameters, and returns adversarial images as a CPU tensor;
the benchmark measures robust accuracy itself, the same way for everyone. A peer that is not
installed is reported, never fatal. Install them with `bash benchmarks/setup_peers.sh`.

Where the peers' semantics differ, and how they are aligned here:
- torchattacks, ART and Foolbox attack every sample, also those misclassified when clean; bastion
  and the AutoAttack reference attack only the clean-correct ones. Robust accuracy (correct on
  x_adv, over all N) is the same either way; the timings include the difference.
- torchattacks and Foolbox draw random starts from torch's global generator, ART from NumPy's: the
  benchmark seeds both before every call, so each peer is reproducible. Peers that seed themselves
  (torchattacks' and the reference's Square, bastion) take the seed the benchmark set for that call
  (`torch.initial_seed()`), so `--seeds` varies every library alike.
- ART: `batch_size` defaults to 32 (set to the benchmark's batch); `num_random_init=1` is PGD's
  random start (0 means none); `eps_step` is PGD's alpha; `clip_values=(0, 1)` are the bounds; labels
  go in as indices. ART's Square counts `max_iter` iterations after its initial query, and its
  schedule of p is never rescaled (AutoAttack's and bastion's can be, `--square-rescale`).
- Foolbox: `LinfPGD` takes a relative step by default; `abs_stepsize` sets alpha. `epsilons` is given
  at call time; the clipped output is used (it is the one inside the ball and the bounds).
- The AutoAttack reference (github fra31/auto-attack, a snapshot in benchmarks/_peers/auto-attack,
  put on sys.path here, never installed) defaults to `device='cuda'`: set to the model's device.
  Its per-stage robust accuracies are read from its log, which is captured, not printed.
- torchattacks 3.5.1 declares torchvision but imports none of it: `--no-deps` suffices, no stub.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

AttackFn = Callable[[Tensor, Tensor], Tensor]

AUTOATTACK_DIR = Path(__file__).resolve().parent / "_peers" / "auto-attack"
PEERS = ("torchattacks", "art", "foolbox", "reference")
_DISTRIBUTIONS = {"torchattacks": "torchattacks", "art": "adversarial-robustness-toolbox", "foolbox": "foolbox"}
_MODULES = {"torchattacks": "torchattacks", "art": "art", "foolbox": "foolbox", "reference": "autoattack"}


@dataclass(frozen=True)
class Settings:
    """The hyperparameters every library gets (L-inf throughout)."""

    eps: float
    pgd_steps: int
    pgd_alpha: float
    square_queries: int
    square_p_init: float
    square_rescale: bool
    batch_size: int
    input_shape: tuple[int, int, int]
    num_classes: int
    seed: int


@dataclass
class Entry:
    """One library's run of one attack: `run` is None when the library is unavailable (`status` says why)."""

    key: str  # short id in the JSON: bastion, bastion-default, torchattacks, art, foolbox, reference, ...
    label: str  # what the table shows
    run: AttackFn | None
    status: str = "ok"
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _import(peer: str) -> Any:
    if peer == "reference" and AUTOATTACK_DIR.is_dir() and str(AUTOATTACK_DIR) not in sys.path:
        sys.path.insert(0, str(AUTOATTACK_DIR))
    return importlib.import_module(_MODULES[peer])


def peer_version(peer: str) -> str:
    """The peer's version, or `not installed (...)`."""
    try:
        _import(peer)
    except Exception as e:  # an import that fails for any reason means: not usable here
        hint = "bash benchmarks/setup_peers.sh"
        return f"not installed ({type(e).__name__}: {e}; run {hint})"
    if peer == "reference":
        commit = AUTOATTACK_DIR / "COMMIT"
        sha = commit.read_text().strip()[:12] if commit.is_file() else "unknown commit"
        return f"fra31/auto-attack@{sha}"
    try:
        return version(_DISTRIBUTIONS[peer])
    except PackageNotFoundError:
        return "unknown version"


def peer_status() -> dict[str, str]:
    """{peer: version or `not installed (...)`} for every peer."""
    return {peer: peer_version(peer) for peer in PEERS}


def available(peer: str) -> bool:
    return not peer_version(peer).startswith("not installed")


# ---- torchattacks ------------------------------------------------------------------------------


def torchattacks_entries(attack: str, model: nn.Module, s: Settings, optional: bool) -> list[Entry]:
    ta = _import("torchattacks")
    if attack == "fgsm":
        atk = ta.FGSM(model, eps=s.eps)
    elif attack == "pgd":
        atk = ta.PGD(model, eps=s.eps, alpha=s.pgd_alpha, steps=s.pgd_steps, random_start=True)
    elif attack == "square":
        atk = ta.Square(
            model,
            norm="Linf",
            eps=s.eps,
            n_queries=s.square_queries,
            n_restarts=1,
            p_init=s.square_p_init,
            loss="margin",
            resc_schedule=s.square_rescale,
            seed=s.seed,
        )
    elif attack == "autoattack" and optional:
        atk = ta.AutoAttack(model, norm="Linf", eps=s.eps, version="standard", n_classes=s.num_classes, seed=s.seed)
        return [Entry("torchattacks", f"torchattacks {version('torchattacks')} (its port, optional)", atk)]
    else:
        return []

    def run(x: Tensor, y: Tensor) -> Tensor:
        if attack == "square":  # it reseeds torch from its own seed on every call
            atk.seed = torch.initial_seed()
        return atk(x, y)

    return [Entry("torchattacks", f"torchattacks {version('torchattacks')}", run)]


# ---- ART ---------------------------------------------------------------------------------------


def art_entries(attack: str, model: nn.Module, s: Settings, optional: bool) -> list[Entry]:
    _import("art")
    from art.attacks.evasion import (
        AutoAttack,
        AutoProjectedGradientDescent,
        FastGradientMethod,
        ProjectedGradientDescentPyTorch,
        SquareAttack,
    )
    from art.estimators.classification import PyTorchClassifier

    device = next(model.parameters()).device
    clf = PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=s.input_shape,
        nb_classes=s.num_classes,
        clip_values=(0.0, 1.0),
        device_type="cpu" if device.type == "cpu" else "gpu",
    )
    label, notes = f"ART {version('adversarial-robustness-toolbox')}", ""
    if attack == "fgsm":
        atk = FastGradientMethod(clf, norm=np.inf, eps=s.eps, num_random_init=0, batch_size=s.batch_size)
    elif attack == "pgd":
        atk = ProjectedGradientDescentPyTorch(
            clf,
            norm=np.inf,
            eps=s.eps,
            eps_step=s.pgd_alpha,
            max_iter=s.pgd_steps,
            num_random_init=1,
            batch_size=s.batch_size,
            verbose=False,
        )
    elif attack == "square":
        atk = SquareAttack(
            clf,
            norm=np.inf,
            max_iter=s.square_queries,
            eps=s.eps,
            p_init=s.square_p_init,
            nb_restarts=1,
            batch_size=s.batch_size,
            verbose=False,
        )
        notes = "p schedule never rescaled; max_iter iterations after the initial query"
    elif attack == "autoattack" and optional:
        # ART has no FAB and its default ensemble (5 restarts, DeepFool, Square x5) is another attack:
        # the nearest it comes to the standard version, for timing only.
        parts = [
            AutoProjectedGradientDescent(
                clf,
                norm=np.inf,
                eps=s.eps,
                eps_step=2 * s.eps,
                max_iter=100,
                nb_random_init=1,
                batch_size=s.batch_size,
                loss_type=loss,
                verbose=False,
            )
            for loss in ("cross_entropy", "difference_logits_ratio")
        ]
        parts.append(SquareAttack(clf, norm=np.inf, max_iter=5000, eps=s.eps, p_init=0.8, nb_restarts=1, verbose=False))
        atk = AutoAttack(clf, norm=np.inf, eps=s.eps, attacks=parts, batch_size=s.batch_size)
        label += " (APGD-CE, APGD-DLR, Square; no FAB-T: not the standard version, optional)"
    else:
        return []

    def run(x: Tensor, y: Tensor) -> Tensor:
        x_adv = atk.generate(x=x.detach().cpu().numpy(), y=y.cpu().numpy())
        return torch.from_numpy(x_adv).to(x.device)

    return [Entry("art", label, run, notes=notes)]


# ---- Foolbox -----------------------------------------------------------------------------------


def foolbox_entries(attack: str, model: nn.Module, s: Settings, optional: bool) -> list[Entry]:
    fb = _import("foolbox")
    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=next(model.parameters()).device)
    if attack == "fgsm":
        atk = fb.attacks.FGSM(random_start=False)
    elif attack == "pgd":
        atk = fb.attacks.LinfPGD(abs_stepsize=s.pgd_alpha, steps=s.pgd_steps, random_start=True)
    else:
        return []

    def run(x: Tensor, y: Tensor) -> Tensor:
        _, clipped, _ = atk(fmodel, x, y, epsilons=s.eps)
        return clipped

    return [Entry("foolbox", f"Foolbox {version('foolbox')}", run)]


# ---- the AutoAttack reference (fra31/auto-attack) ----------------------------------------------

_STAGE = re.compile(r"robust accuracy after ([A-Z0-9-]+): ([0-9.]+)%")
_CLEAN = re.compile(r"initial accuracy: ([0-9.]+)%")


def reference_entries(attack: str, model: nn.Module, s: Settings, optional: bool) -> list[Entry]:
    _import("reference")
    device = str(next(model.parameters()).device)
    label = f"reference {peer_version('reference')}"
    if attack == "square":
        from autoattack.square import SquareAttack

        sq = SquareAttack(
            model,
            norm="Linf",
            n_queries=s.square_queries,
            eps=s.eps,
            p_init=s.square_p_init,
            n_restarts=1,
            seed=s.seed,
            verbose=False,
            resc_schedule=s.square_rescale,
            device=device,
        )

        def run_square(x: Tensor, y: Tensor) -> Tensor:
            sq.seed = torch.initial_seed()  # it reseeds torch from its own seed on every call
            return sq.perturb(x, y)

        return [Entry("reference", label, run_square)]
    if attack != "autoattack":
        return []
    from autoattack import AutoAttack

    with contextlib.redirect_stdout(io.StringIO()):  # it announces its version on stdout
        aa = AutoAttack(model, norm="Linf", eps=s.eps, version="standard", seed=s.seed, device=device, verbose=True)
    entry = Entry("reference", label, None)

    def run(x: Tensor, y: Tensor) -> Tensor:
        log = io.StringIO()
        with contextlib.redirect_stdout(log):  # its Logger prints; the stages are read from it
            x_adv = aa.run_standard_evaluation(x, y, bs=s.batch_size)
        text = log.getvalue()
        clean = _CLEAN.search(text)
        stages = {"clean": float(clean.group(1)) / 100} if clean else {}
        stages.update({name.lower(): float(acc) / 100 for name, acc in _STAGE.findall(text)})
        entry.extra["stages"] = stages
        return x_adv

    entry.run = run
    return [entry]


BUILDERS: dict[str, Callable[[str, nn.Module, Settings, bool], list[Entry]]] = {
    "torchattacks": torchattacks_entries,
    "art": art_entries,
    "foolbox": foolbox_entries,
    "reference": reference_entries,
}

# which peers implement which attack (optional ones only with --optional)
OFFERS = {
    "torchattacks": {"fgsm", "pgd", "square", "autoattack?"},
    "art": {"fgsm", "pgd", "square", "autoattack?"},
    "foolbox": {"fgsm", "pgd"},
    "reference": {"autoattack", "square"},
}


def peer_entries(peer: str, attack: str, model: nn.Module, s: Settings, optional: bool) -> list[Entry]:
    """The peer's entries for `attack` (empty when it has none); a `not installed` entry when it is missing."""
    offers = OFFERS[peer]
    if attack not in offers and not (optional and f"{attack}?" in offers):
        return []
    status = peer_version(peer)
    if status.startswith("not installed"):
        return [Entry(peer, peer, None, status=status)]
    return BUILDERS[peer](attack, model, s, optional)
