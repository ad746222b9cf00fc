"""How the CLI prints results: aligned tables for people, JSON or YAML for scripts.

Every command produces one data object (stable camelCase field names); ``-o json``
and ``-o yaml`` print it as it is, and the table views below derive the human
form from that same object, so the two never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import yaml

OutputFormat = Literal["table", "json", "yaml"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("table", "json", "yaml")
MAX_CELL_WIDTH = 80
COLUMN_GAP = "   "
_ESCAPES = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})

View = Callable[[Any], str]


def cell(value: object, max_width: int | None = MAX_CELL_WIDTH) -> str:
    """One value on one line: booleans as true/false, nothing for None, structures as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        text = str(value)
    text = text.translate(_ESCAPES)
    if max_width is not None and len(text) > max_width:
        text = text[: max_width - 1] + "…"
    return text


def format_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    max_width: int | None = MAX_CELL_WIDTH,
    indent: str = "",
) -> str:
    """Columns padded to their widest cell, like kubectl get."""
    lines = [list(headers), *([cell(v, max_width) for v in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        indent
        + COLUMN_GAP.join(
            text.ljust(width) for text, width in zip(line, widths, strict=True)
        ).rstrip()
        for line in lines
    )


def format_fields(pairs: Sequence[tuple[str, object]], indent: str = "") -> str:
    """'Label:  value' lines with the values aligned; values are never cut short."""
    width = max(len(label) for label, _ in pairs) + 1
    return "\n".join(
        f"{indent}{(label + ':').ljust(width)}  {cell(value, None)}".rstrip()
        for label, value in pairs
    )


def machine(data: object, output: OutputFormat) -> str:
    if output == "json":
        return json.dumps(data, indent=2, ensure_ascii=False)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")


def render(data: object, output: OutputFormat, view: View) -> str:
    return view(data) if output == "table" else machine(data, output)


# ----- views of each command's data ----------------------------------------------------


def _section(title: str, body: str | None) -> str:
    return f"{title}:\n{body}" if body else f"{title}: (none)"


def describe_view(data: Mapping[str, Any]) -> str:
    connector = data["connector"]
    verification = data["verification"]
    error = verification.get("error") or {}
    details = verification.get("details") or {}
    duration = verification.get("durationMs")
    head = format_fields(
        [
            ("Name", data["name"]),
            ("Namespace", data["namespace"]),
            ("Display name", data.get("displayName")),
            ("Description", data.get("description")),
            ("Connector", f"{connector['kind']}/{connector['name']}"),
            ("Driver", data["driver"]),
            ("Phase", data["phase"]),
            ("Suspended", data["suspend"]),
            ("Default", data["default"]),
            ("Is default", data["isDefault"]),
            (
                "Binding",
                f"{data['binding']} (credentials withheld)"
                if data.get("credentialsWithheld")
                else data["binding"],
            ),
            ("Has credentials", data["hasCredentials"]),
        ]
    )
    result = format_fields(
        [
            ("Result", verification.get("result")),
            (
                "Error",
                f"{error.get('code')}: {error.get('message', '')}"
                + ("" if error.get("retryable", True) else " (not retried)")
                if error
                else None,
            ),
            ("Last attempt", verification.get("lastAttemptTime")),
            ("Last success", verification.get("lastSuccessTime")),
            ("Next", verification.get("nextTime")),
            ("Duration", f"{duration}ms" if duration is not None else None),
            ("Consecutive failures", verification.get("consecutiveFailures")),
            ("Requested at", verification.get("requestedAt")),
            ("Server version", details.get("serverVersion")),
        ],
        indent="  ",
    )
    secret_fields = data["secretFields"]
    fields = format_table(
        ["FIELD", "CONFIGURED"],
        [(key, value["configured"]) for key, value in secret_fields.items()],
        indent="  ",
    )
    conditions = format_table(
        ["TYPE", "STATUS", "REASON", "MESSAGE", "LAST TRANSITION"],
        [
            (c["type"], c["status"], c["reason"], c["message"], c["lastTransitionTime"])
            for c in data["conditions"]
        ],
        max_width=None,
        indent="  ",
    )
    checks = format_table(
        ["TYPE", "TARGET", "RESULT", "CODE", "MESSAGE"],
        [
            (c.get("type"), c.get("target"), c.get("result"), c.get("code"), c.get("message"))
            for c in verification.get("checks") or []
        ],
        indent="  ",
    )
    config = format_table(
        ["VARIABLE", "VALUE", "FROM", "ADVANCED"],
        [
            (
                entry["key"],
                entry["value"],
                "spec" if entry["set"] else "default",
                "yes" if entry.get("advanced") else "",
            )
            for entry in data.get("config") or []
        ],
        indent="  ",
    )
    return "\n".join(
        [
            head,
            _section("Config", config if data.get("config") else None),
            _section("Verification", result),
            _section("Secret fields", fields if secret_fields else None),
            _section("Conditions", conditions if data["conditions"] else None),
            _section("Checks", checks if verification.get("checks") else None),
        ]
    )


def list_view(data: Mapping[str, Any]) -> str:
    table = format_table(
        [
            "NAMESPACE",
            "NAME",
            "DISPLAY NAME",
            "CONNECTOR",
            "DRIVER",
            "PHASE",
            "REASON",
            "LAST VERIFIED",
        ],
        [
            (
                item["namespace"],
                item["name"],
                item["displayName"],
                item["connector"],
                item["driver"],
                item["phase"],
                item["reason"],
                item["lastVerified"],
            )
            for item in data["items"]
        ],
    )
    shown = len(data["items"])
    footer = f"{shown} of {data['total']} connection(s)"
    if data["continue"]:
        footer += f"; next page: --continue {data['continue']}"
    return f"{table}\n{footer}" if shown else footer


def verify_requested_view(data: Mapping[str, Any]) -> str:
    return (
        f"verification of connection/{data['name']} requested at {data['requestedAt']}; "
        f"add --wait to wait for the result"
    )


def suspend_view(data: Mapping[str, Any]) -> str:
    return f"connection/{data['name']} {'suspended' if data['suspend'] else 'resumed'}"


def set_default_view(data: Mapping[str, Any]) -> str:
    connector = data["connector"]
    text = (
        f"connection/{data['name']} is the default of {connector['kind']}/{connector['name']}"
        f" in namespace {data['namespace']}"
    )
    if data["cleared"]:
        text += f"; no longer default: {', '.join(data['cleared'])}"
    return text


def tables_view(data: Mapping[str, Any]) -> str:
    if not data["tables"]:
        return "no tables found"
    return format_table(
        ["SCHEMA", "NAME", "KIND"], [(t["schema"], t["name"], t["kind"]) for t in data["tables"]]
    )


def columns_view(data: Mapping[str, Any]) -> str:
    return format_table(
        ["NAME", "NORMALIZED NAME", "TYPE", "NULLABLE", "PRIMARY KEY"],
        [
            (c["name"], c["normalizedName"], c["dataType"], c["nullable"], c["primaryKey"])
            for c in data["columns"]
        ],
    )


def rows_view(data: Mapping[str, Any]) -> str:
    """The rows under headers "name (type)", and how many there are."""
    headers = [f"{c['name']} ({c['dataType']})".lstrip() for c in data["columns"]]
    rows = [["NULL" if value is None else value for value in row] for row in data["rows"]]
    count = data["rowCount"]
    summary = f"({count} row{'' if count == 1 else 's'}"
    summary += "; truncated: more rows or longer values than shown)" if data["truncated"] else ")"
    return f"{format_table(headers, rows)}\n{summary}"


def files_view(data: Mapping[str, Any]) -> str:
    """Name, kind, size and time of each entry, and its ID where the system has IDs."""
    entries = data["entries"]
    with_ids = any(e.get("id") for e in entries)
    text = (
        format_table(
            ["NAME", "KIND", "SIZE", "MODIFIED", *(["ID"] if with_ids else [])],
            [
                (e["name"], e["kind"], e["size"], e["modifiedAt"], *([e["id"]] if with_ids else []))
                for e in entries
            ],
        )
        if entries
        else "no entries"
    )
    if data["nextPageToken"]:
        text += f"\nmore entries: --page-token {data['nextPageToken']}"
    return text


def selection_view(data: Mapping[str, Any]) -> str:
    totals = format_fields(
        [
            ("Items", data["totalItems"]),
            ("Bytes", data["totalBytes"]),
            ("Max depth", data["maxDepth"]),
            ("Valid", data["valid"]),
            ("Complete", data["complete"]),
        ]
    )
    violations = format_table(
        ["CODE", "PATH", "MESSAGE"],
        [(v["code"], v["path"], v["message"]) for v in data["violations"]],
        indent="  ",
    )
    return "\n".join([totals, _section("Violations", violations if data["violations"] else None)])
