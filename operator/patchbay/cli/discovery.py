"""Discovery through a Connection, with the caller's own Kubernetes permissions.

The CLI reads the Connection, its connector and its credential Secrets as the
caller (someone who may not read the Secrets cannot browse through it), resolves
them with the operator's own code (config, credentials), and talks to the
external system through the driver's discovery protocol under the same rules as
a verification: the egress policy and the connector's egress hosts, the connector's
timeout, and no secret value in any message. An http connector that names its
system's file API (spec.discovery.files) browses files through
``patchbay.drivers.saasfiles``.

The connector's rateLimit holds too, as a token bucket of the command's own: every
request of a SaaS file API (the token request included) and every login, listing or
statement of the other drivers takes a token first, waiting for one within the
command's timeout. The operator's verifications spend a budget of their own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from patchbay import kube
from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import ConnectorSpec, FileApi
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
from patchbay.core.ratelimit import TokenBucket
from patchbay.core.resolve import judge_connector
from patchbay.core.schedule import bounds
from patchbay.core.verification import scrub
from patchbay.drivers.base import (
    MAX_ROWS,
    MAX_SQL_LENGTH,
    ColumnInfo,
    Driver,
    DriverError,
    Egress,
    FileBrowser,
    FileBrowsing,
    FilePage,
    RequestBudget,
    RowSet,
    SelectionLimits,
    SelectionReport,
    SqlBrowser,
    SqlBrowsing,
    TableInfo,
    VerifyRequest,
    walk_selection,
)
from patchbay.drivers.saasfiles import browse_saas_files
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
    # the connector's rateLimit: (requests, per seconds), clamped as the operator does
    rate_limit: tuple[int, float] | None = None
    # the SaaS file API the connector names; None: the driver browses files itself
    file_api: FileApi | None = None


def sql_driver(driver: Driver) -> SqlBrowsing:
    if isinstance(driver, SqlBrowsing):
        return driver
    raise CommandError(f"driver {driver.name} does not support SQL browsing")


def file_driver(driver: Driver) -> FileBrowsing:
    if isinstance(driver, FileBrowsing):
        return driver
    hint = (
        "; a connector may name its system's file API in spec.discovery.files"
        if driver.name == "http"
        else ""
    )
    raise CommandError(f"driver {driver.name} does not support file browsing{hint}")


def file_api(connector: ConnectorSpec, driver: Driver) -> FileApi | None:
    """The SaaS file API the connector names, or None when its driver browses files
    itself; CommandError when neither can."""
    files = connector.discovery.files if connector.discovery is not None else None
    if files is None:
        file_driver(driver)
        return None
    if driver.name != "http":
        raise CommandError(
            f"spec.discovery.files names a file API for http connectors, not for driver "
            f"{driver.name}"
        )
    return files.api


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
    files = None
    if capability == "sql":
        sql_driver(driver)
    else:
        files = file_api(connector, driver)
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
    limits = bounds(spec, connector)
    request = VerifyRequest(
        config=config.values,
        secrets=credentials.values,
        auth=connector.auth,
        http=connector.verification.http,
        http_errors=connector.verification.http_errors,
        tls=credentials.tls,
        timeout_seconds=limits.timeout_seconds,
    )
    return Target(
        namespace,
        name,
        driver,
        request,
        limits.timeout_seconds,
        connector,
        limits.rate_limit,
        files,
    )


class CommandBudget:
    """The connector's rateLimit over one command: a token bucket that each request
    waits for, within the command's timeout."""

    def __init__(self, rate_limit: tuple[int, float] | None) -> None:
        self._bucket = TokenBucket(*rate_limit) if rate_limit is not None else None

    async def spend(self) -> None:
        if self._bucket is None:
            return
        wait = self._bucket.take()
        while wait > 0:
            await asyncio.sleep(wait)
            wait = self._bucket.take()


class BudgetedFiles:
    """A driver's file session whose every listing first spends from the budget."""

    def __init__(self, browser: FileBrowser, budget: RequestBudget) -> None:
        self._browser = browser
        self._budget = budget

    async def list_files(self, path: str, page_token: str | None = None) -> FilePage:
        await self._budget.spend()
        return await self._browser.list_files(path, page_token)

    async def validate_selection(
        self, paths: Sequence[str], limits: SelectionLimits
    ) -> SelectionReport:
        # walked here, so that every listing of the walk spends from the budget
        return await walk_selection(self, paths, limits)


class BudgetedSql:
    """A driver's SQL session whose every call first spends from the budget."""

    def __init__(self, browser: SqlBrowser, budget: RequestBudget) -> None:
        self._browser = browser
        self._budget = budget

    async def tables(self, include_system: bool) -> list[TableInfo]:
        await self._budget.spend()
        return await self._browser.tables(include_system)

    async def columns(self, schema: str, table: str) -> list[ColumnInfo]:
        await self._budget.spend()
        return await self._browser.columns(schema, table)

    async def sample(self, schema: str, table: str, rows: int) -> RowSet:
        await self._budget.spend()
        return await self._browser.sample(schema, table, rows)

    async def query(self, sql: str, max_rows: int) -> RowSet:
        await self._budget.spend()
        return await self._browser.query(sql, max_rows)


@asynccontextmanager
async def budgeted(
    session: AbstractAsyncContextManager[S],
    budget: RequestBudget,
    wrap: Callable[[S, RequestBudget], S],
) -> AsyncIterator[S]:
    """A driver's session whose login, and every call after, spends from the budget."""
    await budget.spend()
    async with session as opened:
        yield wrap(opened, budget)


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
    budget = CommandBudget(target.rate_limit)
    return await _within_limits(
        target,
        lambda: budgeted(driver.browse_sql(target.request, allowed), budget, BudgetedSql),
        operation,
    )


async def with_files(
    target: Target, egress: Egress, operation: Callable[[FileBrowser], Awaitable[T]]
) -> T:
    allowed = connector_egress(egress, target.connector)
    budget = CommandBudget(target.rate_limit)
    api = target.file_api
    if api is not None:
        return await _within_limits(
            target, lambda: browse_saas_files(api, target.request, allowed, budget), operation
        )
    driver = file_driver(target.driver)
    return await _within_limits(
        target,
        lambda: budgeted(driver.browse_files(target.request, allowed), budget, BudgetedFiles),
        operation,
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
                "id": e.id,
                "name": e.name,
                "path": e.path,
                "kind": e.kind,
                "size": e.size,
                "mimeType": e.mime_type,
                "modifiedAt": e.modified.isoformat() if e.modified else None,
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
        "valid": report.valid,
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
