"""Operators that move ``@champion``: promotion after the gate (and an approval, when the spec asks for
one) and the rollback to an earlier version. Every move is logged in ``monitoring.promotions``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowSkipException

from nightshift_airflow.links import MlflowModelVersionLink
from nightshift_airflow.operators.base import NightshiftOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from include.nightshift.promotions import ChampionMove
    from include.nightshift.spec import ModelSpec


def requested_by(context: Context) -> str:
    """Who asked for this run: the user who triggered it, else what started it (``scheduler``, ...)."""
    dag_run = context["dag_run"]
    user = getattr(dag_run, "triggering_user_name", None)
    if user:
        return str(user)
    run_type = str(getattr(dag_run, "run_type", "") or "").rsplit(".", 1)[-1].lower()
    return {"scheduled": "scheduler", "asset_triggered": "asset event", "backfill": "backfill"}.get(
        run_type, f"{run_type or 'unknown'} run, no user"
    )


class _ChampionMover(NightshiftOperator):
    """Moves ``@champion`` and logs the move in ``monitoring.promotions`` (one step, see ``promotions``)."""

    operator_extra_links = (MlflowModelVersionLink(),)

    def move(self, context: Context, spec: ModelSpec, version: int, move: ChampionMove) -> int | None:
        from include.nightshift.promotions import move_champion

        with self.warehouse() as conn:
            previous = move_champion(conn, self.mlflow, spec, version, move)
        url = self.mlflow_hook.model_version_url(spec.name, version)
        context["ti"].xcom_push(key=MlflowModelVersionLink.url_key, value=url)
        return previous


class PromoteChampionOperator(_ChampionMover):
    """Move ``@champion`` to the gated version; skipped (with the reason) when the gate rejected it or the
    approver rejected the move.

    Its outlet Asset event tells downstream DAGs that a new champion exists.

    Args:
        decision: The gate's result (templated).
        approval: The approval task's result when the spec asks for one (templated); its responder is
            recorded as the approver.
    """

    template_fields = ("model", "decision", "approval")

    def __init__(self, *, decision: Any, approval: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.decision = decision
        self.approval = approval

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift.promotions import ChampionMove

        if not self.decision["passed"]:
            raise AirflowSkipException(f"champion unchanged: {self.decision['summary']}")
        if enters_shadow(spec, self.decision):
            self.enter_shadow(context, spec)
        approved_by = None
        if spec.promotion.approval:
            chosen = (self.approval or {}).get("chosen_options") or []
            if chosen != ["Approve"]:  # the approval task skips this one on Reject; this guards a cleared run
                raise AirflowSkipException(
                    f"champion unchanged: the promotion was not approved ({chosen or 'no answer'})"
                )
            approved_by = _user_name(self.approval.get("responded_by_user"))
        version = int(self.decision["version"])
        live = bool(self.decision.get("live"))
        move = ChampionMove(
            kind="shadow" if live else "force" if self.decision["verdict"] == "forced" else "gate",
            reason=self.decision["summary"] + (live_figures(spec, self.decision) if live else ""),
            requested_by=requested_by(context),
            dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
            approved_by=approved_by,
        )
        previous = self.move(context, spec, version, move)
        if live:
            self.end_shadow(context, spec)
        return {"champion_version": version, "previous_champion": previous, "approved_by": approved_by}

    def end_shadow(self, context: Context, spec: ModelSpec) -> None:
        """After a live promotion: the version leaves shadow (tag, ``@challenger`` dropped, decision row)."""
        from dataclasses import fields

        from include.nightshift import shadow

        names = {f.name for f in fields(shadow.LiveDecision)}
        decision = shadow.LiveDecision(**{k: v for k, v in self.decision.items() if k in names})
        with self.warehouse() as conn:
            shadow.end_shadow(conn, self.mlflow, spec, decision, shadow.Step(context["dag"].dag_id, context["run_id"]))

    def enter_shadow(self, context: Context, spec: ModelSpec) -> None:
        """``promotion.mode: shadow`` with a champion: the gated version enters shadow; this task is skipped."""
        from include.nightshift import shadow

        version, champion = int(self.decision["version"]), int(self.decision["champion_version"])
        step = shadow.Step(context["dag"].dag_id, context["run_id"])
        reason = f"passed the offline gate; scored beside champion version {champion} ({self.decision['summary']})"
        with self.warehouse() as conn:
            entry = shadow.enter_shadow(conn, self.mlflow, spec, version, champion, reason, step)
        self.log.info("%s", entry.summary(spec.name))
        raise AirflowSkipException(
            f"champion unchanged: {entry.summary(spec.name)}; it is promoted only if it wins on "
            f"{spec.promotion.shadow_days} labelled live days (promotion.mode shadow)"
        )


def live_figures(spec: ModelSpec, decision: dict[str, Any]) -> str:
    """The pooled live figures of both versions, for the promotion log's reason."""
    champion, challenger = decision.get("champion") or {}, decision.get("challenger") or {}
    metrics = sorted(set(spec.gate.floors) | set(spec.gate.max_regression) | {spec.headline_metric})
    parts = [
        f"{m} {challenger[m]:.4f} vs champion {champion[m]:.4f}" for m in metrics if m in champion and m in challenger
    ]
    return f"; live figures: {', '.join(parts)}" if parts else ""


