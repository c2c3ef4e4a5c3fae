"""Model extraction on split federated learning (SFL): Li, Rakin, Chen, Yang, He, Fan, Chakrabarti,
"Model Extraction Attacks on Split Federated Learning", arXiv 2303.08581 (2023); reference
`zlijingtao/SFL-MEA`, branch `old-commit` (`attacks/model_extraction_attack.py`, `SFL.py`,
`main_steal_offline.py`, `scripts/offline/*.sh`).

The setting, simulated in one process: a model cut into a client-side bottom C and a server-side top S
(`split_model`; `server_layers` counts conv, max-pool and linear modules from the output, as the
reference's `resplit`); clients that hold the current C (FedAvg-averaged) and their own labelled data
(`SplitFed`). A client sends `z = C(x)` and y; the server computes `CE(S(z), y)`, updates S and returns
`dL/dz`; no prediction ever leaves it. A malicious client may send any (z, y): a `SplitOracle` answers
each row with `dCE(S(z), y)/dz`, counts every row, enforces a budget and holds no public path to S.

The five attacks train a freshly initialised surrogate Ŝ so that Ŝ∘C imitates S∘C:

| name | data | queries |
|---|---|---|
| `craft-me` | none | crafting steps: one per image per step |
| `gan-me` | none | generator steps of 100 rows |
| `gm-me` | unlabelled auxiliary images | K per image (every label), gradient matching |
| `train-me` | own labelled data | none |
| `softtrain-me` | own labelled data | K per image, soft labels from gradient cosines |

Each reports the accuracy of Ŝ∘C, its fidelity to S∘C, the gap to the victim, the random-Ŝ
baseline and the oracle's exact query count (`SplitExtractionResult`). Measured on `mnist5k` with
`small_cnn` cut after conv2: `benchmarks/sfl_extraction.py`, docs/split-learning.md.
"""

from __future__ import annotations

from bastion.attacks.extraction._sfl_base import Attacker, SplitExtractionAttack, SplitExtractionResult
from bastion.attacks.extraction._sfl_craft import CraftME
from bastion.attacks.extraction._sfl_fed import SplitFed
from bastion.attacks.extraction._sfl_gan import GANME, ConditionalGenerator
from bastion.attacks.extraction._sfl_gm import GMME
from bastion.attacks.extraction._sfl_softtrain import SoftTrainME, soft_labels
from bastion.attacks.extraction._sfl_split import SplitModel, SplitOracle, count_layers, split_model
from bastion.attacks.extraction._sfl_train_me import TrainME

__all__ = [
    "GANME",
    "GMME",
    "Attacker",
    "ConditionalGenerator",
    "CraftME",
    "SoftTrainME",
    "SplitExtractionAttack",
    "SplitExtractionResult",
    "SplitFed",
    "SplitModel",
    "SplitOracle",
    "TrainME",
    "count_layers",
    "soft_labels",
    "split_model",
]
