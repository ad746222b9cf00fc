"""Discovery through a Connection, with the caller's own Kubernetes permissions.

The CLI reads the Connection, its connector and its credential Secrets as the
caller (someone who may not read the Secrets cannot browse through it), resolves
them with the operator's own code (config, credentials), and talks to the
external system through the driver's discovery protocol under the same rules as
a verification: the egress policy, the connector's timeout, and no secret value
in any message.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from patchbay import kube
from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import ConnectorSpec
from patchbay.api.reasons import Reason
from patchbay.cli.caller import CommandError, explained, get_connection
from patchbay.core.config import ConfigInvalidError, resolve_config
from patchbay.core.credentials import (
    CredentialsError,
    credential_sources,
    referenced_secrets,
    resolve_credentials,
)
from patchbay.core.egress import connector_egress
from patchbay.core.resolve import judge_connector, verification_timeout
from patchbay.core.verification import scrub
from patchbay.drivers.base import (
    MAX_ROWS,
    MAX_SQL_LENGTH,
    Driver,
    DriverError,
    Egress,
    FileBrowser,
    FileBrowsing,
    FilePage,
    RowSet,
    SelectionLimits,
    SelectionReport,
    SqlBrowser,
    SqlBrowsing,
    VerifyRequest,
)
from patchbay.drivers.sql import normalized_name

T = TypeVar("T")
S = TypeVar("S")
Capability = Literal["sql", "files"]


@dataclass(frozen=True)
class Target:
    """A Connection resolved for discovery: the driver and what it needs to log in."""

    namespace: str
    name: str
    driver: Driver
    request: VerifyRequest = field(repr=False)
    timeout_seconds: float
    connector: ConnectorSpec = field(repr=False)


def sql_driver(driver: Driver) -> SqlBrowsing:
    if isinstance(driver, SqlBrowsing):
        return driver
    raise CommandError(f"driver {driver.name} does not support SQL browsing")


def file_driver(driver: Driver) -> FileBrowsing:
    if isinstance(driver, FileBrowsing):
        return driver
    raise CommandError(f"driver {driver.name} does not support file browsing")


def check_sql(sql: str) -> None:
    """The limit every driver relies on; the CLI checks it before contacting anything."""
    if not sql.strip():
        raise CommandError("the SQL statement is empty")
    if len(sql) > MAX_SQL_LENGTH:
        raise CommandError(
            f"the SQL statement has {len(sql)} characters; at most {MAX_SQL_LENGTH} are allowed"
        )


def check_rows(rows: int) -> None:
    if not 1 <= rows <= MAX_ROWS:
        raise CommandError(f"the row limit must be between 1 and {MAX_ROWS}, not {rows}")


_TABLE_PART = r'"(?:[^"]|"")+"|[^".]+'
_TABLE_NAME = re.compile(rf"({_TABLE_PART})\.({_TABLE_PART})")


def split_table_name(text: str) -> tuple[str, str]:
    """'sales.orders' or '"my.schema"."Orders"' into schema and table."""
    match = _TABLE_NAME.fullmatch(text.strip())
    if match is None:
        raise CommandError(
            f'give the table as SCHEMA.TABLE (quote names with dots: "a.b".c), not {text!r}'
        )

    def unquote(part: str) -> str:
        return part[1:-1].replace('""', '"') if part.startswith('"') else part

    return unquote(match.group(1)), unquote(match.group(2))


async def resolve_target(
    client: kube.KubeClient,
    namespace: str,
    name: str,
    drivers: Mapping[str, Driver],
    capability: Capability,
) -> Target:
    """Read and resolve everything as the caller; the driver's capability is checked before
    any Secret is read."""
    body = await get_connection(client, namespace, name)
    try:
        spec = ConnectionSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        raise CommandError(
            f"{Reason.CONFIG_INVALID}: the spec of Connection {name!r} is not valid; "
            f"see 'patchbay describe {name}'"
        ) from None
    if spec.suspend:
        raise CommandError(
            f"Connection {name!r} is suspended: nothing is sent to the external system "
            f"until 'patchbay resume {name}'"
        )
    kind, connector_name = spec.connector_ref.kind, spec.connector_ref.name
    scope = None if kind == "ClusterConnector" else namespace
    with explained("get", f"{kind.lower()}s", scope):
        connector_body = await client.get(kube.connector_path(kind, scope, connector_name))
    judged, connector = judge_connector(
        (kind, scope or "", connector_name), connector_body, drivers
    )
    if connector is None:
        raise CommandError(f"{judged.reason}: {judged.message}")
    driver = drivers[connector.driver]
    sql_driver(driver) if capability == "sql" else file_driver(driver)
    try:
        config = resolve_config(connector, spec.config)
        sources = credential_sources(spec, config.secret_variables)
    except ConfigInvalidError as exc:
        raise CommandError(f"{Reason.CONFIG_INVALID}: {exc}") from None
    secrets: dict[str, dict[str, str] | None] = {}
    for secret_name in referenced_secrets(spec, sources):
        with explained("get", "secrets", namespace):
            secret = await client.get(kube.secret_path(namespace, secret_name))
        secrets[secret_name] = None if secret is None else kube.secret_values(secret)
    try:
        credentials = resolve_credentials(spec, config.secret_variables, secrets)
    except CredentialsError as exc:
        raise CommandError(f"{exc.reason}: {exc.message}") from None
    timeout = verification_timeout(spec, connector)
    request = VerifyRequest(
        config=config.values,
        secrets=credentials.values,
        auth=connector.auth,
        http=connector.verification.http,
        tls=credentials.tls,
        timeout_seconds=timeout,
    )
    return Target(namespace, name, driver, request, timeout, connector)


async def _within_limits(
    target: Target,
    session: Callable[[], AbstractAsyncContextManager[S]],
    operation: Callable[[S], Awaitable[T]],
) -> T:
    """One session under the connector's timeout; every failure becomes one scrubbed line."""
    secrets = list(target.request.secrets.values())
    try:
        async with asyncio.timeout(target.timeout_seconds), session() as opened:
            return await operation(opened)
    except TimeoutError:
        message = f"{Reason.TIMEOUT}: no answer within {target.timeout_seconds:g}s"
    except DriverError as exc:
        message = f"{exc.code}: {scrub(exc.message, secrets)}"
    except Exception as exc:  # an unclassified failure is a driver bug: keep it visible
        message = f"{Reason.PROVIDER_ERROR}: {type(exc).__name__}: {scrub(str(exc), secrets)}"
    raise CommandError(message)


