"""Every console and Python example in README.md and docs/ runs (typer's habit: the docs cannot rot).
Blocks shown as files (```yaml file=my-plan.yaml) are written where the examples can use them.

Each file's examples run in order in one fresh folder, which holds what they refer to: a user's model
package (`mypackage.nets:build`) with weights, and a small image folder (`shapes/`).
"""

from __future__ import annotations

import re
import shlex
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from bastion.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# console and python blocks run; a block whose info string names a file (```yaml file=plan.yaml) is written there
BLOCK = re.compile(r"```(console|python|\w+ file=\S+)\n(.*?)```", re.DOTALL)

USER_MODEL = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    def forward(self, x):
        return {"logits": self.body(x), "features": x}


def build():
    return Net()
"""


def commands(text: str) -> list[list[str]]:
    """The `$ bastion ...` lines of a console block (with `\\` continuations joined)."""
    joined = text.replace("\\\n", " ")
    return [shlex.split(line[2:]) for line in joined.splitlines() if line.startswith("$ bastion ")]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pkg = tmp_path / "mypackage"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(USER_MODEL))
    gen = torch.Generator().manual_seed(0)
    save_file(
        {"body.1.weight": torch.randn(10, 784, generator=gen) * 0.01, "body.1.bias": torch.zeros(10)},
        str(tmp_path / "net.safetensors"),
    )
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("disc", "square"):
            folder = tmp_path / "shapes" / split / cls
            folder.mkdir(parents=True)
            for i in range(6):
                img = (rng.random((12, 12)) * 60).astype(np.uint8)
                if cls == "square":
                    img[3:9, 3:9] = 255
                else:
                    yy, xx = np.mgrid[:12, :12]
                    img[(yy - 6) ** 2 + (xx - 6) ** 2 < 10] = 255
                Image.fromarray(img).save(folder / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def doc_files_with_examples() -> list[Path]:
    return [p for p in DOCS if BLOCK.search(p.read_text())]


@pytest.mark.parametrize("doc", doc_files_with_examples(), ids=lambda p: p.name)
def test_examples_run(doc: Path, workdir: Path) -> None:
    runner = CliRunner()
    ran = 0
    for kind, body in BLOCK.findall(doc.read_text()):
        if " file=" in kind:
            Path(kind.split("file=")[1]).write_text(body)
            continue
        if kind == "python":
            exec(compile(body, f"{doc.name}:example", "exec"), {"__name__": "__docs__"})
            ran += 1
            continue
        for args in commands(body):
            result = runner.invoke(app, args[1:])
            assert result.exit_code == 0, f"{doc.name}: {shlex.join(args)}\n{result.stdout}\n{result.stderr}"
            ran += 1
    assert ran > 0
