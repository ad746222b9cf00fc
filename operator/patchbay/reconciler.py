"""Reconciliation of Connections and Connectors, independent of kopf.

The kopf handlers in ``patchbay.controller`` feed watch events in; this module
keeps a small in-memory view (latest Connection bodies, connector bodies, the
resourceVersions of referenced Secrets — never their contents), decides when
each Connection is verified, runs the verification and writes its status in
one patch.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter
from pydantic import ValidationError

from patchbay import kube
from patchbay.api.common import API_VERSION
from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import ConnectorSpec
from patchbay.binding import binding_name, build_binding_secret
from patchbay.config import ConfigInvalidError, resolve_config
from patchbay.credentials import (
    CredentialsError,
    credential_sources,
    referenced_secrets,
    resolve_credentials,
)
from patchbay.drivers.base import Driver, VerifyOutcome
from patchbay.egress import EgressPolicy
from patchbay.inputs import inputs_hash
from patchbay.logs import object_fields
from patchbay.metrics import Metrics
from patchbay.reasons import NOT_RETRYABLE, Reason
from patchbay.schedule import Cadence, bounds, next_attempt
from patchbay.status import (
    ConditionState,
    Findings,
    connection_conditions,
    fit_status,
    merge_conditions,
)
from patchbay.verification import build_verify_request, run_verification

logger = logging.getLogger(__name__)

CONNECTOR_LABEL = "patchbay.dev/connector"
DRIVER_LABEL = "patchbay.dev/driver"
VERIFY_REQUESTED_ANNOTATION = "patchbay.dev/verify-requested-at"

Key = tuple[str, str]  # namespace, name
ConnectorKey = tuple[str, str, str]  # kind, namespace ("" for cluster scope), name
# after the API server failed a request while a Connection was being evaluated or
# verified: the first retry, doubled on each further failure up to the cap
API_RETRY_SECONDS = 10.0
API_RETRY_CAP_SECONDS = 300.0
# what a condition says when the API server refused the status that explained it
STATUS_REFUSED_MESSAGE = (
    "the API server refused this Connection's full status; the reason stands, "
    "the operator's log has the details"
)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _timestamp(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _api_problem(exc: Exception) -> str:
    if isinstance(exc, kube.KubeApiError):
        return f"the API server answered {exc.status} {exc.reason}"
    return type(exc).__name__


def _refused(exc: kube.KubeApiError) -> bool:
    """A 4xx that repeating the same request cannot fix (not a conflict or throttling)."""
    return 400 <= exc.status < 500 and exc.status not in (404, 409, 429)


def _generation(body: Mapping[str, Any]) -> object:
    return body.get("metadata", {}).get("generation")


def _validation_message(exc: ValidationError) -> str:
    """pydantic's errors without the offending input, which may be a credential."""
    first = exc.errors(include_input=False, include_url=False)[0]
    location = ".".join(str(part) for part in first["loc"])
    return f"{location}: {first['msg']}"


def judge_connector(
    ckey: ConnectorKey, body: Mapping[str, Any] | None, drivers: Mapping[str, Driver]
) -> tuple[ConditionState, ConnectorSpec | None]:
    """The ConnectorResolved condition, and the connector's spec when it is usable."""
    kind, _, name = ckey
    if body is None:
        return ConditionState(
            "False", Reason.CONNECTOR_NOT_FOUND, f"{kind} {name!r} not found"
        ), None
    try:
        connector = ConnectorSpec.model_validate(body.get("spec", {}))
    except ValidationError as exc:
        return ConditionState("False", Reason.CONNECTOR_INVALID, _validation_message(exc)), None
    if connector.driver not in drivers:
        return ConditionState(
            "False", Reason.CONNECTOR_INVALID, f"driver {connector.driver!r} is not available"
        ), None
    if connector.deprecated:
        return ConditionState(
            "True", Reason.CONNECTOR_DEPRECATED, f"{kind} {name!r} is deprecated"
        ), connector
    return ConditionState("True", Reason.VALID, f"{kind} {name!r}"), connector


def verification_timeout(spec: ConnectionSpec, connector: ConnectorSpec) -> float:
    """Seconds one verification (or one discovery call) may take."""
    return bounds(spec, connector).timeout_seconds


