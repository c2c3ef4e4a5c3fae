"""`bastion export onnx`, and `bastion eval`, `bastion attack` and `bastion audit` with --onnx or --endpoint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bastion.cli.app import app
from bastion.deploy import read_onnx_metadata
from bastion.store import Store

CHECKPOINT = Path(__file__).resolve().parents[1] / "fixtures" / "small_cnn-mnist5k.safetensors"
runner = CliRunner()
SQUARE = ["attack", "square", "n_queries=100", "--n", "5", "--max-queries", "100", "--seed", "1", "-q"]

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("httpx")


def run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    code, stdout, stderr = run("export", "onnx", "--checkpoint", CHECKPOINT, "--out", out)
    assert code == 0, stderr
    assert "wrote" in stdout and out.is_file()
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    for k in ("robust_accuracy", "clean_accuracy", "queries_max", "queries_mean", "linf_max"):
        assert a[k] == b[k], k
    assert a["per_sample"] == b["per_sample"]


def test_export_then_attack_onnx_and_endpoint_as_in_process(
    exported: Path, tmp_path: Path, serve: Callable[..., Any]
) -> None:
    meta_keys = read_onnx_metadata(exported)
    assert meta_keys["checkpoint_sha256"] == hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest()
    assert meta_keys["classes"][:2] == ["0", "1"] and meta_keys["split_seed"] == 0
    outs = {}
    for name, model in {"local": ["-c", CHECKPOINT], "onnx": ["--onnx", exported]}.items():
        outs[name] = tmp_path / f"{name}.json"
        code, _, stderr = run(*SQUARE, *model, "--json", outs[name])  # --onnx needs no --data: it is in the file
        assert code == 0, stderr
    server = serve("logits", fail_every=3)
    outs["endpoint"] = tmp_path / "endpoint.json"
    code, stdout, stderr = run(*SQUARE, "--endpoint", server.url, "--data", "mnist5k", "--json", outs["endpoint"])
    assert code == 0, stderr
    assert f"model         {server.url} (answers logits" in stdout
    local, onnx, endpoint = (json.loads(outs[k].read_text()) for k in ("local", "onnx", "endpoint"))
    _same(onnx, local)
    _same(endpoint, local)
    assert onnx["deployed"]["sha256"] == hashlib.sha256(exported.read_bytes()).hexdigest()
    assert endpoint["deployed"]["requests"]["retries"] > 0 and endpoint["queries_max"] <= 100


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["attack", "pgd", "--onnx", "EXPORTED"], "pgd is a white-box attack"),
        (["attack", "square", "--onnx", "missing.onnx"], "does not exist"),
        (["attack", "square", "--endpoint", "http://127.0.0.1:9/", "--retries", "0", "--data", "mnist5k"], "failed 1"),
        (["attack", "square", "--onnx", "EXPORTED", "-c", "CKPT"], "--checkpoint cannot go with --onnx"),
        (["attack", "square", "--onnx", "EXPORTED", "--data", "digits"], "takes (1, 28, 28)"),
        (["audit", "--onnx", "EXPORTED", "--plan", "quick", "--db", "sqlite:///DB"], "answers queries only"),
        (["export", "onnx"], "--checkpoint"),
        (["eval", "--onnx", "EXPORTED", "-c", "CKPT"], "--checkpoint cannot go with --onnx"),
        (["eval", "--endpoint", "http://127.0.0.1:9/", "--model", "m:f", "--mean", "0.5"], "--model and --mean cannot"),
        (["eval", "--onnx", "EXPORTED", "--endpoint", "http://127.0.0.1:9/"], "--endpoint URL, not both"),
        (["eval", "--onnx", "EXPORTED", "--data", "digits"], "takes (1, 28, 28)"),
        (["eval", "--endpoint", "http://127.0.0.1:9/", "--retries", "0", "--data", "mnist5k"], "failed 1"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], match: str, exported: Path, tmp_path: Path) -> None:
    subs = {"EXPORTED": str(exported), "CKPT": str(CHECKPOINT)}
    args = [subs.get(a, a).replace("DB", str(tmp_path / "r.db")) for a in args]
    code, _, stderr = run(*args)
    assert code == 2, stderr
    assert match in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_eval_of_the_exported_file_and_its_endpoint_matches_the_checkpoint(
    exported: Path, tmp_path: Path, serve: Callable[..., Any]
) -> None:
    results = {}
    for name, model in {"local": ["-c", CHECKPOINT], "onnx": ["--onnx", exported]}.items():
        code, stdout, stderr = run("eval", *model, "--json", tmp_path / f"{name}.json")  # the file names its data
        assert code == 0, stderr
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    n = results["local"]["n"]
    assert f", {n} queries to model.onnx" in stdout
    server = serve("labels", fail_every=4)  # a label API: eval needs nothing more
    code, stdout, stderr = run(
        "eval", "--endpoint", server.url, "--endpoint-batch", "300", "--json", tmp_path / "endpoint.json"
    )
    assert code == 0, stderr
    results["endpoint"] = json.loads((tmp_path / "endpoint.json").read_text())
    local, onnx, endpoint = (results[k] for k in ("local", "onnx", "endpoint"))
    assert local["accuracy"] > 0.5 and onnx["accuracy"] == local["accuracy"] == endpoint["accuracy"]
    assert onnx["data"] == endpoint["data"] == "mnist5k" and onnx["split_seed"] == local["split_seed"]
    assert onnx["deployed"]["sha256"] == hashlib.sha256(exported.read_bytes()).hexdigest()
    batches = -(-n // 300)
    requests = endpoint["deployed"]["requests"]
    assert endpoint["queries"] == n == server.rows and requests["rows"] == n  # one query per test image
    assert server.arrived == batches + server.failed and requests["retries"] == server.failed > 0
    assert requests["requests"] == server.arrived + 1  # and the GET that asked what the endpoint serves
    assert f"{n} queries to {server.url} in {server.arrived + 1} requests ({server.failed} retried)" in stdout


def test_audit_of_a_label_endpoint_and_an_onnx_file(exported: Path, tmp_path: Path, serve: Callable[..., Any]) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: tiny-blackbox\nscenarios:\n  - attack: hsja\n    norm: l2\n    eps: 2.0\n    n: 3\n"
        "    max_queries: 60\n    params: {steps: 3, init_evals: 10}\n"
    )
    db = f"sqlite:///{tmp_path / 'r.db'}"
    server = serve("labels")
    code, stdout, stderr = run(
        "audit", "--endpoint", server.url, "--plan", plan, "--db", db, "-o", tmp_path / "a", "-q"
    )
    assert code == 0, stderr
    assert "black-box evasion" in stdout
    code, _, stderr = run("audit", "--onnx", exported, "--plan", plan, "--db", db, "-o", tmp_path / "b", "-q")
    assert code == 0, stderr
    code, _, stderr = run("audit", "--endpoint", server.url, "--db", db, "-q")  # blackbox plan: square needs scores
    assert code == 2 and "labels only" in stderr and "square" in stderr
    store = Store(db)
    models = [store.run(i).model for i in store.run_ids()]
    store.close()
    assert [m.name for m in models] == [server.url, "model.onnx"]
    assert models[1].sha256 == hashlib.sha256(exported.read_bytes()).hexdigest()
    assert models[0].meta["deployed"] == "endpoint" and models[0].meta["reveals"] == "label"
