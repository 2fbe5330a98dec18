"""What ``make run`` prints: the training decision, the scored days, the monitoring verdicts.

Formatting only: every function here reads the facts it is given and prints them; none of them
starts a service, opens a database or writes a file. No password is ever printed (terminals end up
in CI logs and scrollback): the summaries say where each one is, the secrets file and its key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import date

    from scripts.stack.settings import Stack

RULE = "=" * 78


def where(stack: Stack, key: str) -> str:
    """Where the password ``key`` is kept: its key in the private secrets file, and how to read it."""
    return f"password: key {key} in {stack.secrets_file} (mode 0600; jq -r .{key} {stack.secrets_file})"


def _failures(errors: dict[str, str], lines_per_error: int) -> list[str]:
    lines = []
    for what, error in errors.items():
        first, *rest = error.splitlines() or [""]
        lines.append(f"   FAILED          {what}: {first}")
        lines += [f"                   {line}" for line in rest[:lines_per_error]]
    return lines


def print_summary(
    stack: Stack, dag_id: str, run_id: str, state: str, summary: dict[str, Any], errors: dict[str, str]
) -> None:
    """The training run: its state, each failed task's error, the version, the gate and where to look."""
    lines = ["", RULE, f" Nightshift: {dag_id} run {run_id}", f"   state           {state}"]
    lines += _failures(errors, 12)
    if errors:
        lines.append("   what to do      docs/runbook.md, section of the failed task; full log in the Airflow UI")
    version, champion = summary.get("model_version"), summary.get("champion_version")
    aliases = ", ".join(summary.get("aliases") or []) or "-"
    lines += [
        f"   model version   {stack.model} v{version}  aliases: {aliases}" if version else "   model version   -",
        f"   gate            {summary.get('gate_summary') or '-'}",
        f"   @champion       {stack.model} v{champion}" if champion else "   @champion       none",
        "",
        f"   Airflow UI      {stack.airflow_url}   login: admin",
        f"                   {where(stack, 'admin_password')}",
        f"   MLflow UI       {stack.mlflow_url}",
        f"   MLflow run      {summary.get('mlflow_run_url') or '-'}",
        f"   logs            {stack.log_dir}   (make logs)",
        "   stop            make down",
        RULE,
    ]
    print("\n".join(lines), flush=True)


def print_scoring_summary(
    stack: Stack, dag_id: str, states: dict[date, str], summary: dict[str, Any], errors: dict[str, str]
) -> None:
    """Rows per scored day, each failed task's error, and one query as the analyst login.

    Args:
        summary: ``schema``, ``rows`` and ``quarantined`` per day, ``analyst_query``, ``analyst_rows``
            and ``psql_url`` (the warehouse URL for the analyst login), from :func:`demo.scoring_facts`.
    """
    schema = summary["schema"]
    lines = ["", RULE, f" Nightshift: {dag_id}, {len(states)} day(s)"]
    for day, state in states.items():
        rows, quarantined = summary["rows"].get(day.isoformat()), summary["quarantined"].get(day.isoformat())
        lines.append(
            f"   {day}      {state:8s} {rows:>8,} rows in {schema}.{stack.model}_scores, {quarantined} quarantined"
        )
    lines += _failures(errors, 8)
    lines += ["", f"   analyst query   {summary['analyst_query']}"]
    lines += [f"                   {'  '.join(str(v) for v in row)}" for row in summary["analyst_rows"]]
    lines += [
        "",
        f"   psql            psql '{summary['psql_url']}'   (read-only role nightshift_analyst)",
        f"                   {where(stack, 'analyst_password')}",
        RULE,
    ]
    print("\n".join(lines), flush=True)


def print_monitoring_summary(stack: Stack, days: list[date], facts: dict[str, Any], timeout: float) -> None:
    """The drift verdict per day and the realised performance of the labelled days.

    Args:
        facts: ``drift`` (day -> its ``monitoring.drift_runs`` row) and ``performance`` rows, from
            :func:`demo.wait_for_monitoring`.
    """
    dag_id = f"{stack.model}_monitoring"
    found = facts["drift"]
    lines = ["", RULE, f" Nightshift: {dag_id} (runs on each published day)"]
    for day in days:
        if day not in found:
            lines.append(f"   {day}      no drift result within {timeout:.0f} s: see the {dag_id} runs in the UI")
            continue
        _, drifted, features, share, names, _report = found[day]
        which = f" ({', '.join(names)})" if names else ""
        lines.append(f"   {day}      drift in {drifted} of {features} features (share {share:.2f}){which}")
    if found:
        lines.append(f"   report          {found[max(found)][5]}")
    lines += [f"   {row['score_date']}      {realised(row)}" for row in facts["performance"]]
    lines += ["   tables          monitoring.drift_runs, drift_features, performance, alerts", RULE]
    print("\n".join(lines), flush=True)


# The realised metrics the summary shows per target type after binary's (multiclass, regression).
REALISED_METRICS = {"multiclass": ("accuracy", "f1_macro", "log_loss"), "regression": ("rmse", "mae", "r2")}


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def realised(row: dict[str, Any]) -> str:
    """One labelled day's realised performance (a ``monitoring.performance`` row), in the model's metrics."""
    head = f"realised on {row['labelled_rows']:,} labels: "
    if row["target_type"] == "binary":
        return head + (
            f"roc_auc {_num(row['roc_auc'])} (holdout {_num(row['holdout_roc_auc'])}), "
            f"precision {_num(row['precision'])}, recall {_num(row['recall'])}, "
            f"calibration error {_num(row['calibration_error'])}"
        )
    holdout = row["holdout"] or {}
    return head + ", ".join(
        f"{m} {_num(row[m])} (holdout {_num(holdout.get(m))})" for m in REALISED_METRICS[row["target_type"]]
    )


def print_up(stack: Stack) -> None:
    print(
        f"Airflow UI {stack.airflow_url} (login admin, {where(stack, 'admin_password')}), MLflow UI {stack.mlflow_url}"
    )


def print_logs(stack: Stack) -> None:
    print(f"service logs: {stack.log_dir}")
    for p in sorted(stack.log_dir.glob("*.log")):
        print(f"  {p}")
    print(f"task logs:    {stack.airflow_home / 'logs'}")
    print(f"postgres:     {stack.pg_dir / 'postgres.log'} (only for the project-local cluster)")


def print_status(stack: Stack, pids: dict[str, int | None]) -> None:
    for name, pid in pids.items():
        print(f"{name:14s} {'running, pid ' + str(pid) if pid else 'stopped'}")


def print_env(stack: Stack) -> None:
    env_file = stack.home / "env.sh"
    print(env_file.read_text() if env_file.exists() else "# run `make run` first")