@dataclass
class ConnectionState:
    """What the operator remembers about one Connection between events."""

    handled_hash: str | None = None
    handled_request: str | None = None
    binding_digest: str | None = None
    secrets: list[str] = field(default_factory=list)
    connector: ConnectorKey | None = None
    findings: Findings | None = None
    timer: asyncio.Task[None] | None = None
    running: bool = False
    dirty: bool = False
    api_failures: int = 0  # API server errors in a row, for the retry backoff


@dataclass(frozen=True)
class OperatorSettings:
    default_timeout_seconds: float = 10.0
    max_concurrent_verifications: int = 64
    egress: EgressPolicy = field(default_factory=EgressPolicy)


class Reconciler:
    def __init__(
        self,
        client: kube.KubeClient,
        drivers: Mapping[str, Driver],
        settings: OperatorSettings | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.client = client
        self.drivers = dict(drivers)
        self.settings = settings or OperatorSettings()
        self.metrics = metrics or Metrics()
        self.connections: dict[Key, dict[str, Any]] = {}
        self.states: dict[Key, ConnectionState] = defaultdict(ConnectionState)
        self.connectors: dict[ConnectorKey, dict[str, Any] | None] = {}
        self.secret_versions: dict[Key, str | None] = {}
        self.secret_readers: dict[Key, set[Key]] = defaultdict(set)
        # with the (requests, period) they were made for: another edit of the
        # connector keeps the spent budget, or a re-verification wave would be free
        self.limiters: dict[ConnectorKey, tuple[tuple[int, float], AsyncLimiter]] = {}
        self._slots = asyncio.Semaphore(self.settings.max_concurrent_verifications)
        self._recount: set[ConnectorKey] = set()
        self._recount_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random()

    # ----- events ------------------------------------------------------------------

    async def connection_changed(self, body: dict[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        self.connections[key] = body
        await self._evaluate_or_retry(key, body)

    async def _evaluate_or_retry(self, key: Key, body: dict[str, Any]) -> None:
        try:
            await self._ensure_labels(key, body)
            await self.evaluate(key)
        except (kube.KubeApiError, aiohttp.ClientError, TimeoutError) as exc:
            # kopf does not retry event handlers: without this the Connection would wait
            # for its next watch event
            delay = self._api_retry_delay(key)
            logger.warning(
                "could not evaluate %s/%s (%s); trying again in %.0fs",
                *key,
                _api_problem(exc),
                delay,
                extra=object_fields(*key),
            )
            self._start(self._retry_evaluation(key, delay))
        else:
            if key in self.states:
                self.states[key].api_failures = 0

    async def _retry_evaluation(self, key: Key, delay: float) -> None:
        await asyncio.sleep(delay)
        body = self.connections.get(key)
        if body is not None:
            await self._evaluate_or_retry(key, body)

    def _api_retry_delay(self, key: Key) -> float:
        """Backoff after API server errors: a failing request is never repeated on a
        fixed timer."""
        state = self.states[key]
        state.api_failures += 1
        ceiling = min(
            API_RETRY_CAP_SECONDS, API_RETRY_SECONDS * 2.0 ** min(state.api_failures - 1, 10)
        )
        return ceiling * self._rng.uniform(0.5, 1.0)

    async def connection_deleted(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self.connections.pop(key, None)
        state = self.states.pop(key, None)
        self.metrics.forget_connection(namespace, name)
        if state is not None:
            if state.timer is not None:
                state.timer.cancel()
            if state.connector is not None:
                self._count_later(state.connector)
            for secret in state.secrets:
                self.secret_readers[(namespace, secret)].discard(key)
        # the binding Secret is owned by the Connection: the garbage collector removes it
        await self._refresh_defaults(namespace)

    async def connector_changed(
        self, kind: str, body: dict[str, Any] | None, name: str, namespace: str | None
    ) -> None:
        ckey: ConnectorKey = (kind, namespace or "", name)
        before = self.connectors.get(ckey)
        self.connectors[ckey] = body
        if before is not None and body is not None and _generation(before) == _generation(body):
            # A status-only change, usually our own write: nothing to re-verify, and the
            # count of Connections is kept current by the batched writes of _count_later.
            return
        if body is not None:
            await self._write_connector_status(ckey, body)
        if body is None:
            self.limiters.pop(ckey, None)
        for key, state in list(self.states.items()):
            if state.connector == ckey:
                await self.evaluate(key)

    async def secret_changed(self, namespace: str, name: str, resource_version: str | None) -> None:
        """Only the resourceVersion is kept; the contents are read when verifying."""
        skey = (namespace, name)
        readers = self.secret_readers.get(skey)
        if not readers:
            return
        if self.secret_versions.get(skey) == resource_version:
            return
        self.secret_versions[skey] = resource_version
        for key in list(readers):
            await self.evaluate(key)

    async def close(self) -> None:
        """Stop every timer and pending write, before the API client goes away."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A background task of this reconciler, cancelled by close()."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _count_later(self, ckey: ConnectorKey) -> None:
        """Connector status counts its Connections; batched so a burst costs one write."""
        self._recount.add(ckey)
        if self._recount_task is None or self._recount_task.done():
            self._recount_task = self._start(self._flush_counts())

    async def _flush_counts(self) -> None:
        await asyncio.sleep(1.0)
        pending, self._recount = self._recount, set()
        for ckey in pending:
            body = self.connectors.get(ckey)
            if body is not None:
                try:
                    await self._write_connector_status(ckey, body)
                except kube.KubeApiError as exc:
                    logger.warning(
                        "could not update status of %s %s: %s",
                        ckey[0],
                        ckey[2],
                        exc,
                        extra=object_fields(ckey[1], ckey[2]),
                    )

    # ----- deciding ----------------------------------------------------------------

    def _connector_key(self, namespace: str, spec: Mapping[str, Any]) -> ConnectorKey:
        ref = spec.get("connectorRef", {})
        kind = ref.get("kind", "ClusterConnector")
        return (kind, "" if kind == "ClusterConnector" else namespace, ref.get("name", ""))

    async def connector_spec(self, namespace: str, spec: Mapping[str, Any]) -> ConnectorSpec | None:
        """The connector a Connection spec refers to, if it exists and is usable."""
        _, connector = await self._resolve_connector(namespace, spec)
        return connector

    async def _connector(self, ckey: ConnectorKey) -> dict[str, Any] | None:
        if ckey not in self.connectors:
            kind, namespace, name = ckey
            self.connectors[ckey] = await self.client.get(
                kube.connector_path(kind, namespace or None, name)
            )
        return self.connectors[ckey]

    async def _secret_version(self, namespace: str, name: str) -> str | None:
        skey = (namespace, name)
        if skey not in self.secret_versions:
            secret = await self.client.get(kube.secret_path(namespace, name))
            self.secret_versions[skey] = secret["metadata"]["resourceVersion"] if secret else None
        return self.secret_versions[skey]

    def _track_secrets(self, key: Key, names: list[str]) -> None:
        state = self.states[key]
        for old in set(state.secrets) - set(names):
            self.secret_readers[(key[0], old)].discard(key)
        for new in names:
            self.secret_readers[(key[0], new)].add(key)
        state.secrets = names

    async def _current_hash(self, key: Key, body: dict[str, Any]) -> str:
        spec = body.get("spec", {})
        ckey = self._connector_key(key[0], spec)
        if self.states[key].connector != ckey:
            for changed in (self.states[key].connector, ckey):
                if changed is not None:
                    self._count_later(changed)
            self.states[key].connector = ckey
        connector = await self._connector(ckey)
        names = self._secret_names(spec, connector)
        self._track_secrets(key, names)
        versions = {n: await self._secret_version(key[0], n) for n in names}
        meta = (connector or {}).get("metadata", {})
        return inputs_hash(spec, meta.get("uid"), meta.get("generation"), versions)

    def _secret_names(self, spec: Mapping[str, Any], connector: dict[str, Any] | None) -> list[str]:
        try:
            parsed = ConnectionSpec.model_validate(spec)
            variables = (
                ConnectorSpec.model_validate(connector["spec"]).variables if connector else []
            )
            return referenced_secrets(
                parsed, credential_sources(parsed, [v for v in variables if v.secret])
            )
        except (ValidationError, ConfigInvalidError, KeyError):
            return []

    async def evaluate(self, key: Key) -> None:
        """Decide whether this Connection needs a verification now, later, or not at all."""
        body = self.connections.get(key)
        if body is None:
            return
        state = self.states[key]
        if state.running:
            state.dirty = True  # looked at again when the running verification ends
            return
        status = body.get("status") or {}
        verification = status.get("verification") or {}
        if state.handled_hash is None:
            state.handled_hash = verification.get("inputsHash")
            state.handled_request = verification.get("requestedAt")
        if body.get("spec", {}).get("suspend"):
            self._cancel_timer(state)
            if status.get("phase") != "Suspended":
                await self._write_suspended(key, body)
            return
        current = await self._current_hash(key, body)
        if state.running:
            # a verification started while the hash was computed; judge again after it
            state.dirty = True
            return
        requested = body["metadata"].get("annotations", {}).get(VERIFY_REQUESTED_ANNOTATION)
        resumed = status.get("phase") == "Suspended"
        changed = current != state.handled_hash or resumed
        if (body["spec"].get("verification") or {}).get("mode") == "Manual":
            changed = not verification  # once at creation, then only on request
        if changed or requested != state.handled_request:
            logger.info(
                "verifying %s/%s now: %s",
                *key,
                "verification requested"
                if requested != state.handled_request
                else f"inputs changed ({state.handled_hash} -> {current})",
                extra=object_fields(*key),
            )
            self._schedule(key, 0.0)
            return
        next_time = _parse_time(verification.get("nextTime"))
        # an existing timer was set from a fresher result than this (possibly stale) body
        if next_time is not None and state.timer is None:
            self._schedule(key, max(0.0, (next_time - _now()).total_seconds()))
        elif next_time is None:
            await self._watch_staleness(key, body)

    async def _watch_staleness(self, key: Key, body: dict[str, Any]) -> None:
        """Without a next regular verification, a success ages into reason Stale."""
        status = body.get("status") or {}
        last_success = _parse_time((status.get("verification") or {}).get("lastSuccessTime"))
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
        )
        if last_success is None or ready.get("reason") != Reason.VERIFIED:
            return
        connector = await self._connector(self._connector_key(key[0], body["spec"]))
        try:
            spec = ConnectionSpec.model_validate(body["spec"])
            connector_spec = ConnectorSpec.model_validate((connector or {}).get("spec", {}))
        except ValidationError:
            return
        stale_at = bounds(spec, connector_spec).cadence.stale_at(last_success)
        if _now() < stale_at:
            self._cancel_timer(self.states[key])
            self.states[key].timer = self._start(
                self._evaluate_later(key, (stale_at - _now()).total_seconds())
            )
            return
        stale = ConditionState(
            "Unknown", Reason.STALE, "the last success is older than twice the interval"
        )
        conditions = merge_conditions(
            status.get("conditions") or [],
            [
                *(
                    (c["type"], ConditionState(c["status"], Reason(c["reason"]), c["message"]))
                    for c in status.get("conditions") or []
                    if c["type"] != "Ready" and c.get("reason") in Reason.__members__.values()
                ),
                ("Ready", stale),
            ],
            body["metadata"].get("generation"),
            _now(),
        )
        await self._patch_status(key, {"phase": "Pending", "conditions": conditions})
        await self._after_status_write(key, body, status, "Pending", conditions)

    async def _evaluate_later(self, key: Key, delay: float) -> None:
        await asyncio.sleep(delay)
        if key in self.states:
            self.states[key].timer = None
            await self.evaluate(key)

    def _cancel_timer(self, state: ConnectionState) -> None:
        if state.timer is not None and not state.timer.done():
            state.timer.cancel()
        state.timer = None

    def _schedule(self, key: Key, delay: float) -> None:
        if key not in self.connections:
            return  # deleted while it was being verified: nothing to come back to
        state = self.states[key]
        self._cancel_timer(state)
        state.timer = self._start(self._verify_later(key, delay))

    async def _verify_later(self, key: Key, delay: float) -> None:
        await asyncio.sleep(delay)
        state = self.states.get(key)
        if state is None:
            return
        state.timer = None
        if state.running:  # never two verifications of one Connection at once
            state.dirty = True
            return
        state.running = True
        try:
            await self.verify(key)
            state.api_failures = 0
        except (kube.KubeApiError, aiohttp.ClientError, TimeoutError) as exc:
            delay = self._api_retry_delay(key)
            # status and reason only: the API server's message may quote what was sent
            logger.error(
                "verification of %s/%s stopped: %s; trying again in %.0fs",
                *key,
                _api_problem(exc),
                delay,
                extra=object_fields(*key),
            )
            self._schedule(key, delay)
        except Exception as exc:
            delay = self._api_retry_delay(key)
            # the type only: a traceback's message could carry a credential
            logger.error(
                "verification of %s/%s crashed with %s; trying again in %.0fs",
                *key,
                type(exc).__name__,
                delay,
                extra=object_fields(*key),
            )
            self._schedule(key, delay)
        finally:
            state.running = False
        if state.dirty:
            state.dirty = False
            await self.evaluate(key)

    # ----- verifying ---------------------------------------------------------------

    async def verify(self, key: Key) -> None:
        """Resolve, validate, verify, project the binding and write status once."""
        body = self.connections.get(key)
        if body is None:
            return
        namespace = key[0]
        state = self.states[key]
        spec_body = body.get("spec", {})
        handled_hash = await self._current_hash(key, body)
        requested = body["metadata"].get("annotations", {}).get(VERIFY_REQUESTED_ANNOTATION)
        started = _now()
        connector_state, connector_spec = await self._resolve_connector(namespace, spec_body)
        outcome: VerifyOutcome | None = None
        credentials_state: ConditionState | None = None
        verified_state: ConditionState | None = None
        secret_fields: dict[str, bool] = {}
        binding: str | None = None
        duration_ms: int | None = None
        cadence = Cadence("Periodic", 3600.0)
        if connector_spec is not None:
            try:
                spec = ConnectionSpec.model_validate(spec_body)
                limits = bounds(spec, connector_spec)
                cadence = limits.cadence
                config = resolve_config(connector_spec, spec.config)
                secrets = await self._read_secrets(namespace, state.secrets)
                try:
                    creds = resolve_credentials(spec, config.secret_variables, secrets)
                    secret_fields = creds.configured
                    credentials_state = ConditionState(
                        "True", Reason.VERIFIED, "all referenced Secrets and keys found"
                    )
                except CredentialsError as exc:
                    credentials_state = ConditionState("False", exc.reason, exc.message)
                    secret_fields = {v.key: False for v in config.secret_variables}
                    creds = None
                if creds is not None:
                    binding = await self._project_binding(
                        key, body, connector_spec.driver, config.values, creds.values
                    )
                    request = build_verify_request(connector_spec, spec, config, creds)
                    limiter = self._limiter(state.connector, limits.rate_limit)
                    if limiter is not None and not limiter.has_capacity():
                        self.metrics.rate_limited.inc()
                        await self._write_status(
                            key,
                            body,
                            Findings(
                                suspended=False,
                                connector=connector_state,
                                credentials=credentials_state,
                                verified=ConditionState(
                                    "Unknown",
                                    Reason.RATE_LIMITED,
                                    "waiting for the connector's rate limit",
                                ),
                            ),
                            {},
                        )
                    outcome, elapsed = await run_verification(
                        self.drivers[connector_spec.driver],
                        request,
                        egress=self.settings.egress,
                        timeout_seconds=limits.timeout_seconds,
                        limiter=self._budget(limiter),
                    )
                    duration_ms = int(elapsed * 1000)
                    verified_state = ConditionState(
                        "True"
                        if outcome.result == "Succeeded"
                        else "Unknown"
                        if outcome.result == "Unknown"
                        else "False",
                        outcome.code,
                        "; ".join(m for m in (outcome.message, *limits.notes) if m),
                    )
            except ValidationError as exc:
                verified_state = ConditionState(
                    "False", Reason.CONFIG_INVALID, _validation_message(exc)
                )
            except ConfigInvalidError as exc:
                verified_state = ConditionState("False", Reason.CONFIG_INVALID, str(exc))
            if verified_state is not None and credentials_state is None:
                credentials_state = ConditionState(
                    "Unknown", Reason.PENDING, "not resolved: the config is invalid"
                )
        findings = Findings(
            suspended=False,
            connector=connector_state,
            credentials=credentials_state,
            verified=verified_state,
            default_conflict=self._default_conflict(key),
        )
        state.findings = findings
        finished = _now()
        previous = (body.get("status") or {}).get("verification") or {}
        failures = self._failures(previous, outcome, verified_state)
        code = (
            verified_state.reason
            if verified_state
            else (credentials_state.reason if credentials_state else connector_state.reason)
        )
        retryable = (
            outcome.retryable
            if outcome
            else code not in NOT_RETRYABLE
            and code
            not in (Reason.CONNECTOR_NOT_FOUND, Reason.SECRET_NOT_FOUND, Reason.SECRET_KEY_MISSING)
        )
        next_time = next_attempt(
            cadence,
            now=finished,
            succeeded=outcome is not None and outcome.result == "Succeeded",
            retryable=retryable and code not in NOT_RETRYABLE,
            consecutive_failures=failures,
            retry_after=outcome.retry_after if outcome else None,
            rng=self._rng,
        )
        verification = {
            "lastAttemptTime": _timestamp(started),
            "lastSuccessTime": _timestamp(finished)
            if outcome is not None and outcome.result == "Succeeded"
            else previous.get("lastSuccessTime"),
            "nextTime": _timestamp(next_time),
            "durationMs": duration_ms,
            "consecutiveFailures": failures,
            "inputsHash": handled_hash,
            "requestedAt": requested,
            "result": outcome.result
            if outcome
            else "Unknown"
            if verified_state is None
            else "Failed",
            "error": None
            if outcome is not None and outcome.result == "Succeeded"
            else {
                "code": str(code),
                "message": self._message(verified_state, credentials_state, connector_state),
                "retryable": retryable,
            },
            "details": {"serverVersion": outcome.server_version, "latencyMs": outcome.latency_ms}
            if outcome is not None
            else None,
            "checks": [
                {
                    "type": c.type,
                    "target": c.target,
                    "result": c.result,
                    "code": str(c.code),
                    "message": c.message,
                }
                for c in (outcome.checks if outcome else ())
            ],
        }
        self.metrics.observe_verification(
            connector_spec.driver if outcome is not None and connector_spec else None,
            verification["result"],
            str(code),
            duration_ms / 1000 if duration_ms is not None else None,
        )
        await self._write_status(
            key,
            body,
            findings,
            {
                "verification": verification,
                "hasCredentials": bool(secret_fields) and all(secret_fields.values())
                if secret_fields
                else credentials_state is not None and credentials_state.status == "True",
                "secretFields": {k: {"configured": v} for k, v in secret_fields.items()},
                "binding": {"name": binding} if binding else None,
            },
        )
        state.handled_hash = handled_hash
        state.handled_request = requested
        logger.info(
            "verified %s/%s: %s, %s, in %s ms; next at %s",
            *key,
            verification["result"],
            code,
            duration_ms,
            verification["nextTime"] or "a change or request",
            extra=object_fields(*key),
        )
        if next_time is not None:
            self._schedule(key, max(0.0, (next_time - _now()).total_seconds()))

    @staticmethod
    def _message(*states: ConditionState | None) -> str:
        for s in states:
            if s is not None and s.status != "True":
                return s.message
        return ""

    @staticmethod
    def _failures(
        previous: Mapping[str, Any], outcome: VerifyOutcome | None, verified: ConditionState | None
    ) -> int:
        if outcome is not None and outcome.result == "Succeeded":
            return 0
        return int(previous.get("consecutiveFailures") or 0) + 1

    async def _resolve_connector(
        self, namespace: str, spec: Mapping[str, Any]
    ) -> tuple[ConditionState, ConnectorSpec | None]:
        ckey = self._connector_key(namespace, spec)
        return judge_connector(ckey, await self._connector(ckey), self.drivers)

    @asynccontextmanager
    async def _budget(self, limiter: AsyncLimiter | None) -> AsyncIterator[None]:
        """The connector's rate limit first, then a slot: a throttled connector waiting
        for tokens must not hold the slots other connectors need."""
        async with limiter if limiter is not None else nullcontext(), self._slots:
            yield

    def _limiter(
        self, ckey: ConnectorKey | None, budget: tuple[int, float] | None
    ) -> AsyncLimiter | None:
        if budget is None or ckey is None:
            return None
        known = self.limiters.get(ckey)
        if known is None or known[0] != budget:
            known = (budget, AsyncLimiter(*budget))
            self.limiters[ckey] = known
        return known[1]

    async def _read_secrets(
        self, namespace: str, names: list[str]
    ) -> dict[str, dict[str, str] | None]:
        found: dict[str, dict[str, str] | None] = {}
        for name in names:
            secret = await self.client.get(kube.secret_path(namespace, name))
            self.secret_versions[(namespace, name)] = (
                secret["metadata"]["resourceVersion"] if secret else None
            )
            found[name] = None if secret is None else kube.secret_values(secret)
        return found

    async def _project_binding(
        self,
        key: Key,
        body: Mapping[str, Any],
        driver: str,
        config: Mapping[str, str | int | bool],
        secrets: Mapping[str, str],
    ) -> str:
        manifest = build_binding_secret(
            connection=key[1],
            namespace=key[0],
            uid=body["metadata"]["uid"],
            driver=driver,
            config=config,
            secrets=secrets,
        )
        digest = inputs_hash(manifest, None, None, {})
        state = self.states[key]
        if state.binding_digest != digest:
            await self.client.apply(kube.secret_path(key[0], binding_name(key[1])), manifest)
            state.binding_digest = digest
        return binding_name(key[1])

    def _default_conflict(self, key: Key) -> str | None:
        """Of the Connections claiming default for one connector, the oldest wins."""
        body = self.connections.get(key)
        if body is None or not body.get("spec", {}).get("default"):
            return None
        winner = self._default_winner(key[0], self._connector_key(key[0], body["spec"]))
        if winner is None or winner == key[1]:
            return None
        return f"Connection {winner!r} is the older default for this connector"

    def _default_winner(self, namespace: str, ckey: ConnectorKey) -> str | None:
        claims = [
            (b["metadata"].get("creationTimestamp", ""), name)
            for (ns, name), b in self.connections.items()
            if ns == namespace
            and b.get("spec", {}).get("default")
            and self._connector_key(ns, b["spec"]) == ckey
        ]
        return min(claims)[1] if claims else None

    async def _refresh_defaults(self, namespace: str) -> None:
        """Re-derive status for default claimants after a claim came or went."""
        for key, body in list(self.connections.items()):
            state = self.states.get(key)
            if key[0] != namespace or state is None or state.findings is None:
                continue
            if not body.get("spec", {}).get("default"):
                continue
            conflict = self._default_conflict(key)
            if conflict != state.findings.default_conflict:
                findings = Findings(
                    suspended=False,
                    connector=state.findings.connector,
                    credentials=state.findings.credentials,
                    verified=state.findings.verified,
                    default_conflict=conflict,
                )
                state.findings = findings
                await self._write_status(key, body, findings, {})

    # ----- writing -----------------------------------------------------------------

    async def labels_for(self, namespace: str, spec: Mapping[str, Any]) -> dict[str, str]:
        """The labels that let `kubectl get connections -l` filter by connector and driver."""
        ckey = self._connector_key(namespace, spec)
        connector = await self._connector(ckey)
        wanted = {CONNECTOR_LABEL: ckey[2]}
        driver = ((connector or {}).get("spec") or {}).get("driver")
        if driver:
            wanted[DRIVER_LABEL] = driver
        return wanted

    async def _ensure_labels(self, key: Key, body: dict[str, Any]) -> None:
        # usually set at admission already; a patch only without the webhook
        wanted = await self.labels_for(key[0], body.get("spec", {}))
        labels = body["metadata"].get("labels") or {}
        if all(labels.get(k) == v for k, v in wanted.items()):
            return
        await self.client.merge_patch(kube.connection_path(*key), {"metadata": {"labels": wanted}})

    async def _write_suspended(self, key: Key, body: dict[str, Any]) -> None:
        state = self.states[key]
        previous = state.findings
        findings = Findings(
            suspended=True,
            connector=previous.connector
            if previous
            else ConditionState("Unknown", Reason.SUSPENDED, "not resolved while suspended"),
            credentials=previous.credentials if previous else None,
            verified=previous.verified if previous else None,
        )
        await self._write_status(key, body, findings, {})

    async def _write_status(
        self, key: Key, body: dict[str, Any], findings: Findings, extra: dict[str, Any]
    ) -> None:
        status = body.get("status") or {}
        phase, conditions = connection_conditions(
            findings, status.get("conditions") or [], body["metadata"].get("generation"), _now()
        )
        ckey = self._connector_key(key[0], body.get("spec", {}))
        patch = {
            "status": {
                "phase": phase,
                "conditions": conditions,
                "isDefault": bool(body.get("spec", {}).get("default"))
                and self._default_winner(key[0], ckey) == key[1],
                "observedGeneration": body["metadata"].get("generation"),
                **extra,
            }
        }
        try:
            await self._patch_status(key, patch["status"])
        except kube.KubeApiError as exc:
            if not _refused(exc):
                raise
            # Sending the same patch again would be refused again. The reason alone
            # (short, from a fixed list) always fits, so the Connection still says what
            # is wrong; the next attempt comes at its regular time.
            logger.error(
                "the API server refused the status of %s/%s (%s %s); writing its reason alone",
                *key,
                exc.status,
                exc.reason,
                extra=object_fields(*key),
            )
            conditions = [{**c, "message": STATUS_REFUSED_MESSAGE} for c in conditions]
            try:
                await self._patch_status(key, {"phase": phase, "conditions": conditions})
            except kube.KubeApiError as again:
                if not _refused(again):
                    raise
                logger.error(
                    "the API server refused the reason of %s/%s too (%s %s)",
                    *key,
                    again.status,
                    again.reason,
                    extra=object_fields(*key),
                )
                return
        await self._after_status_write(key, body, status, phase, conditions)

    async def _patch_status(self, key: Key, status: Mapping[str, Any]) -> None:
        """Every status write of a Connection, cut to the schema's limits."""
        await self.client.merge_patch(
            kube.connection_path(*key) + "/status", {"status": fit_status(status)}
        )

    async def _after_status_write(
        self,
        key: Key,
        body: dict[str, Any],
        old_status: Mapping[str, Any],
        phase: str,
        conditions: list[dict[str, Any]],
    ) -> None:
        connector = (body.get("spec", {}).get("connectorRef") or {}).get("name", "")
        self.metrics.observe_phase(*key, connector, phase)
        await self._record_transition(key, old_status, phase, conditions)

    async def _record_transition(
        self, key: Key, old_status: Mapping[str, Any], phase: str, conditions: list[dict[str, Any]]
    ) -> None:
        """An Event when Ready changes status or reason; none on a repeat."""

        def ready_of(items: Any) -> tuple[str | None, str | None]:
            for c in items or []:
                if c.get("type") == "Ready":
                    return c.get("status"), c.get("reason")
            return None, None

        before = ready_of(old_status.get("conditions"))
        after = ready_of(conditions)
        if before == after:
            return
        reason_text = after[1] or ""
        if reason_text == Reason.SUSPENDED:
            event_reason, event_type = "Suspended", "Normal"
        elif before[1] == Reason.SUSPENDED:
            event_reason, event_type = "Resumed", "Normal"
        elif after[0] == "True":
            event_reason, event_type = "Verified", "Normal"
        elif reason_text == Reason.PENDING:
            return
        elif reason_text == Reason.STALE:
            event_reason, event_type = "Stale", "Warning"
        elif after[0] == "Unknown":
            return  # not a result yet (e.g. waiting for the rate limit)
        else:
            event_reason, event_type = "VerificationFailed", "Warning"
        message = next((c["message"] for c in conditions if c["type"] == "Ready"), "")
        if event_reason == "VerificationFailed":
            message = f"{reason_text}: {message}"
        if event_reason == "Resumed" and after[0] == "True":
            event_reason = "Verified"
        logger.info(
            "%s/%s is now %s: %s (%s)",
            *key,
            phase,
            event_reason,
            after[1],
            extra=object_fields(*key),
        )
        await self._post_event(key, event_reason, event_type, message)

    async def _post_event(self, key: Key, reason: str, type_: str, message: str) -> None:
        body = self.connections.get(key, {})
        now = _timestamp(_now())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{key[1]}.", "namespace": key[0]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": "Connection",
                "name": key[1],
                "namespace": key[0],
                "uid": body.get("metadata", {}).get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "patchbay"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": "patchbay.dev/operator",
            "reportingInstance": "patchbay",
        }
        try:
            await self.client.create(kube.events_path(key[0]), event)
        except kube.KubeApiError as exc:
            logger.warning(
                "could not record event %s on %s/%s: %s",
                reason,
                *key,
                exc,
                extra=object_fields(*key),
            )

    async def _write_connector_status(self, ckey: ConnectorKey, body: dict[str, Any]) -> None:
        kind, namespace, name = ckey
        try:
            spec = ConnectorSpec.model_validate(body.get("spec", {}))
            if spec.driver not in self.drivers:
                state = ConditionState(
                    "False", Reason.CONNECTOR_INVALID, f"driver {spec.driver!r} is not available"
                )
            elif spec.deprecated:
                state = ConditionState("True", Reason.CONNECTOR_DEPRECATED, "deprecated")
            else:
                state = ConditionState("True", Reason.VALID, "the definition is usable")
        except ValidationError as exc:
            state = ConditionState("False", Reason.CONNECTOR_INVALID, _validation_message(exc))
        old = body.get("status") or {}
        count = sum(1 for s in self.states.values() if s.connector == ckey)
        generation = body["metadata"].get("generation")
        conditions = merge_conditions(
            old.get("conditions") or [], [("Ready", state)], generation, _now()
        )
        desired = {"conditions": conditions, "connections": count, "observedGeneration": generation}
        if all(old.get(k) == v for k, v in desired.items() if k != "conditions") and [
            (c.get("status"), c.get("reason"), c.get("message")) for c in old.get("conditions", [])
        ] == [(c["status"], c["reason"], c["message"]) for c in conditions]:
            return
        await self.client.merge_patch(
            kube.connector_path(kind, namespace or None, name) + "/status", {"status": desired}
        )
