"""Benchmark: the whole nightly path of one big day through the real scheduler, and training memory.

For each N (default 1M and 10M rows) it lands one synthetic day of N rows (Parquet, 250,000-row row
groups), measures predict-only time of the same rows in a fresh child process (``bench/scoring.py``),
triggers the model's scoring DAG over the REST API, waits for the monitoring run the scores Asset
triggers, and prints: wall time trigger -> monitoring end, rows/s, the ratio wall / predict-only, the
largest peak RSS of a task (every Nightshift task logs "peak RSS of this task: N MB") and each task's
duration. Then it trains the model's pipeline on a window of ``--train-rows`` labelled rows in a fresh
child process: wall time, peak RSS and MB per million rows.

Usage::

    .venv/bin/python -m bench.nightly                     # 1M and 10M rows, training on 3M
    .venv/bin/python -m bench.nightly --rows 20000 --train-rows 50000

The stack: the one of ``NIGHTSHIFT_HOME`` when set (up already; the bench spec goes to
``NIGHTSHIFT_MODELS_DIR``, which that stack must read), else its own, brought up with scripts/stack in
``.local-bench`` (databases ``nsbench_*``, free ports; ``NIGHTSHIFT_BENCH_HOME`` and
``NIGHTSHIFT_BENCH_DB_PREFIX`` change them) and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from scripts.stack.api import AirflowApi
    from scripts.stack.settings import Stack

ROOT = Path(__file__).resolve().parents[1]
MODEL = "bench"
TODAY = date(2026, 11, 20)  # the sample window ends here; bench days follow it
FIRST_DAY = date(2026, 12, 1)
ROW_GROUP = 250_000
RSS = re.compile(r"peak RSS of this task: (\d+) MB")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stack_cli(command: str, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.stack", command], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0 and command == "up":
        raise SystemExit(f"stack up failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")


@contextmanager
def bench_stack() -> Iterator[Stack]:
    """The stack of ``NIGHTSHIFT_HOME``, or an own one (up on entry, down on exit)."""
    from scripts.stack.settings import Stack

    if os.environ.get("NIGHTSHIFT_HOME"):
        if not os.environ.get("NIGHTSHIFT_MODELS_DIR"):
            raise SystemExit("with NIGHTSHIFT_HOME set, set NIGHTSHIFT_MODELS_DIR to the models directory it reads")
        yield Stack()
        return
    home = Path(os.environ.get("NIGHTSHIFT_BENCH_HOME") or ROOT / ".local-bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "NIGHTSHIFT_", "MLFLOW_"))}
    env.update(
        {
            "NIGHTSHIFT_HOME": str(home),
            "NIGHTSHIFT_DB_PREFIX": os.environ.get("NIGHTSHIFT_BENCH_DB_PREFIX") or "nsbench",
            "NIGHTSHIFT_AIRFLOW_PORT": str(_free_port()),
            "NIGHTSHIFT_MLFLOW_PORT": str(_free_port()),
            "NIGHTSHIFT_MODELS_DIR": str(home / "models"),
        }
    )
    for key in ("NIGHTSHIFT_DB_URL", "NIGHTSHIFT_PG_PORT"):
        if key in os.environ:
            env[key] = os.environ[key]
    _stack_cli("down", env)
    import shutil

    from scripts.stack.postgres import ensure_databases, ensure_postgres

    shutil.rmtree(home, ignore_errors=True)
    # Fresh databases: a registry left by an earlier run would point at artifacts removed with the home.
    prefix = env["NIGHTSHIFT_DB_PREFIX"]
    server = ensure_postgres(Stack(home=home, db_prefix=prefix))
    ensure_databases(server, [f"{prefix}_{db}" for db in ("airflow", "mlflow", "warehouse")], reset=True)
    (home / "models").mkdir(parents=True)
    os.environ.update({k: v for k, v in env.items() if k.startswith("NIGHTSHIFT_")})
    write_spec(home / "models")
    try:
        _stack_cli("up", env)
        yield Stack()
    finally:
        _stack_cli("down", env)


def write_spec(directory: Path) -> Path:
    """The bench model: the churn example under its own name and landing paths, no schedules."""
    import yaml

    raw = yaml.safe_load((ROOT / "include" / "models" / "churn.yaml").read_text())
    raw["name"] = MODEL
    for key in ("features_uri", "labels_uri"):
        raw["landing"][key] = raw["landing"][key].replace("/churn/", f"/{MODEL}/")
    raw["schedules"] = {"training": None, "scoring": None}
    raw["alerts"] = {"email_to": []}
    path = directory / f"{MODEL}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def train_champion(stack: Stack, api: AirflowApi) -> None:
    """Sample data for the window, one training run (it promotes the first version), training paused again."""
    from include.nightshift.sample import SampleOptions, generate
    from include.nightshift.spec import load_model

    spec = load_model(MODEL)
    generate(spec, stack.landing_root, SampleOptions(start=TODAY - timedelta(days=41), end=TODAY))
    dag_id = f"{MODEL}_training"
    api.wait_for_dag(dag_id)
    run_id = api.trigger(dag_id, conf={"window_end": (TODAY - timedelta(days=7)).isoformat()})
    state = api.wait_for_run(dag_id, run_id, timeout=1200)["state"]
    # Drift on a synthetic day asks for retraining (an Asset): no training run while the bench measures.
    api.call("PATCH", f"/api/v2/dags/{dag_id}?update_mask=is_paused", {"is_paused": True})
    if state != "success":
        raise SystemExit(f"training failed: {api.failed_task_errors(dag_id, run_id)}")


def champion_pickle(stack: Stack, path: Path) -> Path:
    import pickle

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    mlflow.set_tracking_uri(stack.mlflow_url)
    path.write_bytes(pickle.dumps(mlflow.sklearn.load_model(f"models:/{MODEL}@champion")))
    return path


def land_day(stack: Stack, day: date, rows: int, tmp: Path) -> Path:
    """A day of ``rows`` rows in the landing area (and a local copy for predict-only)."""
    from bench.scoring import make_input
    from include.nightshift.spec import load_model
    from include.nightshift.storage import Storage

    spec = load_model(MODEL)
    local = tmp / f"day-{rows}.parquet"
    make_input(spec, local, rows, chunk=ROW_GROUP)
    import pyarrow.fs as pafs

    fs, target = Storage().resolve(spec.landing.features(stack.landing_root, day.isoformat()))
    fs.create_dir(os.path.dirname(target), recursive=True)
    pafs.copy_files(str(local), target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    return local


def predict_only(local: Path, model: Path, rows: int) -> dict[str, Any]:
    from bench.scoring import run_child

    return run_child("predict_only", argparse.Namespace(spec=MODEL), local, model, "", rows)


def latest_run_after(api: AirflowApi, dag_id: str, since: datetime, timeout: float) -> dict[str, Any]:
    """The first run of ``dag_id`` queued after ``since``, once it finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=5")["dag_runs"]
        mine = [r for r in runs if datetime.fromisoformat(r["run_after"]) >= since]
        if mine and mine[-1]["state"] in ("success", "failed"):
            return mine[-1]
        time.sleep(2)
    raise SystemExit(f"no finished {dag_id} run after {since} within {timeout:.0f} s")


