"""The evaluation gate: may the challenger replace the champion?

A rejection is a decision, not an error: the caller records it and the run succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from include.nightshift.spec import HIGHER_IS_BETTER, Gate


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: tuple[str, ...]
    checks: tuple[str, ...] = field(default=())
    forced: bool = False
    force_reason: str = ""

    @property
    def verdict(self) -> str:
        if self.passed:
            return "forced" if self.forced else "passed"
        return "rejected"

    def summary(self) -> str:
        """One line for the task log, the MLflow tags and the run summary."""
        if self.forced:
            return f"gate FORCED by operator ({self.force_reason}); failed checks: " + "; ".join(self.reasons)
        if self.passed:
            return "gate passed: " + "; ".join(self.checks)
        return "gate rejected: " + "; ".join(self.reasons)


def decide(
    gate: Gate,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    force_promote: bool = False,
    force_reason: str = "",
    champion_note: str | None = None,
) -> GateDecision:
    """Compare the challenger's holdout metrics with the floors and with the champion's.

    Args:
        gate: Floors and allowed regressions from the spec.
        challenger: The challenger's metrics on the holdout.
        champion: The champion's metrics on the same holdout, or None when there is no champion
            (the first run promotes when the floors pass).
        force_promote: Promote whatever the checks say; ``force_reason`` must say why.
        champion_note: Why a champion that exists was not compared (its metrics are then None).
    """
    failed: list[str] = []
    passed: list[str] = []
    for metric, floor in sorted(gate.floors.items()):
        value = challenger[metric]
        ok = value >= floor if HIGHER_IS_BETTER[metric] else value <= floor
        rule = ">=" if HIGHER_IS_BETTER[metric] else "<="
        (passed if ok else failed).append(f"{metric} {value:.4f} {'' if ok else 'not '}{rule} floor {floor}")
    if champion is None:
        passed.append(f"not compared with the champion: {champion_note}" if champion_note else "no champion yet")
    else:
        for metric, allowed in sorted(gate.max_regression.items()):
            ch, cur = challenger[metric], champion[metric]
            regression = (cur - ch) if HIGHER_IS_BETTER[metric] else (ch - cur)
            ok = regression <= allowed + 1e-12
            text = f"{metric} {ch:.4f} vs champion {cur:.4f} (regression {regression:+.4f}, allowed {allowed})"
            (passed if ok else failed).append(text)
    if failed and force_promote:
        return GateDecision(True, tuple(failed), tuple(passed), forced=True, force_reason=force_reason)
    return GateDecision(not failed, tuple(failed), tuple(passed))
