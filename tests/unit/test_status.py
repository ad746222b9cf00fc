"""Conditions and phase of a Connection as a user reads them in kubectl."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from patchbay.api.reasons import Reason
from patchbay.core.status import (
    ConditionState,
    Findings,
    connection_conditions,
    fit_status,
    merge_conditions,
    phase,
    ready_condition,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=7)

RESOLVED = ConditionState("True", Reason.VALID, "ClusterConnector postgres")
CREDENTIALS = ConditionState("True", Reason.VALID, "2 secret fields configured")
VERIFIED = ConditionState("True", Reason.VERIFIED, "connected and authenticated")


def _findings(**overrides: Any) -> Findings:
    fields: dict[str, Any] = {
        "suspended": False,
        "connector": RESOLVED,
        "credentials": CREDENTIALS,
        "verified": VERIFIED,
    }
    fields.update(overrides)
    return Findings(**fields)


def _by_type(conditions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in conditions}


def test_transition_time_stays_when_only_the_reason_changes() -> None:
    first = merge_conditions(
        [], [("Verified", ConditionState("False", Reason.TIMEOUT, "slow"))], 1, T0
    )

    second = merge_conditions(
        first,
        [("Verified", ConditionState("False", Reason.AUTHENTICATION_FAILED, "bad password"))],
        2,
        T1,
    )

    assert second[0]["lastTransitionTime"] == "2024-05-01T12:00:00Z"
    assert second[0]["reason"] == "AuthenticationFailed"
    assert second[0]["message"] == "bad password"


def test_transition_time_moves_when_the_status_changes() -> None:
    first = merge_conditions([], [("Verified", ConditionState("False", Reason.TIMEOUT))], 1, T0)

    second = merge_conditions(first, [("Verified", VERIFIED)], 1, T1)

    assert second[0]["lastTransitionTime"] == "2024-05-01T12:07:00Z"
    assert second[0]["status"] == "True"


def test_new_condition_gets_the_current_time() -> None:
    merged = merge_conditions([{"type": "Other", "status": "True"}], [("Ready", VERIFIED)], 3, T1)

    assert merged[0]["lastTransitionTime"] == "2024-05-01T12:07:00Z"


def test_every_condition_carries_the_observed_generation() -> None:
    _, _, conditions = connection_conditions(_findings(), [], 7, T0)

    assert [c["type"] for c in conditions] == [
        "ConnectorResolved",
        "CredentialsResolved",
        "Verified",
        "Ready",
    ]
    assert all(c["observedGeneration"] == 7 for c in conditions)


def test_successful_verification_makes_the_connection_ready() -> None:
    phase_, _, conditions = connection_conditions(_findings(), [], 1, T0)

    ready = _by_type(conditions)["Ready"]
    assert phase_ == "Ready"
    assert (ready["status"], ready["reason"]) == ("True", "Verified")


def test_definite_failure_wins_over_a_later_pending_step_for_ready() -> None:
    failed = ConditionState("False", Reason.SECRET_NOT_FOUND, "Secret 'db' not found")
    findings = _findings(credentials=failed, verified=None)

    phase_, _, conditions = connection_conditions(findings, [], 1, T0)

    by_type = _by_type(conditions)
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"]) == ("False", "SecretNotFound")
    assert by_type["Ready"]["message"] == "Secret 'db' not found"
    assert by_type["Verified"]["reason"] == "Pending"
    assert phase_ == "Failed"


def test_failure_wins_over_an_earlier_step_that_is_unknown() -> None:
    unknown = ConditionState("Unknown", Reason.PENDING, "waiting")
    failed = ConditionState("False", Reason.AUTHENTICATION_FAILED, "bad password")

    ready = ready_condition(_findings(credentials=unknown, verified=failed))

    assert (ready.status, ready.reason) == ("False", Reason.AUTHENTICATION_FAILED)


def test_steps_not_reached_leave_ready_pending() -> None:
    findings = _findings(verified=None)

    ready = ready_condition(findings)

    assert (ready.status, ready.reason) == ("Unknown", Reason.PENDING)
    assert phase(findings, ready) == "Pending"


def test_unknown_verification_never_makes_ready_true() -> None:
    unknown = ConditionState("Unknown", Reason.PROVIDER_ERROR, "driver crashed")

    for extra in ({}, {"stale": True}, {"connector": RESOLVED}):
        ready = ready_condition(_findings(verified=unknown, **extra))
        assert ready.status != "True"
        assert ready.reason == Reason.PROVIDER_ERROR


def test_stale_success_shows_ready_unknown_with_reason_stale() -> None:
    findings = _findings(stale=True)

    phase_, _, conditions = connection_conditions(findings, [], 1, T0)

    ready = _by_type(conditions)["Ready"]
    assert (ready["status"], ready["reason"]) == ("Unknown", "Stale")
    assert phase_ == "Pending"


def test_default_conflict_shows_ready_false_with_reason_default_conflict() -> None:
    findings = _findings(default_conflict="db-b is the default since 2024-01-01")

    phase_, _, conditions = connection_conditions(findings, [], 1, T0)

    ready = _by_type(conditions)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "DefaultConflict")
    assert ready["message"] == "db-b is the default since 2024-01-01"
    assert phase_ == "Failed"


def test_suspended_connection_has_phase_suspended_whatever_else_happened() -> None:
    failed = ConditionState("False", Reason.CONNECTOR_NOT_FOUND, "no such connector")
    findings = _findings(suspended=True, connector=failed, credentials=None, verified=None)

    phase_, reason, conditions = connection_conditions(findings, [], 1, T0)

    assert (phase_, reason) == ("Suspended", "Suspended")
    # not ready, not failing, not under way: no Ready, Reconciling or Stalled
    assert set(_by_type(conditions)) == {"ConnectorResolved", "CredentialsResolved", "Verified"}


def test_a_failure_that_waits_for_a_change_is_stalled() -> None:
    refused = ConditionState("False", Reason.AUTHENTICATION_FAILED, "HTTP 401")

    phase_, reason, conditions = connection_conditions(_findings(verified=refused), [], 1, T0)

    by_type = _by_type(conditions)
    assert (phase_, reason) == ("Failed", "AuthenticationFailed")
    assert (by_type["Stalled"]["status"], by_type["Stalled"]["reason"]) == (
        "True",
        "AuthenticationFailed",
    )
    assert "Reconciling" not in by_type


def test_a_result_still_to_come_is_reconciling_and_a_success_neither() -> None:
    unreachable = ConditionState("False", Reason.HOST_UNREACHABLE, "connection refused")

    for findings in (_findings(verified=None), _findings(verified=unreachable)):
        by_type = _by_type(connection_conditions(findings, [], 1, T0).conditions)
        assert by_type["Reconciling"]["status"] == "True"
        assert "Stalled" not in by_type
    verified = _by_type(connection_conditions(_findings(), [], 1, T0).conditions)
    assert "Reconciling" not in verified and "Stalled" not in verified


def test_deprecated_connector_keeps_ready_true_and_mentions_the_deprecation() -> None:
    deprecated = ConditionState(
        "True", Reason.CONNECTOR_DEPRECATED, "ClusterConnector legacy-db is deprecated"
    )

    phase_, _, conditions = connection_conditions(_findings(connector=deprecated), [], 1, T0)

    by_type = _by_type(conditions)
    assert phase_ == "Ready"
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"]) == ("True", "Verified")
    assert "deprecated" in by_type["Ready"]["message"]
    assert "connected and authenticated" in by_type["Ready"]["message"]
    assert by_type["ConnectorResolved"]["reason"] == "ConnectorDeprecated"


def test_status_strings_are_cut_to_the_schema_limits() -> None:
    status = {
        "phase": "Failed",
        "conditions": [{"type": "Ready", "status": "False", "reason": "X", "message": "m" * 40000}],
        "verification": {
            "error": {"code": "ResourceNotFound", "message": "e" * 7000, "retryable": False},
            "checks": [
                {
                    "type": "query",
                    "target": "t",
                    "result": "Failed",
                    "code": "X",
                    "message": "c" * 5000,
                }
            ],
        },
    }
    fitted = fit_status(status)
    assert len(fitted["conditions"][0]["message"]) == 32768
    assert len(fitted["verification"]["error"]["message"]) == 4096
    assert fitted["verification"]["error"]["message"].endswith("…")
    assert len(fitted["verification"]["checks"][0]["message"]) == 4096
    assert fitted["verification"]["error"]["code"] == "ResourceNotFound"
    assert fitted["phase"] == "Failed"


def test_status_within_the_limits_is_unchanged() -> None:
    status = {"phase": "Ready", "verification": {"details": {"serverVersion": "16.4"}}}
    assert fit_status(status) == status


def test_a_server_that_does_not_check_credentials_is_ready_with_that_warning() -> None:
    unchecked = ConditionState(
        "True", Reason.CREDENTIALS_NOT_REQUIRED, "GET /: HTTP 200 without credentials too"
    )
    findings = _findings(verified=unchecked)

    ready = ready_condition(findings)

    assert (ready.status, ready.reason) == ("True", Reason.CREDENTIALS_NOT_REQUIRED)
    assert "without credentials" in ready.message
    assert phase(findings, ready) == "Ready"
