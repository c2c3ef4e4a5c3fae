"""`blackmarks`: a multi-bit signature read through labels alone (Chen, Rouhani, Koushanfar, arXiv 1904.00344)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.core.errors import ConfigError, DataError
from bastion.core.ops import batch_slices
from bastion.core.params import param
from bastion.core.random import make_generator
from bastion.core.results import OwnershipResult
from bastion.core.victim import Victim
from bastion.defenses.ownership._stats import binomial_tail, clopper_pearson
from bastion.defenses.ownership.base import OwnershipMethod, clean_accuracy, key_batch_edit, register_ownership
from bastion.train import TrainHistory
from bastion.train.surgery import fine_tune

__all__ = ["BlackMarks", "BlackMarksKey"]


@dataclass(frozen=True)
class BlackMarksKey:
    """The owner's secret: key images, the class each must land in, the signature and the class->bit map.

    Attributes:
        x: key images (N, C, H, W), one per signature bit.
        targets: the class c_i the marked model gives key i (N,); bit_of_class[c_i] = signature[i].
        signature: the owner's bits b (N,), 0/1.
        bit_of_class: the encoding, one bit per class (K,).
        source: the class of the clean image each key was made from (N,).
    """

    x: Tensor
    targets: Tensor
    signature: Tensor
    bit_of_class: Tensor
    source: Tensor

    def to_dict(self) -> dict[str, Any]:
        return {
            "bits": int(self.signature.numel()),
            "signature": self.signature.tolist(),
            "bit_of_class": self.bit_of_class.tolist(),
            "targets": self.targets.tolist(),
            "source": self.source.tolist(),
        }


@register_ownership("blackmarks")
@dataclass(frozen=True, kw_only=True)
class BlackMarks(OwnershipMethod):
    """BlackMarks. Chen, Rouhani, Koushanfar, "BlackMarks: Blackbox Multibit Watermarking for Deep Neural
    Networks", arXiv 1904.00344. No public implementation; the choices marked † below are bastion's.

    1. Encoding (`encode`): the mean logit vector of each class over the owner's training images,
       split into two groups by seeded 2-means (first centre a seeded class, second the class farthest
       from it, then Lloyd's iterations): bit(c) is the group of class c. The map is part of the key.
    2. Keys (`make_key`) for a signature b of N bits: per bit, `candidates` clean training images the
       unmarked model classifies correctly, each pushed by a targeted L-inf attack (signed gradient
       steps of `step` on the cross-entropy, within `eps`) toward the most likely other class whose bit
       is b_i, stopping at the first step past the boundary. † The source images are drawn without
       regard to their class's bit, so a key that does not transfer decodes on an independent model as
       the bit of its source class, a fair coin: the null of the test holds (drawing sources from
       classes of bit 1 - b_i, as a reading of the paper suggests, would make independent models return
       the complement of the signature). † Candidates whose target class any reference model (an
       unmarked model of the owner's other than the one attacked: `references`) also predicts
       transfer, and are dropped; the first surviving candidate per bit is the key.
    3. Embedding (`embed`): fine-tune a copy of the model on its training data with `key_batch` keys
       (labelled c_i) appended to every batch, `epochs` epochs of SGD at `lr` (the paper's "few epochs
       of fine-tuning"); † the optional loss pulling key logits toward their bit's cluster is not used.
    4. Extraction (`verify`): one label query per key through a label-only oracle; b^_i = bit(label);
       BER = mean 1[b^_i != b_i]. Under the null each bit is 1/2, and the p-value of the observed
       agreements a is P(Bin(N, 1/2) >= a) (N = 32, a = 32: 2.3e-10); ownership is claimed when the
       BER is at most `tolerance` and p < `alpha`.

    Reproduces, on `mnist5k` with `small_cnn`, N = 16: BER 0 on the marked model, about 0.5 on
    independent models (`tests/defenses/test_ownership.py`, `benchmarks/ownership_mnist5k.py`). The
    paper's abstract reports an embedding overhead as low as 2.054%. Cost: N label queries per suspect.
    """

    bits: int = param(32, ge=1, help="signature length N")
    candidates: int = param(2, ge=1, help="candidate keys made per bit, before the transfer filter")
    eps: float = param(0.25, gt=0, le=1, help="L-inf radius of the key attack")
    step: float = param(0.01, gt=0, help="L-inf step of the key attack")
    max_steps: int = param(100, ge=1, help="steps of the key attack")
    key_batch: int = param(4, ge=1, help="keys appended to every fine-tuning batch when embedding")
    epochs: int = param(2, ge=1, help="fine-tuning epochs of the embedding")
    lr: float = param(0.01, gt=0, help="SGD learning rate of the embedding")
    tolerance: float = param(0.0, ge=0, lt=1, help="largest BER that still claims ownership")

    def encode(self, victim: Victim, x: Tensor, y: Tensor) -> Tensor:
        """The class->bit map (K,) of the owner's model: 2-means over the per-class mean logit vectors."""
        k = victim.num_classes
        logits = victim.logits(x).double().cpu()
        y = y.cpu()
        counts = torch.bincount(y, minlength=k)
        if bool((counts == 0).any()):
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise DataError(f"blackmarks encodes every class from its training images; none of class {missing}")
        means = torch.zeros(k, k, dtype=torch.float64).index_add_(0, y, logits) / counts.unsqueeze(1)
        gen = make_generator(self.seed)
        first = int(torch.randint(k, (1,), generator=gen))
        second = int((means - means[first]).norm(dim=1).argmax())
        centres = means[[first, second]]
        bits = torch.zeros(k, dtype=torch.long)
        for _ in range(100):
            new = torch.cdist(means, centres).argmin(dim=1)
            if bool((new == 0).all() | (new == 1).all()):
                raise DataError("the class logits do not split into two groups; blackmarks needs two non-empty groups")
            if torch.equal(new, bits):
                break
            bits = new
            centres = torch.stack([means[bits == g].mean(dim=0) for g in (0, 1)])
        return bits

    def make_key(
        self,
        victim: Victim,
        x: Tensor,
        y: Tensor,
        bit_of_class: Tensor,
        *,
        signature: Tensor | None = None,
        references: Sequence[Victim] = (),
    ) -> BlackMarksKey:
        """Keys for `signature` (default: N seeded random bits) from the owner's unmarked model and its
        training images (x, y); `references` are other unmarked models the keys must not transfer to."""
        gen = make_generator(self.seed)
        if signature is None:
            signature = torch.randint(2, (self.bits,), generator=gen)
        signature = signature.long().cpu()
        if signature.shape != (self.bits,) or bool(((signature != 0) & (signature != 1)).any()):
            raise ConfigError(f"the signature must be {self.bits} bits of 0 or 1")
        bit_of_class = bit_of_class.long().cpu()
        logits = victim.logits(x).cpu()
        pred = logits.argmax(dim=1)
        pool = torch.nonzero(pred == y.cpu()).flatten()
        pool = pool[torch.randperm(pool.numel(), generator=gen)]
        wanted = signature.repeat_interleave(self.candidates)  # (N c,) the bit each candidate must carry
        # an image can carry bit b when some class of bit b other than its own exists (a group of one class
        # cannot take its own images); each image serves one candidate
        per_bit = torch.stack([(bit_of_class == b).sum() - (bit_of_class[pred[pool]] == b).long() for b in (0, 1)])
        queues = {b: pool[per_bit[b] > 0].tolist() for b in (0, 1)}
        used: set[int] = set()
        picks = []
        for b in wanted.tolist():
            while queues[b] and queues[b][0] in used:
                queues[b].pop(0)
            if not queues[b]:
                raise DataError(
                    f"blackmarks needs {wanted.numel()} correctly classified images that can carry their bit; the "
                    f"model has {pool.numel()} correct ones: give more images or lower `bits` or `candidates`"
                )
            picks.append(queues[b].pop(0))
            used.add(picks[-1])
        chosen = torch.tensor(picks)
        allowed = bit_of_class.unsqueeze(0) == wanted.unsqueeze(1)  # (N c, K)
        allowed[torch.arange(wanted.numel()), pred[chosen]] = False
        targets = logits[chosen].masked_fill(~allowed, -torch.inf).argmax(dim=1)
        x_key, reached = self._attack(victim, x[chosen.to(x.device)], targets)
        keep = reached.clone()
        for ref in references:
            keep &= ref.predict(x_key).cpu() != targets
        picked = []
        for i in range(self.bits):
            ok = torch.nonzero(keep[i * self.candidates : (i + 1) * self.candidates]).flatten()
            if ok.numel() == 0:
                raise DataError(
                    f"no candidate key for bit {i} reached its target without transferring to a reference model; "
                    "raise `candidates` or `eps`"
                )
            picked.append(i * self.candidates + int(ok[0]))
        idx = torch.tensor(picked)
        return BlackMarksKey(
            x=x_key[idx],
            targets=targets[idx],
            signature=signature,
            bit_of_class=bit_of_class,
            source=y.cpu()[chosen[idx]],
        )

    def _attack(self, victim: Victim, x: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Targeted signed-gradient steps until each image is just past the boundary into its target class."""
        x = x.to(victim.device)
        t = targets.to(victim.device)
        x_adv = x.clone()
        reached = victim.predict(x_adv) == t
        lo, hi = victim.bounds
        for _ in range(self.max_steps):
            active = torch.nonzero(~reached).flatten()
            if active.numel() == 0:
                break
            for s in batch_slices(active.numel(), victim.batch_size):
                a = active[s]
                xa = x_adv[a].clone().requires_grad_(True)
                loss = F.cross_entropy(victim(xa), t[a])
                (grad,) = torch.autograd.grad(loss, xa)
                step = xa.detach() - self.step * grad.sign()
                step = torch.minimum(torch.maximum(step, x[a] - self.eps), x[a] + self.eps).clamp(lo, hi)
                x_adv[a] = step
            reached[active] = victim.predict(x_adv[active]) == t[active]
        return x_adv.detach().cpu(), reached.cpu()

    def embed(self, model: nn.Module, x: Tensor, y: Tensor, key: BlackMarksKey) -> tuple[nn.Module, TrainHistory]:
        """A marked copy of `model`: fine-tuned on (x, y) with `key_batch` keys appended to every batch."""
        edit = key_batch_edit(key.x, key.targets, self.key_batch, self.seed)
        return fine_tune(model, x, y, mode="ftal", epochs=self.epochs, lr=self.lr, seed=self.seed, batch=edit)

    def verify(
        self,
        suspect: Victim,
        key: BlackMarksKey,
        *,
        x_test: Tensor | None = None,
        y_test: Tensor | None = None,
    ) -> OwnershipResult:
        """Extract the signature through one label query per key; BER and the binomial p-value."""
        start = time.perf_counter()
        suspect.check_input(key.x)
        n = key.signature.numel()
        oracle = suspect.oracle(n, output="label", max_queries=1)
        labels = oracle.query(key.x.to(suspect.device)).cpu()
        decoded = key.bit_of_class[labels]
        agree = int((decoded == key.signature).sum())
        ber = 1.0 - agree / n
        p = binomial_tail(n, agree, 0.5)
        return OwnershipResult(
            method=self.name,
            params=self.params(),
            seed=self.seed,
            statistic=agree / n,
            p_value=p,
            alpha=self.alpha,
            queries=oracle.queries.cpu(),
            seconds=time.perf_counter() - start,
            n=n,
            matches=agree,
            p0=0.5,
            interval=clopper_pearson(agree, n),
            ber=ber,
            within_tolerance=ber <= self.tolerance + 1e-12,
            clean_accuracy=clean_accuracy(suspect, x_test, y_test),
            extra={"decoded": decoded.tolist(), "labels": labels.tolist()},
        )
