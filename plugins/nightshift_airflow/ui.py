"""The Nightshift page inside the Airflow UI, and the GX validation result page behind the tasks' link.

A FastAPI app that the plugin mounts on the API server at ``/nightshift`` and shows in the UI's
navigation (an Airflow 3 external view with a ``url_route``, so it is embedded in the UI's frame).

Airflow does not protect plugin apps on its own: every route here asks the auth manager for the user
(the UI's ``_token`` cookie, or a bearer token), sends a browser to the login page when there is
none, and shows only the models whose DAGs the user may read. MLflow and Postgres calls are blocking
and run in a worker thread, off the API server's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from nightshift_airflow.links import airflow_base_url

if TYPE_CHECKING:
    from collections.abc import Callable

    from include.nightshift.overview import ModelOverview
    from include.nightshift.validation import TaskKey

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"

app = FastAPI(title="Nightshift", description="Champions, gate decisions, scored days and drift of every model.")


def _templates() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["when"] = _when
    env.filters["pct"] = lambda v: f"{100 * v:.0f}%" if v is not None else "–"
    return env


def render_overview(
    models: list[ModelOverview], mlflow: str, airflow: str, problems: list[str], now: datetime, user: str
) -> str:
    """The Nightshift page: one card per model (``mlflow`` and ``airflow`` are the UIs' addresses)."""
    return (
        _templates()
        .get_template("overview.html")
        .render(
            models=models,
            mlflow=mlflow,
            airflow=airflow,
            problems=problems,
            sparkline=sparkline,
            quote=urllib.parse.quote,
            now=now,
            user=user,
        )
    )


def render_validation(
    dag_id: str,
    run_id: str,
    task_id: str,
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    problem: str | None,
    task_url: str,
    result_uri: str | None = None,
) -> str:
    """A task's GX result page: the summary, ``rows`` from ``validation.expectation_rows``, and where the
    full result was read (``result_uri``, derived by the platform, not the summary's)."""
    values = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "summary": summary, "rows": rows}
    template = _templates().get_template("validation.html")
    return template.render(**values, problem=problem, task_url=task_url, result_uri=result_uri)


def _when(value: datetime | None) -> str:
    if value is None:
        return "–"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


async def _user(request: Request) -> Any:
    """The signed-in user, or None."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    try:
        return await resolve_user_from_token(token)
    except HTTPException:
        return None


def _login(request: Request) -> Response:
    from airflow.api_fastapi.app import get_auth_manager

    return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status.HTTP_303_SEE_OTHER)


def _may_read_dag(user: Any, dag_id: str, entity: Any = None) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    return get_auth_manager().is_authorized_dag(
        method="GET", user=user, access_entity=entity, details=DagDetails(id=dag_id)
    )


def _overviews(user: Any) -> tuple[list[ModelOverview], str, list[str]]:
    """Blocking: every readable model's overview, the MLflow UI address, and problems with the specs."""
    from include.nightshift.errors import SpecError
    from include.nightshift.overview import model_overview
    from include.nightshift.spec import load_specs, models_dir
    from nightshift_airflow.hooks import MlflowHook, WarehouseHook

    problems: list[str] = []
    try:
        specs = [s for s in load_specs(models_dir()) if _may_read_dag(user, f"{s.name}_scoring")]
    except SpecError as exc:
        return [], "", [str(exc)]
    hook = MlflowHook()
    client = hook.get_conn()
    try:
        conn = WarehouseHook().get_conn()
    except Exception as exc:
        conn = None
        problems.append(f"warehouse: {type(exc).__name__}: {str(exc)[:300]}")
    try:
        return [model_overview(spec, client, conn) for spec in specs], hook.ui_url, problems
    finally:
        if conn is not None:
            conn.close()


@app.get("/", response_class=HTMLResponse, summary="The Nightshift page: every model at a glance")
async def overview_page(request: Request) -> Response:
    user = await _user(request)
    if user is None:
        return _login(request)
    models, mlflow_url, problems = await asyncio.to_thread(_overviews, user)
    html = render_overview(models, mlflow_url, airflow_base_url(), problems, datetime.now(UTC), user.get_name())
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@app.get("/api/models", summary="The same facts as JSON")
async def overview_json(request: Request) -> Response:
    user = await _user(request)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Not authenticated")
    models, mlflow_url, problems = await asyncio.to_thread(_overviews, user)
    return JSONResponse({"models": [m.as_dict() for m in models], "mlflow_url": mlflow_url, "problems": problems})


# What the result page shows of a summary XCom (untrusted: only these keys, with these defaults).
_SUMMARY_KEYS: dict[str, Any] = {
    "suite": None,
    "success": False,
    "statistics": {},
    "rows": None,
    "failures": [],
    "result_uri": None,
}


def _shown(summary: dict[str, Any]) -> dict[str, Any]:
    shown = {k: summary.get(k, default) for k, default in _SUMMARY_KEYS.items()}
    for k in ("statistics", "failures"):  # a value of the wrong type is dropped, not rendered
        if not isinstance(shown[k], type(_SUMMARY_KEYS[k])):
            shown[k] = _SUMMARY_KEYS[k]
    return shown


