"""Apply an astro-CLI ``airflow_settings.yaml`` (connections, variables, pools) to the Airflow DB.

The astro CLI does this on ``astro dev start``; without it, the embedded stack runs this script
after ``airflow db migrate``. Existing entries with the same id are replaced, so it is idempotent.
``${VAR}`` and ``${VAR:-default}`` in values are expanded from the environment.

    python scripts/airflow_settings.py airflow_settings.yaml
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand(value: Any, where: str) -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in strings, recursively."""
    if isinstance(value, dict):
        return {k: expand(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise SystemExit(f"airflow_settings.yaml: {where} uses ${{{name}}} but {name} is not set")
        return default

    return _VAR.sub(sub, value)


def load(path: Path) -> dict[str, list[dict[str, Any]]]:
    raw = yaml.safe_load(path.read_text()) or {}
    section = raw.get("airflow") or {}
    out = {}
    for kind in ("connections", "variables", "pools"):
        items = section.get(kind) or []
        out[kind] = [expand(item, f"airflow.{kind}[{i}]") for i, item in enumerate(items)]
    return out


def apply(settings: dict[str, list[dict[str, Any]]]) -> str:
    from airflow.models import Connection, Pool, Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        for c in settings["connections"]:
            extra = c.get("conn_extra")
            session.query(Connection).filter(Connection.conn_id == c["conn_id"]).delete()
            session.add(
                Connection(
                    conn_id=c["conn_id"],
                    conn_type=c["conn_type"],
                    host=c.get("conn_host") or None,
                    schema=c.get("conn_schema") or None,
                    login=c.get("conn_login") or None,
                    password=c.get("conn_password") or None,
                    port=int(c["conn_port"]) if c.get("conn_port") not in (None, "") else None,
                    extra=json.dumps(extra) if isinstance(extra, dict) else (extra or None),
                )
            )
    for v in settings["variables"]:
        Variable.set(v["variable_name"], v["variable_value"])
    for p in settings["pools"]:
        Pool.create_or_update_pool(
            name=p["pool_name"],
            slots=int(p["pool_slot"]),
            description=p.get("pool_description") or "",
            include_deferred=False,
        )
    return (
        f"applied {len(settings['connections'])} connections, {len(settings['variables'])} variables, "
        f"{len(settings['pools'])} pools"
    )


if __name__ == "__main__":
    print(apply(load(Path(sys.argv[1] if len(sys.argv) > 1 else "airflow_settings.yaml"))))
