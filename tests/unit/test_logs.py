"""JSON log lines name the object they are about."""

from __future__ import annotations

import io
import json
import logging

import pytest

from patchbay.logs import configure_logging, object_fields


def _logged(
    level: str, monkeypatch: pytest.MonkeyPatch, *lines: tuple[str, str, dict[str, object]]
) -> str:
    """What the operator's log configuration writes for (logger, message, extra) lines."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(level, json_format=True)
        for name, message, extra in lines:
            logging.getLogger(name).info(message, extra=extra)
    finally:
        root.handlers[:], level_before = saved
        root.setLevel(level_before)
    return stream.getvalue()


def test_operator_lines_about_a_connection_carry_namespace_and_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = _logged(
        "INFO",
        monkeypatch,
        (
            "patchbay.controller.connection",
            "verifying shop/orders now",
            object_fields("shop", "orders"),
        ),
        ("patchbay.controller.connector", "ClusterConnector status", object_fields("", "postgres")),
    )
    first, second = (json.loads(line) for line in text.splitlines())
    assert (first["namespace"], first["object"], first["level"]) == ("shop", "orders", "INFO")
    assert (second["namespace"], second["object"]) == (None, "postgres")
    assert "k8s_ref" not in first


def test_kopf_handler_bookkeeping_is_not_logged_at_info(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _logged(
        "INFO", monkeypatch, ("kopf.objects", "Handler 'connection_event' succeeded.", {})
    )
    assert text == ""


def test_kopf_handler_bookkeeping_is_logged_at_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _logged(
        "DEBUG", monkeypatch, ("kopf.objects", "Handler 'connection_event' succeeded.", {})
    )
    assert "succeeded" in text
