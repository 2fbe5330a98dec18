"""Names that become SQL identifiers, MLflow model names, URI segments or Airflow ids, and the spec's base model."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

SAFE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
SAFE_NAME_RULE = "lower-case letter first, then lower-case letters, digits or '_', at most 40 characters"
SafeName = Annotated[str, Field(description=SAFE_NAME_RULE)]


def check_safe_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a safe identifier, else raise ``ValueError`` naming the rule."""
    if not isinstance(value, str) or not SAFE_NAME.match(value):
        raise ValueError(f"{what} {value!r} is not allowed: {SAFE_NAME_RULE}")
    return value


class Frozen(BaseModel):
    """A section of a spec: immutable, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")