def task_figures(api: AirflowApi, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Per task instance: id, map index, duration and the peak RSS its log reports."""
    from scripts.stack.api import _q

    out = []
    for ti in api.task_instances(dag_id, run_id):
        if ti["state"] != "success":
            continue
        query = f"?map_index={ti['map_index']}" if ti["map_index"] >= 0 else ""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}"
        events = api.call("GET", path + query).get("content") or []
        text = "\n".join(str(e.get("event", "")) if isinstance(e, dict) else str(e) for e in events)
        found = RSS.findall(text)
        out.append(
            {
                "dag": dag_id,
                "task": ti["task_id"],
                "map_index": ti["map_index"],
                "seconds": float(ti.get("duration") or 0.0),
                "start": ti["start_date"],
                "end": ti["end_date"],
                "peak_rss_mb": int(found[-1]) if found else None,
            }
        )
    return out


def nightly(stack: Stack, api: AirflowApi, day: date, rows: int, tmp: Path, model: Path) -> dict[str, Any]:
    """One day of ``rows`` rows: predict-only, then trigger scoring and wait for the monitoring run."""
    local = land_day(stack, day, rows, tmp)
    baseline = predict_only(local, model, rows)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    run_id = api.trigger(f"{MODEL}_scoring", conf={"run_date": day.isoformat()})
    scoring = api.wait_for_run(f"{MODEL}_scoring", run_id, timeout=3600)
    if scoring["state"] != "success":
        raise SystemExit(f"scoring failed: {api.failed_task_errors(f'{MODEL}_scoring', run_id)}")
    monitoring = latest_run_after(api, f"{MODEL}_monitoring", started, timeout=1800)
    wall = (datetime.fromisoformat(monitoring["end_date"]) - started).total_seconds()
    polled = time.monotonic() - t0
    tasks = task_figures(api, f"{MODEL}_scoring", run_id) + task_figures(
        api, f"{MODEL}_monitoring", monitoring["dag_run_id"]
    )
    local.unlink()
    return {
        "rows": rows,
        "wall_seconds": wall,
        "polled_seconds": polled,
        "predict_only_seconds": baseline["seconds"],
        "monitoring_state": monitoring["state"],
        "tasks": tasks,
    }


def report_nightly(r: dict[str, Any]) -> None:
    rss = [t["peak_rss_mb"] for t in r["tasks"] if t["peak_rss_mb"] is not None]
    top = max(r["tasks"], key=lambda t: t["peak_rss_mb"] or 0)
    print(
        f"\n{r['rows']:,} rows: trigger -> monitoring end {r['wall_seconds']:.1f} s "
        f"({r['rows'] / r['wall_seconds']:,.0f} rows/s)"
    )
    print(
        f"  predict-only {r['predict_only_seconds']:.1f} s; ratio wall / predict-only "
        f"{r['wall_seconds'] / r['predict_only_seconds']:.2f}; monitoring run {r['monitoring_state']}"
    )
    print(f"  max peak RSS of a task: {max(rss, default=0)} MB ({top['dag'].split('_')[-1]}.{top['task']})")
    print(f"  {'task':<34}{'n':>4}{'span s':>9}{'sum s':>9}{'max RSS MB':>12}")
    order: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for t in sorted(r["tasks"], key=lambda t: t["start"] or ""):
        order.setdefault((t["dag"], t["task"]), []).append(t)
    for (dag, task), items in order.items():
        span = (
            datetime.fromisoformat(max(i["end"] for i in items))
            - datetime.fromisoformat(min(i["start"] for i in items))
        ).total_seconds()
        peak = max((i["peak_rss_mb"] or 0) for i in items)
        name = f"{dag.split('_')[-1]}.{task}"
        print(f"  {name:<34}{len(items):>4}{span:>9.1f}{sum(i['seconds'] for i in items):>9.1f}{peak:>12}")


def training_memory(rows: int, tmp: Path) -> dict[str, Any]:
    """A window of about ``rows`` labelled rows as sample data, then load and fit in a fresh child."""
    from include.nightshift.sample import SampleOptions, generate
    from include.nightshift.spec import load_model

    spec = load_model(MODEL)
    days = spec.training.window_days
    per_day = max(rows // days, 100)
    root = (tmp / "train-landing").as_uri()
    opts = SampleOptions(
        start=TODAY - timedelta(days=days - 1),
        end=TODAY,
        rows_per_day=per_day,
        population=per_day * 2,
        label_delay_days=0,
    )
    generate(spec, root, opts)
    cmd = [sys.executable, "-m", "bench.nightly", "--train-child", root]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"training child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train_child(root: str) -> dict[str, Any]:
    """In a fresh process: build the training set of the window ending TODAY and fit the spec's pipeline."""
    import resource

    from include.nightshift import datasets
    from include.nightshift.pipeline import build_pipeline
    from include.nightshift.spec import load_model
    from include.nightshift.storage import Storage
    from include.nightshift.training import _fit_and_measure

    spec = load_model(MODEL)
    started = time.perf_counter()
    window = datasets.resolve_window(spec, TODAY + spec.label_delay, TODAY.isoformat())
    ts = datasets.load_training_set(Storage(), spec, root, window)
    loaded = time.perf_counter() - started
    _, metrics = _fit_and_measure(spec, build_pipeline(spec, spec.training.algorithm), ts)
    return {
        "rows": len(ts.train) + len(ts.holdout),
        "train_rows": len(ts.train),
        "load_seconds": loaded,
        "fit_seconds": metrics["fit_seconds"],
        "wall_seconds": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="1000000,10000000", help="comma-separated day sizes (default 1M,10M)")
    p.add_argument("--train-rows", type=int, default=3_000_000, help="labelled rows of the training window (0: skip)")
    p.add_argument("--train-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.train_child:
        print(json.dumps(train_child(args.train_child)))
        return 0
    sizes = [int(n.replace("_", "")) for n in args.rows.split(",") if n.strip()]
    from scripts.stack.api import api_for

    print(f"nightly bench: model {MODEL}, days of {', '.join(f'{n:,}' for n in sizes)} rows, {os.cpu_count()} CPUs")
    results = []
    with bench_stack() as stack, tempfile.TemporaryDirectory(prefix="nightshift-nightly-") as tmp_dir:
        tmp = Path(tmp_dir)
        if os.environ.get("NIGHTSHIFT_MODELS_DIR"):
            write_spec(Path(os.environ["NIGHTSHIFT_MODELS_DIR"]))
        api = api_for(stack)
        train_champion(stack, api)
        api.wait_for_dag(f"{MODEL}_monitoring")
        api.unpause(f"{MODEL}_monitoring")
        model = champion_pickle(stack, tmp / "champion.pkl")
        for i, rows in enumerate(sizes):
            results.append(nightly(stack, api, FIRST_DAY + timedelta(days=i), rows, tmp, model))
            report_nightly(results[-1])
        if len(results) > 1:
            a, b = results[0], results[-1]
            growth = (b["wall_seconds"] / a["wall_seconds"]) / (b["rows"] / a["rows"])
            print(
                f"\ntime growth {a['rows']:,} -> {b['rows']:,} rows: {growth:.2f}x the row growth "
                "(<= 1: linear or better)"
            )
        if args.train_rows:
            t = training_memory(args.train_rows, tmp)
            per_m = t["peak_rss_mb"] / (t["rows"] / 1e6)
            print(
                f"\ntraining on {t['rows']:,} labelled rows ({t['train_rows']:,} to fit): "
                f"wall {t['wall_seconds']:.1f} s "
                f"(load {t['load_seconds']:.1f} s, fit {t['fit_seconds']:.1f} s), peak RSS {t['peak_rss_mb']:.0f} MB, "
                f"{per_m:.0f} MB per million rows"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
