"""The layering the architecture promises: the library under include/ never imports Airflow, and MLflow
credentials never go through the process environment."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

INCLUDE = ROOT / "include"


def _imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_module_under_include_imports_airflow_anywhere_in_its_code():
    modules = sorted(INCLUDE.rglob("*.py"))
    assert len(modules) > 20, "the library's modules were found"
    offenders = {
        str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n == "airflow" or n.startswith("airflow."))
        for p in modules
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_every_library_module_loads_no_airflow():
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in sorted(INCLUDE.rglob("*.py"))
    ]
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_mlflow_credentials_go_in_a_request_header_not_the_environment():
    from mlflow.tracking.request_header.registry import resolve_request_headers

    from include.nightshift import tracking

    before = dict(os.environ)
    client = tracking.mlflow_client("http://127.0.0.1:5999", "trainer", "s3cret-pass")
    try:
        assert client.tracking_uri == "http://127.0.0.1:5999", "no credentials in the URI MLflow prints"
        assert resolve_request_headers()["Authorization"] == "Basic dHJhaW5lcjpzM2NyZXQtcGFzcw=="
        assert dict(os.environ) == before
        assert not any("s3cret-pass" in v for v in os.environ.values())
    finally:
        tracking.set_credentials("http://127.0.0.1:5999", None, None)
    assert "Authorization" not in resolve_request_headers(), "forgotten again"
