"""The audit's Ray executor beside the local one: the standard plan on the `small_cnn` / `mnist5k` fixture,
run once by each into its own fresh database, wall time and ratio, and whether the numbers are the same.

The local executor runs the scenarios one after another in this process (torch at its default thread
count); the Ray executor starts a Ray with `--workers` CPUs on this machine and runs them as tasks of one
CPU each (`--workers` at once, one torch thread each). Each run keeps the models its scenarios train in its
own folder, so neither reads the other's. Ray's start (`ray.init`) is timed apart and counted in the Ray
total, as a user of `bastion audit --executor ray` waits for it.

The numbers must be the same: each scenario's metrics (wall times aside) and per-sample record. Torch's
thread count can move the last bits of a float sum, and with them an attack's decision on a sample at the
edge: where they differ the table says by how much.

    python benchmarks/ray_executor.py [--plan standard] [--only KEY ...] [--skip KEY ...] [--workers 2]
        [--local-threads N]

`--only`/`--skip` take scenario keys or the names before `@` (`fgsm` is every `fgsm@EPS`); on a small
machine the full standard plan takes long, and a subset is noted in the results.

Writes benchmarks/results/ray_executor.json (`--out`).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bastion._atomic import write_json
from bastion.audit import LocalExecutor, Plan, RayExecutor, ScenarioEvent, load_plan, run_audit
from bastion.cli._target import ModelSource
from bastion.store import Store
from evasion_peers import provenance

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=ROOT / "tests" / "fixtures" / "small_cnn-mnist5k.safetensors")
    p.add_argument("--plan", default="standard", help="a built-in plan or a YAML file")
    p.add_argument("--only", nargs="+", default=None, help="run only these scenarios (keys or names before @)")
    p.add_argument("--skip", nargs="+", default=[], help="leave out these scenarios")
    p.add_argument("--workers", type=int, default=2, help="CPUs of the Ray started here (tasks at once)")
    p.add_argument("--local-threads", type=int, default=None, help="torch threads of the local run (default: torch's)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "ray_executor.json")
    return p.parse_args()


def _matches(key: str, names: list[str]) -> bool:
    return key in names or key.split("@")[0] in names


def subset(plan: Plan, only: list[str] | None, skip: list[str]) -> Plan:
    kept = tuple(sc for sc in plan.scenarios if (only is None or _matches(sc.key, only)) and not _matches(sc.key, skip))
    if len(kept) == len(plan.scenarios):
        return plan
    note = f"\n# subset run by benchmarks/ray_executor.py: {', '.join(sc.key for sc in kept)}\n"
    return replace(plan, scenarios=kept, text=plan.text + note)


def stored(url: str, run_id: int) -> dict[str, dict[str, Any]]:
    with Store(url) as store:
        run = store.run(run_id)
        return {
            r.key: {
                "metrics": {k: v for k, v in r.metrics.items() if "seconds" not in k},
                "per_sample": r.record.get("per_sample"),
                "seconds": r.seconds,
            }
            for r in run.results
        }


def largest_gap(a: dict[str, Any], b: dict[str, Any]) -> float:
    gaps = [0.0]
    for k in a.keys() | b.keys():
        x, y = a.get(k), b.get(k)
        if isinstance(x, int | float) and isinstance(y, int | float) and not (math.isnan(x) and math.isnan(y)):
            gaps.append(abs(float(x) - float(y)))
        elif x != y:
            gaps.append(math.inf)
    return max(gaps)


def say(event: ScenarioEvent) -> None:
    if event.state == "done":
        print(f"    {event.index}/{event.total} {event.scenario.key} done in {event.seconds:.1f} s", flush=True)


def main() -> None:
    args = parse_args()
    plan = subset(load_plan(args.plan), args.only, args.skip)
    source = ModelSource(checkpoint=args.checkpoint).resolved().target
    work = Path(tempfile.mkdtemp(prefix="bastion-ray-bench-"))
    print(f"plan {plan.name}: {len(plan.scenarios)} scenario(s); work in {work}", flush=True)

    if args.local_threads is not None:
        torch.set_num_threads(args.local_threads)
    local_threads = torch.get_num_threads()
    local_url = f"sqlite:///{work / 'local.db'}"
    t0 = time.perf_counter()
    with Store(local_url) as store:
        local = run_audit(
            source(), plan, store, executor=LocalExecutor(), model_dir=work / "local-models", on_scenario=say
        )
    local_s = time.perf_counter() - t0
    print(f"local: {local_s:.1f} s ({local_threads} torch threads)", flush=True)

    import ray

    ray_url = f"sqlite:///{work / 'ray.db'}"
    t0 = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    with Store(ray_url) as store:
        remote = run_audit(
            source(), plan, store, executor=RayExecutor(), source=source, model_dir=work / "ray-models", on_scenario=say
        )
    ray_s = time.perf_counter() - t0
    ray.shutdown()
    print(f"ray ({args.workers} workers): {ray_s:.1f} s, of which ray.init {init_s:.1f} s", flush=True)

    a, b = stored(local_url, local.run_id), stored(ray_url, remote.run_id)
    rows = []
    for sc in plan.scenarios:
        same = a[sc.key]["metrics"] == b[sc.key]["metrics"] and a[sc.key]["per_sample"] == b[sc.key]["per_sample"]
        rows.append(
            {
                "key": sc.key,
                "local_seconds": round(a[sc.key]["seconds"], 2),
                "ray_seconds": round(b[sc.key]["seconds"], 2),
                "same": same,
                "largest_metric_gap": largest_gap(a[sc.key]["metrics"], b[sc.key]["metrics"]),
                "metrics_local": a[sc.key]["metrics"],
                "metrics_ray": b[sc.key]["metrics"],
            }
        )
        verdict = "same" if same else f"DIFFERENT (largest metric gap {rows[-1]['largest_metric_gap']:.3g})"
        print(
            f"  {sc.key:<24} local {rows[-1]['local_seconds']:>7.1f} s  ray {rows[-1]['ray_seconds']:>7.1f} s"
            f"  {verdict}",
            flush=True,
        )
    full = len(plan.scenarios) == len(load_plan(args.plan).scenarios)
    result = {
        "plan": plan.name,
        "full_plan": full,
        "scenarios": [sc.key for sc in plan.scenarios],
        "seed": plan.seed,
        "checkpoint": str(
            args.checkpoint.relative_to(ROOT) if args.checkpoint.is_relative_to(ROOT) else args.checkpoint
        ),
        "workers": args.workers,
        "local_threads": local_threads,
        "local_seconds": round(local_s, 1),
        "ray_seconds": round(ray_s, 1),
        "ray_init_seconds": round(init_s, 1),
        "ratio_local_over_ray": round(local_s / ray_s, 2),
        "all_same": all(r["same"] for r in rows),
        "rows": rows,
        "provenance": provenance(),
    }
    print(
        f"local {local_s:.1f} s, ray {ray_s:.1f} s: ratio {local_s / ray_s:.2f}; numbers "
        f"{'all the same' if result['all_same'] else 'NOT all the same'}",
        flush=True,
    )
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
