"""Just enough of Airflow's REST API v2 to trigger and follow runs, with a JWT login."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from scripts.stack.settings import Stack, StackError

log = logging.getLogger("nightshift.stack")

TERMINAL = {"success", "failed"}


class ApiError(StackError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _q(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


class AirflowApi:
    """A client of Airflow's REST API v2 that logs in with a user name and password."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base = base_url.rstrip("/")
        self.username, self.password = username, password
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            body = self._raw("POST", "/auth/token", {"username": self.username, "password": self.password})
            self._token = body["access_token"]
        return self._token

    def _raw(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise ApiError(exc.code, f"{method} {path} -> HTTP {exc.code}: {detail}") from None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return self._raw(method, path, body, {"Authorization": f"Bearer {self.token()}"})

    def wait_for_dag(self, dag_id: str, timeout: float = 300) -> None:
        """Wait until the DAG processor has parsed ``dag_id``; fail with the import errors otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call("GET", f"/api/v2/dags/{dag_id}")
                return
            except ApiError as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    errors = self.call("GET", "/api/v2/importErrors").get("import_errors", [])
                    raise StackError(f"DAG {dag_id} is not available: {exc}; import errors: {errors}") from None
            time.sleep(2)

    def trigger(
        self,
        dag_id: str,
        conf: dict[str, Any] | None = None,
        logical_date: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Unpause ``dag_id`` and trigger a run; returns its run id."""
        self.unpause(dag_id)
        body: dict[str, Any] = {"logical_date": logical_date, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/api/v2/dags/{dag_id}?update_mask=is_paused", {"is_paused": False})

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 1800) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            run = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}")
            if run["state"] != last:
                log.info("%s %s: %s", dag_id, run_id, run["state"])
                last = run["state"]
            if run["state"] in TERMINAL:
                return run
            time.sleep(3)
        raise StackError(f"{dag_id} run {run_id} did not finish within {timeout:.0f}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        res = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances")
        return res["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> list[dict]:
        """The structured log events of one try of a task (``event``, ``level``, ``error_detail``, ...)."""
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/logs/{max(try_number, 1)}"
            f"?map_index={map_index}"
        )
        return [e for e in self.call("GET", path).get("content") or [] if isinstance(e, dict)]

    def failed_task_errors(self, dag_id: str, run_id: str) -> dict[str, str]:
        """The exception message of each failed task, read from its structured task log."""
        errors = {}
        for ti in self.task_instances(dag_id, run_id):
            if ti["state"] != "failed":
                continue
            events = self.task_log(dag_id, run_id, ti["task_id"], ti.get("try_number") or 1, ti.get("map_index", -1))
            details = [d for e in events if isinstance(e, dict) for d in e.get("error_detail") or []]
            errors[ti["task_id"]] = details[0]["exc_value"] if details else "(no error in the task log)"
        return errors


def api_for(stack: Stack) -> AirflowApi:
    """A client of the stack's API server, logged in as ``admin``."""
    password = stack.secrets().get("admin_password")
    if not password:
        raise StackError(f"no admin password in {stack.secrets_file}: bring the stack up first (make up)")
    return AirflowApi(stack.airflow_url, "admin", password)