def enters_shadow(spec: ModelSpec, decision: dict[str, Any]) -> bool:
    """A passing, unforced challenger enters shadow when the spec asks for it and a champion exists."""
    return (
        spec.promotion.mode == "shadow"
        and not decision.get("live")
        and decision.get("verdict") == "passed"
        and decision.get("champion_version") is not None
    )


def _user_name(user: Any) -> str | None:
    if isinstance(user, dict):
        return str(user.get("name") or user.get("id") or "") or None
    return str(user) if user else None


class RollbackChampionOperator(_ChampionMover):
    """Move ``@champion`` back to an earlier version that exists and was once validated.

    Reads ``params``: ``version`` and ``reason`` (both required). Skips when that version already
    holds ``@champion``.
    """

    def run(self, context: Context, spec: ModelSpec) -> dict[str, Any]:
        from include.nightshift.errors import ParamsError
        from include.nightshift.promotions import ChampionMove, current_champion, rollback_target

        params = context["params"]
        version = str(params.get("version") or "").strip()
        reason = (params.get("reason") or "").strip()
        if not version:
            raise ParamsError("param 'version' is empty: give the model version to roll back to, e.g. 3")
        if len(reason) < 10:
            raise ParamsError(
                f"param 'reason' is {reason!r}: say why in at least 10 characters (it is recorded with the rollback)"
            )
        mv = rollback_target(self.mlflow, spec, version)
        target = int(mv.version)
        if current_champion(self.mlflow, spec) == target:
            raise AirflowSkipException(f"version {mv.version} of {spec.name} already holds @champion: nothing to do")
        move = ChampionMove(
            kind="rollback",
            reason=reason,
            requested_by=requested_by(context),
            dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
        )
        previous = self.move(context, spec, target, move)
        self.log.info("%s rolled back from version %s to %s: %s", spec.name, previous, target, reason)
        return {"champion_version": target, "previous_champion": previous}


class ApprovePromotionOperator(ApprovalOperator):
    """Ask a person in the Airflow UI (Required actions) to approve moving ``@champion`` to the gated
    version; only asked when the gate passed. Reject, or no answer in time, skips the promotion.

    Args:
        model: The model name, for the subject line.
        decision: The gate's result (templated).
    """

    template_fields = (*ApprovalOperator.template_fields, "decision")

    def __init__(self, *, model: str, decision: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subject", f"Promote a new {model} champion?")
        kwargs.setdefault("defaults", [ApprovalOperator.REJECT])  # a timeout is a rejection, not a failure
        super().__init__(**kwargs)
        self.model = model
        self.decision = decision

    def execute(self, context: Context) -> Any:
        from include.nightshift.spec import load_model

        if not self.decision["passed"]:
            raise AirflowSkipException(f"no approval needed: {self.decision['summary']}")
        if enters_shadow(load_model(self.model), self.decision):
            raise AirflowSkipException(
                "no approval needed now: the challenger enters shadow; approval is asked before the live promotion"
            )
        self.subject = f"Promote {self.model} version {self.decision['version']} to @champion?"
        current = self.decision.get("champion_version")
        self.body = (
            f"**{self.model} version {self.decision['version']}** would replace "
            f"{'version ' + str(current) if current else 'nobody (there is no champion yet)'} as `@champion`.\n\n"
            f"{self.decision['summary']}\n\nApprove to move the alias now; Reject keeps the current champion. "
            "Your name is recorded in `monitoring.promotions`."
        )
        return super().execute(context)
