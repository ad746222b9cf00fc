"""A Connection's config is judged against its connector's variables."""

from __future__ import annotations

from typing import Any

import pytest

from patchbay.api.connector import ConnectorSpec, VariableSpec
from patchbay.core.config import ConfigInvalidError, check_value, resolve_config


def _connector(*variables: dict[str, Any]) -> ConnectorSpec:
    return ConnectorSpec.model_validate({"driver": "postgres", "variables": list(variables)})


def _variable(**fields: Any) -> VariableSpec:
    return VariableSpec.model_validate({"key": "value", **fields})


POSTGRES = _connector(
    {"key": "host", "required": True},
    {"key": "port", "type": "integer", "default": 5432, "minimum": 1, "maximum": 65535},
    {"key": "database", "default": "postgres"},
    {"key": "sslmode", "default": "require", "enum": ["disable", "require", "verify-full"]},
    {"key": "driverName", "default": "pgx", "locked": True},
    {"key": "username", "secret": True, "required": True},
    {"key": "password", "secret": True, "required": True},
)


def test_defaults_fill_every_variable_the_connection_leaves_out() -> None:
    resolved = resolve_config(POSTGRES, {"host": "db.example.com"})

    assert resolved.values == {
        "host": "db.example.com",
        "port": 5432,
        "database": "postgres",
        "sslmode": "require",
        "driverName": "pgx",
    }


def test_secret_variables_are_left_for_the_credentials_step() -> None:
    resolved = resolve_config(POSTGRES, {"host": "db"})

    assert [v.key for v in resolved.secret_variables] == ["username", "password"]
    assert "username" not in resolved.values
    assert "password" not in resolved.values


def test_unknown_config_key_is_rejected_naming_the_key() -> None:
    with pytest.raises(ConfigInvalidError, match=r"'hostname'.*not a variable") as caught:
        resolve_config(POSTGRES, {"host": "db", "hostname": "db"})

    assert caught.value.variable == "hostname"


def test_inline_secret_is_rejected_without_repeating_the_value() -> None:
    leaked = "s3cr3t-Pa55word!"

    with pytest.raises(ConfigInvalidError) as caught:
        resolve_config(POSTGRES, {"host": "db", "password": leaked})

    assert caught.value.variable == "password"
    assert "must come from a Secret" in str(caught.value)
    assert leaked not in str(caught.value)
    assert leaked not in repr(caught.value)


def test_locked_variable_override_names_the_variable() -> None:
    with pytest.raises(ConfigInvalidError, match=r"'driverName'.*locked") as caught:
        resolve_config(POSTGRES, {"host": "db", "driverName": "libpq"})

    assert caught.value.variable == "driverName"


def test_locked_variable_may_repeat_its_default() -> None:
    resolved = resolve_config(POSTGRES, {"host": "db", "driverName": "pgx"})

    assert resolved.values["driverName"] == "pgx"


def test_missing_required_variable_names_the_variable() -> None:
    with pytest.raises(ConfigInvalidError, match=r"'host'.*is required") as caught:
        resolve_config(POSTGRES, {})

    assert caught.value.variable == "host"


def test_optional_variable_without_default_is_simply_absent() -> None:
    connector = _connector({"key": "schema"})

    assert resolve_config(connector, {}).values == {}


def test_integer_given_as_string_is_coerced_to_an_integer() -> None:
    resolved = resolve_config(POSTGRES, {"host": "db", "port": "6432"})

    assert resolved.values["port"] == 6432
    assert isinstance(resolved.values["port"], int)


def test_integer_that_is_not_a_number_names_the_variable() -> None:
    with pytest.raises(ConfigInvalidError, match=r"'port'.*must be an integer"):
        resolve_config(POSTGRES, {"host": "db", "port": "fifty"})


def test_boolean_is_not_accepted_as_an_integer() -> None:
    with pytest.raises(ConfigInvalidError, match="must be an integer"):
        check_value(_variable(type="integer"), True)


@pytest.mark.parametrize(
    ("port", "problem"), [(0, "at least 1"), (65536, "at most 65535"), ("70000", "at most 65535")]
)
def test_integer_outside_its_range_is_rejected_with_the_bound(port: object, problem: str) -> None:
    with pytest.raises(ConfigInvalidError, match=problem):
        resolve_config(POSTGRES, {"host": "db", "port": port})


def test_integer_on_the_range_bounds_is_accepted() -> None:
    variable = _variable(type="integer", minimum=1, maximum=65535)

    assert check_value(variable, 1) == 1
    assert check_value(variable, 65535) == 65535


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("false", False), ("TRUE", True), ("False", False), (True, True)],
)
def test_boolean_accepts_true_and_false_strings(raw: object, expected: bool) -> None:
    assert check_value(_variable(type="boolean"), raw) is expected


@pytest.mark.parametrize("raw", ["yes", "1", 1, 0, ""])
def test_boolean_rejects_anything_but_true_and_false(raw: object) -> None:
    with pytest.raises(ConfigInvalidError, match="must be a boolean"):
        check_value(_variable(type="boolean"), raw)


@pytest.mark.parametrize(
    "url", ["https://api.example.com", "http://10.0.0.1:8080/v1", "https://host/path?q=1"]
)
def test_http_and_https_urls_with_a_host_are_accepted(url: str) -> None:
    assert check_value(_variable(type="url"), url) == url


@pytest.mark.parametrize(
    "url", ["ftp://files.example.com", "api.example.com", "https://", "file:///etc/passwd", ""]
)
def test_url_without_http_scheme_or_host_is_rejected(url: str) -> None:
    with pytest.raises(ConfigInvalidError, match=r"'value'.*http or https URL"):
        check_value(_variable(type="url"), url)


