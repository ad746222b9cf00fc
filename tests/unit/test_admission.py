"""What the validating webhook admits and refuses, decided without a cluster."""

from __future__ import annotations

from patchbay.api.connector import ConnectorSpec
from patchbay.core.admission import connection_problem

CONNECTOR = ConnectorSpec.model_validate(
    {
        "driver": "http",
        "auth": {"type": "bearer"},
        "variables": [
            {"key": "baseUrl", "type": "url", "required": True},
            {"key": "token", "secret": True, "required": True},
        ],
    }
)
REF = {"kind": "ClusterConnector", "name": "http-api"}


def test_inline_secret_is_refused_naming_the_variable_but_not_the_value() -> None:
    spec = {"connectorRef": REF, "config": {"baseUrl": "https://a.test", "token": "canary-x1"}}

    problem = connection_problem(CONNECTOR, spec)

    assert problem is not None
    assert "'token'" in problem and "Secret" in problem
    assert "canary-x1" not in problem


def test_unknown_and_missing_variables_are_refused() -> None:
    unknown = {"connectorRef": REF, "config": {"baseUrl": "https://a.test", "colour": "red"}}
    missing = {"connectorRef": REF, "config": {}}

    assert "'colour'" in (connection_problem(CONNECTOR, unknown) or "")
    assert "'baseUrl'" in (connection_problem(CONNECTOR, missing) or "")


def test_valid_config_is_admitted() -> None:
    spec = {"connectorRef": REF, "config": {"baseUrl": "https://a.test"}}

    assert connection_problem(CONNECTOR, spec) is None


def test_unknown_connector_is_admitted_for_the_reconciler_to_report() -> None:
    spec = {"connectorRef": REF, "config": {"anything": 1}}

    assert connection_problem(None, spec) is None


def test_edit_that_leaves_config_and_connector_alone_is_admitted() -> None:
    # stored before its connector gained a required variable: it can still be suspended
    old = {"connectorRef": REF, "config": {}}
    new = {**old, "suspend": True}

    assert connection_problem(CONNECTOR, new, old) is None
    assert connection_problem(CONNECTOR, {**new, "config": {"x": 1}}, old) is not None


CHECK = {"type": "query", "sql": "select cast((select secret from t) as int)"}


def test_own_checks_are_refused_unless_the_connector_allows_them() -> None:
    spec = {
        "connectorRef": REF,
        "config": {"baseUrl": "https://a.test"},
        "verification": {"checks": [CHECK]},
    }
    problem = connection_problem(CONNECTOR, spec)
    assert problem is not None and problem.startswith("spec.verification.checks:")
    assert "allowConnectionChecks" in problem

    allowing = CONNECTOR.model_copy(
        update={
            "verification": CONNECTOR.verification.model_copy(
                update={"allow_connection_checks": True}
            )
        }
    )
    assert connection_problem(allowing, spec) is None


def test_checks_stored_before_the_rule_do_not_block_other_edits() -> None:
    old = {
        "connectorRef": REF,
        "config": {"baseUrl": "https://a.test"},
        "verification": {"checks": [CHECK]},
    }
    suspended = {**old, "suspend": True}
    assert connection_problem(CONNECTOR, suspended, old) is None
    more = {**old, "verification": {"checks": [CHECK, CHECK]}}
    assert connection_problem(CONNECTOR, more, old) is not None


def _allowing(**verification: bool) -> ConnectorSpec:
    return CONNECTOR.model_copy(
        update={"verification": CONNECTOR.verification.model_copy(update=verification)}
    )


OWN_REQUEST = {
    "connectorRef": REF,
    "config": {"baseUrl": "https://a.test"},
    "verification": {
        "http": {"path": "/v2/me", "credential": {"in": "header", "name": "X-Api-Key"}}
    },
}


def test_a_verification_request_of_its_own_needs_the_connectors_leave() -> None:
    problem = connection_problem(CONNECTOR, OWN_REQUEST)

    assert problem is not None and problem.startswith("spec.verification.http:")
    assert "allowConnectionRequest" in problem
    assert connection_problem(_allowing(allow_connection_request=True), OWN_REQUEST) is None


def test_a_credential_placement_needs_a_token_or_key_to_place() -> None:
    oauth2 = _allowing(allow_connection_request=True).model_copy(
        update={
            "auth": ConnectorSpec.model_validate(
                {
                    "driver": "http",
                    "auth": {"type": "oauth2ClientCredentials", "oauth2": {"tokenUrl": "/t"}},
                }
            ).auth
        }
    )

    problem = connection_problem(oauth2, OWN_REQUEST)

    assert problem is not None and problem.startswith("spec.verification.http.credential:")


def test_an_access_token_in_the_binding_needs_an_oauth2_connector() -> None:
    spec = {
        "connectorRef": REF,
        "config": {"baseUrl": "https://a.test"},
        "binding": {"accessToken": True},
    }

    problem = connection_problem(CONNECTOR, spec)

    assert problem is not None and problem.startswith("spec.binding.accessToken:")
    # a Connection stored before can still be suspended
    assert connection_problem(CONNECTOR, {**spec, "suspend": True}, spec) is None


def test_a_schedule_in_a_time_zone_that_does_not_exist_is_refused() -> None:
    spec = {
        "connectorRef": REF,
        "config": {"baseUrl": "https://a.test"},
        "verification": {"schedule": "0 9 * * *", "timeZone": "Mars/Olympus_Mons"},
    }

    problem = connection_problem(CONNECTOR, spec)

    assert problem is not None and problem.startswith("spec.verification.timeZone:")
    valid = {**spec, "verification": {"schedule": "0 9 * * *", "timeZone": "Europe/Berlin"}}
    assert connection_problem(CONNECTOR, valid) is None