async def with_sql(
    target: Target, egress: Egress, operation: Callable[[SqlBrowser], Awaitable[T]]
) -> T:
    driver = sql_driver(target.driver)
    allowed = connector_egress(egress, target.connector)
    return await _within_limits(
        target, lambda: driver.browse_sql(target.request, allowed), operation
    )


async def with_files(
    target: Target, egress: Egress, operation: Callable[[FileBrowser], Awaitable[T]]
) -> T:
    driver = file_driver(target.driver)
    allowed = connector_egress(egress, target.connector)
    return await _within_limits(
        target, lambda: driver.browse_files(target.request, allowed), operation
    )


# ----- results as data (stable field names for -o json|yaml) ---------------------------


def column_data(name: str, data_type: str) -> dict[str, Any]:
    """A column as every SQL result names it: as the database does, normalized, and its type."""
    return {"name": name, "normalizedName": normalized_name(name), "dataType": data_type}


def rows_data(rows: RowSet) -> dict[str, Any]:
    return {
        "columns": [
            column_data(name, data_type)
            for name, data_type in zip(rows.columns, rows.types, strict=True)
        ],
        "rows": [list(row) for row in rows.rows],
        "rowCount": len(rows.rows),
        "truncated": rows.truncated,
    }


async def tables(target: Target, egress: Egress, include_system: bool) -> dict[str, Any]:
    found = await with_sql(target, egress, lambda browser: browser.tables(include_system))
    return {"tables": [{"schema": t.schema, "name": t.name, "kind": t.kind} for t in found]}


async def columns(target: Target, egress: Egress, schema: str, table: str) -> dict[str, Any]:
    found = await with_sql(target, egress, lambda browser: browser.columns(schema, table))
    return {
        "schema": schema,
        "table": table,
        "columns": [
            {**column_data(c.name, c.type), "nullable": c.nullable, "primaryKey": c.primary_key}
            for c in found
        ],
    }


async def sample(
    target: Target, egress: Egress, schema: str, table: str, rows: int
) -> dict[str, Any]:
    check_rows(rows)
    return rows_data(
        await with_sql(target, egress, lambda browser: browser.sample(schema, table, rows))
    )


async def query(target: Target, egress: Egress, sql: str, max_rows: int) -> dict[str, Any]:
    check_sql(sql)
    check_rows(max_rows)
    return rows_data(await with_sql(target, egress, lambda browser: browser.query(sql, max_rows)))


def page_data(path: str, page: FilePage) -> dict[str, Any]:
    return {
        "path": path,
        "entries": [
            {
                "name": e.name,
                "kind": e.kind,
                "size": e.size,
                "modified": e.modified.isoformat() if e.modified else None,
                "path": e.path,
            }
            for e in page.entries
        ],
        "nextPageToken": page.next_page_token,
    }


async def files(
    target: Target, egress: Egress, path: str, page_token: str | None
) -> dict[str, Any]:
    page = await with_files(target, egress, lambda browser: browser.list_files(path, page_token))
    return page_data(path, page)


def report_data(report: SelectionReport) -> dict[str, Any]:
    return {
        "totalItems": report.total_items,
        "totalBytes": report.total_bytes,
        "maxDepth": report.max_depth,
        "complete": report.complete,
        "violations": [
            {"code": v.code, "path": v.path, "message": v.message} for v in report.violations
        ],
    }


async def validate_selection(
    target: Target, egress: Egress, paths: Sequence[str], limits: SelectionLimits
) -> dict[str, Any]:
    report = await with_files(
        target, egress, lambda browser: browser.validate_selection(paths, limits)
    )
    return report_data(report)
