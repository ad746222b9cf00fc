"""Operator logging: JSON lines with namespace and name where kopf knows them."""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter


class _ObjectFields(logging.Filter):
    """Lift kopf's per-object context into top-level namespace/name fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        k8s = getattr(record, "k8s_ref", None)
        if isinstance(k8s, dict):
            record.namespace = k8s.get("namespace")
            record.object = k8s.get("name")
        # kopf's internals ride along on its records; they are not log fields
        for internal in ("k8s_ref", "k8s_skip", "settings"):
            record.__dict__.pop(internal, None)
        return True


def object_fields(namespace: str | None, name: str) -> dict[str, Any]:
    """`extra=` for a log call about one object: the fields kopf's own records carry."""
    return {"k8s_ref": {"namespace": namespace or None, "name": name}}


def configure_logging(level: str, json_format: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
            )
        )
        handler.addFilter(_ObjectFields())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # asyncssh logs every connection, key exchange and login step at INFO.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    # kopf logs "Handler ... succeeded" at INFO for every watch event, Secrets included:
    # bookkeeping that buries the verifications, transitions and errors an operator
    # reader wants. Its warnings and errors still show; DEBUG shows everything.
    kopf_objects = logging.getLogger("kopf.objects")
    kopf_objects.setLevel(logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING)
