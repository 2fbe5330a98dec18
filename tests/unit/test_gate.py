"""The evaluation gate: floors, regressions against the champion, and the operator's override."""

from __future__ import annotations

import pytest

from include.nightshift.gate import GateDecision, decide
from include.nightshift.spec import Gate

pytestmark = pytest.mark.unit

CHURN_GATE = Gate(floors={"roc_auc": 0.70, "pr_auc": 0.30}, max_regression={"roc_auc": 0.01, "pr_auc": 0.02})
LOSS_GATE = Gate(floors={"log_loss": 0.50}, max_regression={"log_loss": 0.02})

GOOD = {"roc_auc": 0.80, "pr_auc": 0.45, "log_loss": 0.35}


def test_first_run_passes_when_the_floors_pass():
    decision = decide(CHURN_GATE, GOOD, champion=None)
    assert decision.passed and not decision.forced
    assert decision.verdict == "passed"
    assert decision.reasons == ()
    summary = decision.summary()
    assert summary.startswith("gate passed: ")
    assert "no champion yet" in summary
    assert "roc_auc 0.8000 >= floor 0.7" in summary


def test_first_run_below_a_floor_is_rejected():
    decision = decide(CHURN_GATE, {**GOOD, "pr_auc": 0.25}, champion=None)
    assert not decision.passed
    assert decision.verdict == "rejected"
    assert decision.summary() == "gate rejected: pr_auc 0.2500 not >= floor 0.3"


@pytest.mark.parametrize(
    ("challenger", "champion", "failed"),
    [
        pytest.param(
            {"roc_auc": 0.69, "pr_auc": 0.45},
            {"roc_auc": 0.69, "pr_auc": 0.45},
            ["roc_auc 0.6900 not >= floor 0.7"],
            id="below-floor-even-if-as-good-as-champion",
        ),
        pytest.param(
            {"roc_auc": 0.78, "pr_auc": 0.45},
            {"roc_auc": 0.80, "pr_auc": 0.45},
            ["roc_auc 0.7800 vs champion 0.8000 (regression +0.0200, allowed 0.01)"],
            id="roc-auc-regression-beyond-allowed",
        ),
        pytest.param(
            {"roc_auc": 0.65, "pr_auc": 0.40},
            {"roc_auc": 0.80, "pr_auc": 0.45},
            [
                "roc_auc 0.6500 not >= floor 0.7",
                "pr_auc 0.4000 vs champion 0.4500 (regression +0.0500, allowed 0.02)",
                "roc_auc 0.6500 vs champion 0.8000 (regression +0.1500, allowed 0.01)",
            ],
            id="floor-and-regressions-all-reported",
        ),
    ],
)
def test_rejections_name_metric_value_and_rule(challenger, champion, failed):
    decision = decide(CHURN_GATE, challenger, champion)
    assert not decision.passed
    assert decision.verdict == "rejected"
    assert sorted(decision.reasons) == sorted(failed)
    for reason in failed:
        assert reason in decision.summary()


@pytest.mark.parametrize(
    ("challenger", "champion"),
    [
        pytest.param({"roc_auc": 0.83, "pr_auc": 0.50}, {"roc_auc": 0.80, "pr_auc": 0.45}, id="improvement"),
        pytest.param({"roc_auc": 0.795, "pr_auc": 0.44}, {"roc_auc": 0.80, "pr_auc": 0.45}, id="small-regression"),
        pytest.param({"roc_auc": 0.79, "pr_auc": 0.43}, {"roc_auc": 0.80, "pr_auc": 0.45}, id="exactly-allowed"),
    ],
)
def test_challenger_within_allowed_regression_passes(challenger, champion):
    decision = decide(CHURN_GATE, challenger, champion)
    assert decision.passed, decision.summary()
    assert decision.verdict == "passed"
    assert "vs champion 0.8000" in decision.summary()


@pytest.mark.parametrize(
    ("challenger", "champion", "passed", "fragment"),
    [
        pytest.param({"log_loss": 0.45}, None, True, "log_loss 0.4500 <= floor 0.5", id="under-loss-ceiling"),
        pytest.param({"log_loss": 0.55}, None, False, "log_loss 0.5500 not <= floor 0.5", id="over-loss-ceiling"),
        pytest.param(
            {"log_loss": 0.30},
            {"log_loss": 0.40},
            True,
            "regression -0.1000",
            id="lower-loss-is-an-improvement",
        ),
        pytest.param(
            {"log_loss": 0.45},
            {"log_loss": 0.40},
            False,
            "log_loss 0.4500 vs champion 0.4000 (regression +0.0500, allowed 0.02)",
            id="higher-loss-is-a-regression",
        ),
    ],
)
def test_lower_is_better_metrics(challenger, champion, passed, fragment):
    decision = decide(LOSS_GATE, challenger, champion)
    assert decision.passed is passed
    assert fragment in decision.summary()


def test_force_promote_overrides_failed_checks_and_records_why():
    reason = "INC-1234: champion scores are corrupt"
    decision = decide(CHURN_GATE, {"roc_auc": 0.65, "pr_auc": 0.45}, {"roc_auc": 0.80, "pr_auc": 0.45}, True, reason)
    assert decision.passed and decision.forced
    assert decision.verdict == "forced"
    assert decision.force_reason == reason
    summary = decision.summary()
    assert summary.startswith("gate FORCED by operator")
    assert reason in summary
    assert "roc_auc 0.6500 not >= floor 0.7" in summary
    assert "regression +0.1500, allowed 0.01" in summary


def test_force_promote_is_not_recorded_when_nothing_failed():
    decision = decide(CHURN_GATE, GOOD, None, force_promote=True, force_reason="just in case")
    assert decision.passed and not decision.forced
    assert decision.verdict == "passed"


def test_rejection_without_force_is_not_forced():
    decision = decide(CHURN_GATE, {"roc_auc": 0.5, "pr_auc": 0.1}, None, force_promote=False, force_reason="x")
    assert not decision.passed and not decision.forced
    assert decision.verdict == "rejected"


def test_an_empty_gate_passes_everything():
    assert decide(Gate(), {"roc_auc": 0.51}, {"roc_auc": 0.99}).passed


def test_decision_is_immutable():
    decision = GateDecision(passed=True, reasons=())
    with pytest.raises(AttributeError):
        decision.passed = False
