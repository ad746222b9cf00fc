"""The pydantic models accept what users write and reject what the CRD cannot catch."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from patchbay.api import ClusterConnector, Connection, Connector, ConnectorSpec
from patchbay.api.common import ADMISSION, MAX_VALUE_LENGTH
from patchbay.api.connector import MAX_RATE_LIMIT_REQUESTS, VariableSpec, connector_from_body
from patchbay.api.limits import MAX_TIMEOUT, MIN_INTERVAL, MIN_RATE_LIMIT_PERIOD
from patchbay.api.patterns import MAX_PATTERN_LENGTH
from patchbay.api.reasons import Reason
from patchbay.core.resolve import judge_connector
from patchbay.drivers.base import Driver


def _documents(directory: Path) -> list[dict[str, object]]:
    docs: list[dict[str, object]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_examples_and_catalogue_parse_into_the_models(repo_root: Path) -> None:
    kinds = {"Connection": Connection, "Connector": Connector, "ClusterConnector": ClusterConnector}
    parsed = 0
    for doc in _documents(repo_root / "deploy/examples") + _documents(
        repo_root / "deploy/connectors"
    ):
        model = kinds.get(str(doc["kind"]))
        if model is not None:
            model.model_validate(doc)
            parsed += 1
    assert parsed >= 5


def test_secret_variable_with_default_is_rejected_naming_the_variable() -> None:
    with pytest.raises(ValidationError, match="variable password: a secret variable cannot"):
        VariableSpec.model_validate({"key": "password", "secret": True, "default": "x"})


def test_locked_variable_without_default_is_rejected_naming_the_variable() -> None:
    with pytest.raises(ValidationError, match="variable host: a locked variable needs a default"):
        VariableSpec.model_validate({"key": "host", "locked": True})


def test_config_value_that_is_a_list_is_rejected() -> None:
    body = {"spec": {"connectorRef": {"name": "pg"}, "config": {"hosts": ["a", "b"]}}}
    with pytest.raises(ValidationError, match=r"spec\.config\.hosts"):
        Connection.model_validate(body)


def test_config_keeps_integer_and_boolean_types() -> None:
    body = {"spec": {"connectorRef": {"name": "pg"}, "config": {"port": 5432, "ssl": True}}}
    config = Connection.model_validate(body).spec.config
    assert config == {"port": 5432, "ssl": True}
    assert type(config["port"]) is int and type(config["ssl"]) is bool


def test_connector_body_is_parsed_as_its_kind() -> None:
    body = {"kind": "ClusterConnector", "spec": {"driver": "postgres"}}
    assert isinstance(connector_from_body(body), ClusterConnector)
    assert isinstance(connector_from_body({**body, "kind": "Connector"}), Connector)


def _connection(verification: dict[str, object]) -> Connection:
    body = {"spec": {"connectorRef": {"name": "pg"}, "verification": verification}}
    return Connection.model_validate(body, context=ADMISSION)


def _connector(**spec: object) -> dict[str, object]:
    return {"driver": "http", **spec}


def _admitted_connector(**spec: object) -> ConnectorSpec:
    return ConnectorSpec.model_validate(_connector(**spec), context=ADMISSION)


@pytest.mark.parametrize("interval", ["0s", "1ms", "59s", "59.999s"])
def test_connection_interval_below_the_minimum_is_refused_naming_the_field(
    interval: str,
) -> None:
    with pytest.raises(
        ValidationError, match=rf"verification\.interval\n.*at least {MIN_INTERVAL}"
    ):
        _connection({"interval": interval})


@pytest.mark.parametrize("interval", [MIN_INTERVAL, "60s", "1m0.5s", "15m", "24h"])
def test_interval_at_or_above_the_minimum_is_admitted(interval: str) -> None:
    connection = _connection({"interval": interval})
    connector = _admitted_connector(verification={"interval": interval})

    assert connection.spec.verification.interval == interval
    assert connector.verification.interval == interval


def test_connector_interval_below_the_minimum_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"verification\.interval\n.*at least 1m"):
        _admitted_connector(verification={"interval": "30s"})


@pytest.mark.parametrize("timeout", ["0s", "0ms", "2m1s", "121s", "1h"])
def test_timeout_of_zero_or_above_the_maximum_is_refused_naming_the_field(timeout: str) -> None:
    with pytest.raises(ValidationError, match=rf"verification\.timeout\n.*at most {MAX_TIMEOUT}"):
        _connection({"timeout": timeout})
    with pytest.raises(ValidationError, match=rf"verification\.timeout\n.*at most {MAX_TIMEOUT}"):
        _admitted_connector(verification={"timeout": timeout})


@pytest.mark.parametrize("timeout", ["1ms", "10s", MAX_TIMEOUT, "120s"])
def test_timeout_up_to_the_maximum_is_admitted(timeout: str) -> None:
    assert _connection({"timeout": timeout}).spec.verification.timeout == timeout


@pytest.mark.parametrize("per", ["0s", "100ms", "999ms"])
def test_rate_limit_period_below_the_minimum_is_refused_naming_the_field(per: str) -> None:
    with pytest.raises(
        ValidationError, match=rf"rateLimit\.per\n.*at least {MIN_RATE_LIMIT_PERIOD}"
    ):
        _admitted_connector(rateLimit={"requests": 5, "per": per})


@pytest.mark.parametrize("requests", [0, -1, MAX_RATE_LIMIT_REQUESTS + 1])
def test_rate_limit_requests_outside_their_bounds_are_refused(requests: int) -> None:
    with pytest.raises(ValidationError, match=r"rateLimit\.requests"):
        _admitted_connector(rateLimit={"requests": requests, "per": "1s"})


def test_rate_limit_at_its_bounds_is_admitted() -> None:
    spec = _admitted_connector(
        rateLimit={"requests": MAX_RATE_LIMIT_REQUESTS, "per": MIN_RATE_LIMIT_PERIOD}
    )
    assert spec.rate_limit is not None
    assert spec.rate_limit.requests == MAX_RATE_LIMIT_REQUESTS


def test_object_stored_before_the_bounds_parses_so_the_operator_can_clamp_it() -> None:
    body = _connector(
        verification={"interval": "1ms", "timeout": "10h"},
        rateLimit={"requests": 50_000, "per": "0s"},
    )

    spec = ConnectorSpec.model_validate(body)

    assert spec.verification.interval == "1ms"
    assert spec.verification.timeout == "10h"
    assert spec.rate_limit is not None
    assert spec.rate_limit.requests == 50_000
    with pytest.raises(ValidationError):
        ConnectorSpec.model_validate(body, context=ADMISSION)


def test_rate_limit_without_a_request_is_refused_even_when_stored() -> None:
    with pytest.raises(ValidationError, match=r"rateLimit\.requests"):
        ConnectorSpec.model_validate(_connector(rateLimit={"requests": 0, "per": "1m"}))


def test_config_value_longer_than_the_cap_is_rejected_naming_the_key() -> None:
    def body(host: str) -> dict[str, object]:
        return {"spec": {"connectorRef": {"name": "pg"}, "config": {"host": host}}}

    longest = "h" * MAX_VALUE_LENGTH
    assert Connection.model_validate(body(longest)).spec.config["host"] == longest
    with pytest.raises(ValidationError, match=rf"spec\.config\.host\n.*at most {MAX_VALUE_LENGTH}"):
        Connection.model_validate(body(longest + "h"))


@pytest.mark.parametrize("value", [{"name": "db"}, 1.5, None])
def test_config_value_that_is_not_a_string_integer_or_boolean_is_rejected(value: object) -> None:
    body = {"spec": {"connectorRef": {"name": "pg"}, "config": {"host": value}}}
    with pytest.raises(ValidationError, match=r"spec\.config\.host"):
        Connection.model_validate(body)


def test_enum_entry_and_default_longer_than_the_cap_are_rejected() -> None:
    long = "x" * (MAX_VALUE_LENGTH + 1)
    with pytest.raises(ValidationError, match=r"enum\.1\n"):
        VariableSpec.model_validate({"key": "mode", "enum": ["short", long]})
    with pytest.raises(ValidationError, match=r"default\n"):
        VariableSpec.model_validate({"key": "mode", "default": long})


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        (r"(\w)\1", "invalid escape sequence"),
        ("(?=x)x", "invalid perl operator"),
        ("(unclosed", "missing \\)"),
        ("a{2000}", "invalid repetition size"),
    ],
    ids=["backreference", "lookahead", "unbalanced", "huge-repetition"],
)
def test_pattern_re2_cannot_compile_is_rejected_naming_the_variable(
    pattern: str, problem: str
) -> None:
    with pytest.raises(ValidationError, match=rf"variable shop: pattern .*{problem}"):
        VariableSpec.model_validate({"key": "shop", "pattern": pattern})


def test_pattern_longer_than_the_cap_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"pattern\n.*at most 1024 characters"):
        VariableSpec.model_validate({"key": "shop", "pattern": "a" * (MAX_PATTERN_LENGTH + 1)})


def test_catastrophic_python_pattern_is_accepted_since_re2_runs_it_in_linear_time() -> None:
    variable = VariableSpec.model_validate({"key": "shop", "pattern": "(a+)+b"})
    assert variable.pattern == "(a+)+b"


def test_connector_with_an_invalid_pattern_is_reported_as_connector_invalid() -> None:
    body = {"spec": _connector(variables=[{"key": "shop", "pattern": "(?<=x)y"}])}
    drivers: dict[str, Driver] = {}

    state, spec = judge_connector(("ClusterConnector", "", "shop"), body, drivers)

    assert spec is None
    assert state.status == "False"
    assert state.reason == Reason.CONNECTOR_INVALID
    assert "variable shop: pattern" in state.message