def _work_root() -> str | None:
    from airflow.models.variable import Variable

    return Variable.get("nightshift_work_root", default_var=None) or None


def _summary_xcom(key: TaskKey) -> Any:
    """Blocking: the task's XCom ``summary`` as stored (any JSON value: it is untrusted), or None."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(
            run_id=key.run_id,
            key="summary",
            dag_ids=key.dag_id,
            task_ids=key.task_id,
            map_indexes=key.map_index,
            limit=1,
        )
        row = session.scalars(query).first()
        return XComModel.deserialize_value(row) if row is not None else None


def read_result(
    stored: Any, key: TaskKey, work_root: str | None, read_bytes: Callable[[str], bytes]
) -> tuple[dict[str, Any], dict[str, Any], str | None, str | None]:
    """A task's summary, its full GX result, a problem reading it, and where the result was read.

    The full result's location is derived from the work root and the task's identity
    (``validation.result_uri``), the same way the task wrote it. The summary's own ``result_uri`` is
    untrusted (XComs can be written over the REST API) and never opened: a summary that names another
    location is refused, and nothing of it is shown.
    """
    import json

    from include.nightshift.validation import InvalidTaskKeyError, claimed_elsewhere, result_uri

    if not isinstance(stored, dict):
        return _shown({}), {}, "the task's summary is not a validation summary; nothing was read", None
    summary = _shown(stored)
    if not work_root:
        return summary, {}, "no work root is set (Variable nightshift_work_root): no full result to read", None
    try:
        uri = result_uri(work_root, key)
    except InvalidTaskKeyError as exc:
        return summary, {}, str(exc), None
    claimed = claimed_elsewhere(summary, uri)
    if claimed is not None:
        log.warning("refused the summary XCom of %s: it names %s, not %s", key, claimed[:300], uri)
        problem = (
            f"refused: the task's summary names its full result at {claimed[:300]}, which is not where the "
            f"platform keeps it ({uri}); nothing was read. Was the XCom edited?"
        )
        return _shown({}), {}, problem, None
    if not summary["result_uri"]:
        return summary, {}, "the task kept no full result (no work root); the failed rules are listed above", None
    try:
        return summary, json.loads(read_bytes(uri)), None, uri
    except Exception as exc:
        return summary, {}, f"the full result at {uri} could not be read: {type(exc).__name__}: {str(exc)[:300]}", uri


def _validation(key: TaskKey) -> tuple[dict[str, Any], dict[str, Any], str | None, str | None] | None:
    """Blocking: :func:`read_result` for the task ``key`` (``file://`` or ``s3://`` through the
    ``aws_default`` connection), or None when the task has no summary."""
    from nightshift_airflow.hooks import storage_from_connection

    stored = _summary_xcom(key)
    if not stored:
        return None
    return read_result(stored, key, _work_root(), lambda uri: storage_from_connection().read_bytes(uri))


@app.get("/validation", response_class=HTMLResponse, summary="A task's Great Expectations validation result")
async def validation_page(
    request: Request,
    dag_id: str = Query(..., max_length=250),
    run_id: str = Query(..., max_length=250),
    task_id: str = Query(..., max_length=250),
    map_index: int = -1,
) -> Response:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    from include.nightshift.validation import InvalidTaskKeyError, TaskKey, expectation_rows

    user = await _user(request)
    if user is None:
        return _login(request)
    try:
        key = TaskKey(dag_id, run_id, task_id, map_index)
    except InvalidTaskKeyError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    if not _may_read_dag(user, dag_id, DagAccessEntity.XCOM):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"you may not read the results of {dag_id}")
    found = await asyncio.to_thread(_validation, key)
    if found is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no validation result for {dag_id}.{task_id} in run {run_id} (yet)"
        )
    task_url = (
        f"{airflow_base_url()}/dags/{urllib.parse.quote(dag_id)}/runs/{urllib.parse.quote(run_id, safe='')}"
        f"/tasks/{urllib.parse.quote(task_id)}"
    )
    summary, result, problem, uri = found
    rows = expectation_rows(result)
    html = render_validation(dag_id, run_id, task_id, summary, rows, problem, task_url, uri)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def sparkline(values: list[float], threshold: float | None, width: int = 240, height: int = 48) -> str:
    """An inline SVG of drift shares (0 to 1) over days, with the retraining threshold as a line."""
    if not values:
        return ""
    step = width / max(len(values), 1)
    bars = []
    for i, v in enumerate(values):
        h = max(1.0, v * (height - 2))
        colour = "#c0392b" if threshold is not None and v > threshold else "#2e86c1"
        bars.append(
            f'<rect x="{i * step + 1:.1f}" y="{height - h:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="{colour}"><title>{v:.0%}</title></rect>'
        )
    line = ""
    if threshold is not None:
        y = height - threshold * (height - 2)
        line = f'<line x1="0" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#7f8c8d" stroke-dasharray="3 2"/>'
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="drift share per day">{"".join(bars)}{line}</svg>'
    )
