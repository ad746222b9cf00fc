"""JSON log lines name the object they are about."""

from __future__ import annotations

import io
import json
import logging

import pytest

from patchbay.logs import configure_logging, object_fields


def test_operator_lines_about_a_connection_carry_namespace_and_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", json_format=True)
        logging.getLogger("patchbay.reconciler").info(
            "verifying shop/orders now", extra=object_fields("shop", "orders")
        )
        logging.getLogger("patchbay.reconciler").info(
            "ClusterConnector status", extra=object_fields("", "postgres")
        )
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["namespace"], first["object"], first["level"]) == ("shop", "orders", "INFO")
    assert (second["namespace"], second["object"]) == (None, "postgres")
    assert "k8s_ref" not in first


def _lines_logged(
    level: str, logger_name: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(level, json_format=True)
        logging.getLogger(logger_name).info(message)
    finally:
        root.handlers[:], level_before = saved
        root.setLevel(level_before)
    return stream.getvalue()


def test_kopf_handler_bookkeeping_is_not_logged_at_info(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _lines_logged("INFO", "kopf.objects", "Handler 'secret_event' succeeded.", monkeypatch)
    assert text == ""


def test_kopf_handler_bookkeeping_is_logged_at_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _lines_logged("DEBUG", "kopf.objects", "Handler 'secret_event' succeeded.", monkeypatch)
    assert "succeeded" in text
