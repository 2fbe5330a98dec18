"""The markdown docs each generated DAG shows in the Airflow UI (``doc_md``), filled in from the spec."""

from __future__ import annotations

TRAINING_DOC = """
### {name} training

{description}

**What it does:** validates the landing data of the training window (GX suites
`{name}_raw_features`, `{name}_raw_labels`), joins features with labels and splits by time (the
last {holdout} labelled days are the holdout), validates the training set (`{name}_training_set`),
trains a scikit-learn pipeline in one MLflow run, scores the same holdout with the challenger and
the current `@champion`, registers the challenger (alias `challenger`), and applies the gate:
floors {floors}, largest regression against the champion {regression}. When the gate passes,
`@champion` moves to the new version and the Asset `{name}_champion` is updated.

**Schedule:** `{schedule}` (UTC), whenever `{name}_monitoring` requests retraining (Asset
`{name}_retraining`: drift or performance decay), or trigger with the form. Leave everything empty
for the usual run: the window ends on the last day whose labels have landed ({delay} days ago).

**Inputs:** `{features_uri}`, `{labels_uri}` ({{root}} = Variable `nightshift_landing_root`).
**Outputs:** MLflow experiment `nightshift-{name}`, registered model `{name}`.
**Owner:** {owner}. **Runbook:** `docs/runbook.md`.
"""

SCORING_DOC = """
### {name} scoring

{description}

**What it does:** pins the version holding `@champion` for the whole run (no champion: the run fails
at once), checks the day's features `{features_uri}` (GX suite `{name}_scoring_input`) while it scores
them in record batches and loads them with COPY into a staging table ({shard_rows:,} rows per mapped
shard), validates the loaded rows in the database (GX suite `{name}_scored_output`) while it builds
their key, then, only if both suites passed, swaps them in as the
day's partition of `{schema}.{name}_scores` in one transaction and updates the Asset `{name}_scores`.
Rows breaking a row rule go to `{schema}.{name}_quarantine`; above {max_q:.1%} of the day the run fails
and publishes nothing. **Deadline:** on-call is told when a run has not finished {due} minutes after
it was queued (`monitoring.scores_due_minutes`).

**Schedule:** `{schedule}` (UTC), scoring the features of the run's date. **Re-run a day:** trigger with
`run_date`; the day's rows are replaced atomically. Two runs for one date never interleave: the second
waits (retries) until the first is done.

**Inputs:** `{features_uri}` ({{root}} = Variable `nightshift_landing_root`), the model version
holding `@champion`. **Outputs:** `{schema}.{name}_scores` (a partition per day),
`{schema}.{name}_latest_scores`, `{schema}.{name}_quarantine`, Asset `{name}_scores`. Analysts read
them with the role `nightshift_analyst`.
**Owner:** {owner}. **Runbook:** `docs/runbook.md`.
"""

MONITORING_DOC = """
### {name} monitoring

**What it does:** for each newly published day of `{schema}.{name}_scores` (Asset `{name}_scores`),
compares the day's features `{features_uri}` with the reference sample saved with the model version
that scored it: an Evidently report (data drift preset and data summary) on a seeded sample of at
most {sample_rows:,} rows, saved under `{{reports root}}/{name}/drift/date=<day>/` and in that
version's MLflow run, with per-feature verdicts in `monitoring.drift_features` and a summary in
`monitoring.drift_runs`. When the labels of the day scored {delay} days earlier have landed, it
measures those scores (ROC AUC, PR AUC, precision, recall, Brier score, calibration error) into
`monitoring.performance`.

**Retraining:** when at least {drift_share:.0%} of the features drift, or realised performance breaks
`monitoring.performance_floors` {floors} or falls more than `monitoring.max_decay` {decay} below the
model's holdout, `request_retraining` tells on-call and updates the Asset `{name}_retraining`,
which schedules `{name}_training`. Otherwise it is skipped.

**Schedule:** whenever `{name}_scoring` publishes a day (Asset `{name}_scores`). **Re-run a day:**
trigger with `score_date`; the day's rows and report are replaced.

**Inputs:** the published scores, `{features_uri}`, the labels, the reference sample in MLflow.
**Outputs:** `monitoring.drift_runs`, `monitoring.drift_features`, `monitoring.performance`,
`monitoring.alerts`, the HTML reports (Variable `nightshift_reports_root`), Asset `{name}_retraining`.
**Owner:** {owner}. **Runbook:** `docs/runbook.md`.
"""

SHADOW_DOC = """
### {name} shadow

**What it does:** after `{name}_scoring` publishes a day (Asset `{name}_scores`), scores the same day
with the version holding `@challenger` in shadow (it passed the offline gate; `promotion.mode: shadow`)
into `{schema}.{name}_shadow_scores`: the same columns, partitions and lineage as the scores, never in
`{name}_scores` or the latest-scores view. Skipped when no challenger is in shadow. A failure alerts
on-call and never touches the champion's scores. `{name}_monitoring` compares both versions on each
labelled day and promotes or retires the challenger after {days} labelled days.

**Re-run a day:** trigger with `run_date`. **Owner:** {owner}. **Runbook:** `docs/runbook.md`.
"""

ROLLBACK_DOC = """
### {name} rollback

**What it does:** moves `@champion` of the registered model `{name}` back to the version you choose,
after checking that it exists and was once validated (it passed the gate or held `@champion`
before). The move is recorded on the model version (tags `nightshift.promotion_*`,
`nightshift.requested_by`, `nightshift.previous_champion`) and as a row of `monitoring.promotions`
(who, why, from and to which version), and updates the Asset `{name}_champion`. The next
`{name}_scoring` run scores with that version; re-run recent days with `run_date` to re-score them.

**Schedule:** none: trigger it with the form (version and reason are required).
**Inputs:** MLflow registry. **Outputs:** alias `@champion`, `monitoring.promotions`.
**Owner:** {owner}. **Runbook:** `docs/runbook.md#rollback-rollback`.
"""
