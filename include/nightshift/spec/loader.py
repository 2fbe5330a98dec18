"""Loading spec files: every error names the file, the key, the observed value and the rule."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from include.nightshift.errors import SpecError
from include.nightshift.spec.model import ModelSpec
from include.nightshift.spec.names import check_safe_name

DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def _format_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid model spec ({err.error_count()} problem(s))"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<top level>"
        # Show the observed value for the key when there is one.
        value = e.get("input", "<missing>") if e["type"] != "missing" else "<missing>"
        if isinstance(value, dict) and e["type"] not in ("missing",):
            value = "{...}"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  - key '{loc}': {msg} (got {value!r})")
    return "\n".join(lines)


def validate_spec(raw: dict[str, Any]) -> ModelSpec:
    """Validate a spec given as a mapping; the rules that depend on ``target.type`` see it as context.

    Raises:
        ValidationError: every problem, each with its key.
    """
    target = raw.get("target")
    kind = target.get("type", "binary") if isinstance(target, dict) else None
    return ModelSpec.model_validate(raw, context={"target_type": kind})


def load_spec(path: str | Path) -> ModelSpec:
    """Load and validate one spec file.

    Args:
        path: A YAML file.

    Returns:
        The frozen, validated spec.

    Raises:
        SpecError: The file cannot be read, is not YAML, or breaks a rule; the message names the file,
            the key, the observed value and the rule.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read model spec: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a model spec must be a mapping, got {type(raw).__name__}")
    try:
        spec = validate_spec(raw)
    except ValidationError as exc:
        raise SpecError(_format_error(path, exc)) from None
    if spec.name != path.stem:
        raise SpecError(f"{path}: key 'name' is {spec.name!r} but the file is named {path.name!r}; they must match")
    return spec


def load_specs(directory: str | Path) -> list[ModelSpec]:
    """Load every ``*.yaml`` spec in ``directory``, sorted by name. Raises on the first bad file."""
    return [load_spec(p) for p in sorted(Path(directory).glob("*.yaml"))]


def models_dir() -> Path:
    """Where the specs are: ``NIGHTSHIFT_MODELS_DIR`` if set, else ``include/models``."""
    return Path(os.environ.get("NIGHTSHIFT_MODELS_DIR") or DEFAULT_MODELS_DIR)


def load_model(name: str) -> ModelSpec:
    """Load the spec of model ``name`` from :func:`models_dir`."""
    try:
        check_safe_name(name, "model name")
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    return load_spec(models_dir() / f"{name}.yaml")
