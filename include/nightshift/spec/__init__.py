"""Model specs: one YAML file per model under ``include/models/``, loaded into frozen objects.

A spec is the only thing a data team writes to add a model; the DAG factory, the GX suites and the
training code all read it. Every error names the file, the key, the observed value and the rule.

- :mod:`.names`: safe names (they become SQL identifiers, MLflow names, paths and Airflow ids);
- :mod:`.metrics`: the metrics by problem type, and which way is better;
- :mod:`.estimators`: built-in estimators per type, dotted import paths, hyperparameter checks;
- :mod:`.sections`: the sections (features, target, landing, training, gate, ...);
- :mod:`.model`: ``ModelSpec`` and its derived features;
- :mod:`.loader`: reading and validating files.
"""

from include.nightshift.spec.estimators import BUILTIN, builtin_names
from include.nightshift.spec.loader import (
    DEFAULT_MODELS_DIR,
    load_model,
    load_spec,
    load_specs,
    models_dir,
    validate_spec,
)
from include.nightshift.spec.metrics import HEADLINE, HIGHER_IS_BETTER, METRICS, TARGET_TYPES, TargetType
from include.nightshift.spec.model import ModelSpec
from include.nightshift.spec.names import SAFE_NAME, SAFE_NAME_RULE, check_safe_name
from include.nightshift.spec.sections import (
    Alerts,
    Feature,
    Gate,
    Landing,
    Monitoring,
    Promotion,
    Runs,
    Schedules,
    Scoring,
    Target,
    Training,
)

# The built-in estimators of binary models (the default type), as the training form lists them.
ALGORITHMS: tuple[str, ...] = builtin_names("binary")

__all__ = [
    "ALGORITHMS",
    "BUILTIN",
    "DEFAULT_MODELS_DIR",
    "HEADLINE",
    "HIGHER_IS_BETTER",
    "METRICS",
    "SAFE_NAME",
    "SAFE_NAME_RULE",
    "TARGET_TYPES",
    "Alerts",
    "Feature",
    "Gate",
    "Landing",
    "ModelSpec",
    "Monitoring",
    "Promotion",
    "Runs",
    "Schedules",
    "Scoring",
    "Target",
    "TargetType",
    "Training",
    "builtin_names",
    "check_safe_name",
    "load_model",
    "load_spec",
    "load_specs",
    "models_dir",
    "validate_spec",
]