def test_malformed_url_is_reported_as_invalid_config_naming_the_variable() -> None:
    with pytest.raises(ConfigInvalidError, match="'value'"):
        check_value(_variable(type="url"), "http://[oops/")


@pytest.mark.parametrize("duration", ["30s", "5m", "1h30m", "500ms", "1.5h"])
def test_go_style_durations_are_accepted(duration: str) -> None:
    assert check_value(_variable(type="duration"), duration) == duration


@pytest.mark.parametrize("duration", ["5 minutes", "10", "1d", "m5", "", "5m "])
def test_other_durations_are_rejected(duration: str) -> None:
    with pytest.raises(ConfigInvalidError, match="must be a duration"):
        check_value(_variable(type="duration"), duration)


def test_value_must_match_the_whole_pattern() -> None:
    variable = _variable(pattern=r"[a-z]+")

    assert check_value(variable, "abc") == "abc"
    with pytest.raises(ConfigInvalidError, match="does not match the pattern"):
        check_value(variable, "abc1")


def test_value_outside_the_enum_lists_the_allowed_values() -> None:
    with pytest.raises(ConfigInvalidError, match="must be one of disable, require, verify-full"):
        resolve_config(POSTGRES, {"host": "db", "sslmode": "prefer"})


def test_integer_enum_accepts_a_coerced_string() -> None:
    variable = _variable(type="integer", enum=[1, 2, 3])

    assert check_value(variable, "2") == 2
    with pytest.raises(ConfigInvalidError, match="must be one of 1, 2, 3"):
        check_value(variable, 4)


@pytest.mark.parametrize("raw", [["a", "b"], {"nested": "map"}])
def test_list_or_map_value_is_rejected_naming_the_variable(raw: object) -> None:
    with pytest.raises(ConfigInvalidError, match=r"'database'.*must be a string") as caught:
        resolve_config(POSTGRES, {"host": "db", "database": raw})

    assert caught.value.variable == "database"
    assert str(type(raw).__name__) in str(caught.value)


@pytest.mark.parametrize("kind", ["integer", "boolean", "url", "duration"])
def test_list_value_is_rejected_for_every_type(kind: str) -> None:
    with pytest.raises(ConfigInvalidError, match=f"must be a {kind}, not list"):
        check_value(_variable(type=kind), [1])


def test_string_variable_does_not_accept_a_number() -> None:
    with pytest.raises(ConfigInvalidError, match="'value'"):
        check_value(_variable(), 14)


SHOP = ConnectorSpec.model_validate(
    {
        "driver": "http",
        "variables": [
            {"key": "baseUrl", "type": "url", "default": "https://{shop}.myshopify.com"},
            {"key": "shop", "pattern": "[a-z0-9][a-z0-9-]*"},
            {"key": "token", "secret": True, "required": True},
        ],
    }
)


def test_url_default_is_filled_with_the_tenant_variable() -> None:
    resolved = resolve_config(SHOP, {"shop": "acme-store"})
    assert resolved.values["baseUrl"] == "https://acme-store.myshopify.com"


def test_connection_can_replace_a_templated_url_entirely() -> None:
    resolved = resolve_config(SHOP, {"baseUrl": "http://127.0.0.1:8080", "shop": "acme"})
    assert resolved.values["baseUrl"] == "http://127.0.0.1:8080"


def test_url_placeholder_without_a_value_names_the_missing_variable() -> None:
    with pytest.raises(ConfigInvalidError, match="variable 'shop': needs a value: baseUrl"):
        resolve_config(SHOP, {})


def test_url_placeholder_never_takes_a_secret_value() -> None:
    with pytest.raises(ConfigInvalidError, match=r"variable 'baseUrl': names \{token\}"):
        resolve_config(SHOP, {"baseUrl": "https://{token}.example.com"})


def test_url_placeholder_value_is_quoted_so_it_cannot_change_the_url_shape() -> None:
    connector = _connector(
        {"key": "tokenUrl", "type": "url", "default": "https://login.example.com/{tenant}/token"},
        {"key": "tenant"},
    )
    resolved = resolve_config(connector, {"tenant": "a/b?c"})
    assert resolved.values["tokenUrl"] == "https://login.example.com/a%2Fb%3Fc/token"


def test_catastrophic_pattern_against_a_long_value_still_gives_an_answer() -> None:
    # (a+)+b backtracks exponentially in Python's re; RE2 answers in linear time.
    variable = _variable(pattern="(a+)+b")

    with pytest.raises(ConfigInvalidError, match="does not match the pattern"):
        check_value(variable, "a" * 4096)
    assert check_value(variable, "a" * 4095 + "b") == "a" * 4095 + "b"


def test_pattern_the_connector_should_not_have_had_is_reported_naming_the_variable() -> None:
    # an object built without validation, e.g. one stored before patterns were checked
    variable = VariableSpec.model_construct(key="shop", pattern=r"(\w)\1")

    with pytest.raises(ConfigInvalidError, match="variable 'shop': has a pattern that") as caught:
        resolve_config(_connector().model_copy(update={"variables": [variable]}), {"shop": "aa"})

    assert caught.value.variable == "shop"


def test_value_with_a_lone_surrogate_does_not_match_a_pattern() -> None:
    with pytest.raises(ConfigInvalidError, match="does not match the pattern"):
        check_value(_variable(pattern=".+"), "a\udcff")
