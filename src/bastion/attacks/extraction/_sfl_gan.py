"""`gan-me`: split-learning extraction on a generator trained against the server (Li et al., arXiv 2303.08581).

Reference `zlijingtao/SFL-MEA` (`old-commit`) `attacks/model_extraction_attack.py` (`train_generator`,
`Generator_option`) and `models/architectures_torch.py` (`GeneratorC`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.extraction._sfl_base import Attacker, SplitExtractionAttack
from bastion.core.errors import ConfigError
from bastion.core.params import param
from bastion.core.progress import ProgressFn, report

__all__ = ["GANME", "ConditionalGenerator"]


class ConditionalGenerator(nn.Module):
    """G(u, c): a class embedding concatenated with the latent u, a linear layer to 2 ngf maps of side
    s/4, then (BatchNorm, upsample x2, conv-BN-LeakyReLU) twice and a conv to the image channels. The
    layout of the reference's `GeneratorC`; the output is a sigmoid in [0, 1] (bastion's input range; the
    reference ends in tanh and an affine-free BatchNorm, in normalised space)."""

    def __init__(self, *, latent: int, ngf: int, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = input_shape
        self.size = (h, w)
        self.init = (max(h // 4, 1), max(w // 4, 1))
        self.embed = nn.Embedding(num_classes, latent)
        self.fc = nn.Linear(2 * latent, 2 * ngf * self.init[0] * self.init[1])
        self.bn0 = nn.BatchNorm2d(2 * ngf)
        self.block1 = nn.Sequential(
            nn.Conv2d(2 * ngf, 2 * ngf, 3, padding=1), nn.BatchNorm2d(2 * ngf), nn.LeakyReLU(0.2)
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(2 * ngf, ngf, 3, padding=1),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ngf, c, 3, padding=1),
        )

    def forward(self, u: Tensor, c: Tensor) -> Tensor:
        h = self.fc(torch.cat([self.embed(c), u], 1)).view(u.shape[0], -1, *self.init)  # (N, 2ngf, s/4, s/4)
        h = self.block1(F.interpolate(self.bn0(h), scale_factor=2))  # (N, 2ngf, s/2, s/2)
        h = self.block2(F.interpolate(h, scale_factor=2))  # (N, C, s, s)
        if tuple(h.shape[2:]) != self.size:
            h = F.interpolate(h, size=self.size, mode="bilinear", align_corners=False)
        return torch.sigmoid(h)


@register_attack("gan-me")
@dataclass(frozen=True, kw_only=True)
class GANME(SplitExtractionAttack):
    """GAN-ME: train a conditional generator against the server's gradients, then train Ŝ on its images.

    floor(B / 100) generator steps (Adam, lr 2e-4, x0.3 at 10/30/50% of the steps), each of 100 rows:
    50 latent pairs, each pair sharing one random class. The loss is `CE(S(C(G(u, c))), c) - 50 div`,
    `div = mean_pairs(mean|G(u1, c) - G(u2, c)| / mean|u1 - u2|)` (mode seeking, Mao et al. 2019); the
    CE gradient is the server's answer (batch mean: the returned rows / 100), back-propagated through C
    and G. Then Ŝ trains on fresh (G(u, c), c), `gen_batches` batches per epoch, the generator frozen in
    eval mode. Defaults: latent 512, ngf 128 (reference); a CPU proxy on 28x28 uses smaller ones.
    """

    source = "images of a generator trained on gradient queries (no data)"

    latent: int = param(512, ge=1, help="latent size of the generator (reference: 512)")
    ngf: int = param(128, ge=1, help="generator width (reference: 128)")
    gen_lr: float = param(2e-4, gt=0, help="generator Adam learning rate (reference: 2e-4)")
    div_weight: float = param(50.0, ge=0, help="weight of the mode-seeking diversity term (reference: 50)")
    query_batch: int = param(100, ge=2, help="rows per generator step, an even number (reference: 100)")
    gen_batches: int = param(20, ge=1, help="generated batches per surrogate epoch (reference: 20)")

    def planned_queries(self, num_classes: int, n_own: int, n_aux: int) -> int:
        if self.query_batch % 2:
            raise ConfigError(f"gan-me pairs its latents: query_batch must be even; got {self.query_batch}")
        if self.budget < self.query_batch:
            raise ConfigError(f"gan-me takes steps of {self.query_batch} queries; budget {self.budget} is too small")
        return (self.budget // self.query_batch) * self.query_batch

    def _collect(self, atk: Attacker, gen: torch.Generator, progress: ProgressFn | None) -> ConditionalGenerator:
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, the global generator left as it was
            torch.manual_seed(int(torch.randint(2**31, (1,), generator=gen)))
            g_net = ConditionalGenerator(
                latent=self.latent, ngf=self.ngf, num_classes=atk.num_classes, input_shape=atk.input_shape
            ).to(atk.device)
        steps, half = self.budget // self.query_batch, self.query_batch // 2
        opt = torch.optim.Adam(g_net.parameters(), lr=self.gen_lr)
        milestones = sorted({int(f * steps) for f in (0.1, 0.3, 0.5)})
        params = list(g_net.parameters())
        g_net.train()
        for step in range(1, steps + 1):
            for group in opt.param_groups:
                group["lr"] = self.gen_lr * 0.3 ** sum(step >= m for m in milestones)
            u = torch.randn(self.query_batch, self.latent, generator=gen).to(atk.device)
            c = torch.randint(atk.num_classes, (half,), generator=gen).repeat(2).to(atk.device)
            fake = g_net(u, c)  # (2 half, C, H, W)
            z = atk.client(fake)
            g = atk.oracle.grad(z.detach(), c)  # dCE_i/dz_i
            out_dist = (fake[:half] - fake[half:]).abs().mean()
            z_dist = (u[:half] - u[half:]).abs().mean(1)  # (half,)
            div = (out_dist / z_dist).mean() * self.div_weight
            opt.zero_grad(set_to_none=True)
            torch.autograd.backward([z, -div], [g / self.query_batch, None], inputs=params)
            opt.step()
            report(progress, "generator", step, steps)
        return g_net.eval()

    def _size(self, data: object) -> int:
        return self.gen_batches * self.batch_size

    def _epoch(
        self, surrogate: nn.Module, opt: torch.optim.Optimizer, atk: Attacker, data: object, gen: torch.Generator
    ) -> float:
        assert isinstance(data, ConditionalGenerator)
        total = 0.0
        for _ in range(self.gen_batches):
            u = torch.randn(self.batch_size, self.latent, generator=gen).to(atk.device)
            c = torch.randint(atk.num_classes, (self.batch_size,), generator=gen).to(atk.device)
            with torch.no_grad():
                x = data(u, c)
            loss = F.cross_entropy(surrogate(atk.z(x)), c)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        return total / self.gen_batches
