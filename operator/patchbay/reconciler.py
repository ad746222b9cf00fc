"""Reconciliation of Connections and Connectors, independent of kopf.

The kopf handlers in ``patchbay.controller`` feed watch events in. Each event
updates a compact record of its object (the spec and status as compact JSON,
a few typed fields; never the watched body, never a Secret's data) and puts
the object's key on one work queue. Workers take keys off the queue, one
worker per key at a time, and run one reconcile step: decide whether the
Connection needs a verification now, verify it, write its status in one
patch, and say when to look at it again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
import orjson
from pydantic import ValidationError

from patchbay import kube
from patchbay.api.common import API_VERSION
from patchbay.api.connection import (
    CheckResult,
    ConnectionSpec,
    ConnectionStatus,
    VerificationDetails,
    VerificationError,
    VerificationStatus,
)
from patchbay.api.connector import CheckType, ConnectorSpec
from patchbay.binding import binding_name, build_binding_secret
from patchbay.config import ConfigInvalidError, ResolvedConfig, resolve_config
from patchbay.controller.gates import DestinationGates
from patchbay.controller.queue import WorkQueue
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
from patchbay.ratelimit import TokenBucket
from patchbay.reasons import NOT_RETRYABLE, Reason
from patchbay.schedule import Bounds, Cadence, bounds, next_attempt
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
# after the API server failed a request while a Connection was reconciled: the first
# retry, doubled on each further failure up to the cap
API_RETRY_SECONDS = 10.0
API_RETRY_CAP_SECONDS = 300.0
# what a condition says when the API server refused the status that explained it
STATUS_REFUSED_MESSAGE = (
    "the API server refused this Connection's full status; the reason stands, "
    "the operator's log has the details"
)
# Verifications to one host:port at once. A host that accepts and never answers
# holds its verifications until their timeout; capped per destination, it cannot
# hold the workers that every other system's Connections need.
PER_DESTINATION = 16
# config variables that name where a driver connects
_DESTINATION_VARIABLES = ("host", "baseUrl", "endpoint", "url")


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _api_problem(exc: Exception) -> str:
    if isinstance(exc, kube.KubeApiError):
        return f"the API server answered {exc.status} {exc.reason}"
    return type(exc).__name__


def _refused(exc: kube.KubeApiError) -> bool:
    """A 4xx that repeating the same request cannot fix (not a conflict or throttling)."""
    return 400 <= exc.status < 500 and exc.status not in (404, 409, 429)


def _validation_message(exc: ValidationError) -> str:
    """pydantic's errors without the offending input, which may be a credential."""
    first = exc.errors(include_input=False, include_url=False)[0]
    location = ".".join(str(part) for part in first["loc"])
    return f"{location}: {first['msg']}"


def _compact(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def connector_key(namespace: str, spec: Mapping[str, Any]) -> ConnectorKey:
    ref = spec.get("connectorRef") or {}
    kind = ref.get("kind", "ClusterConnector")
    return (kind, "" if kind == "ClusterConnector" else namespace, ref.get("name", ""))


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


def destination(driver: str, config: ResolvedConfig) -> str:
    """host:port a verification connects to, as far as the config says."""
    for variable in _DESTINATION_VARIABLES:
        value = config.values.get(variable)
        if isinstance(value, str) and value:
            if "://" in value:
                return f"{driver}:{urlsplit(value).netloc.lower()}"
            return f"{driver}:{value.lower()}:{config.values.get('port', '')}"
    return driver


def _resource_version_older(new: str | None, known: str | None) -> bool:
    """An event older than what is known. resourceVersions are opaque by contract but
    etcd's are increasing integers; anything else is taken as newer."""
    if new is None or known is None or not new.isdigit() or not known.isdigit():
        return False
    return int(new) < int(known)


@dataclass(slots=True)
class Tracked:
    """What the operator keeps of one Connection: compact JSON of its spec and status,
    the metadata decisions need, and what it decided. Never the watched body."""

    uid: str
    created: str
    generation: int | None
    resource_version: str | None
    labels: tuple[tuple[str, str], ...]
    requested: str | None
    spec_json: bytes
    status_json: bytes
    loaded: bool = False  # handled_* taken from the stored status once
    handled_hash: str | None = None
    handled_request: str | None = None
    binding_digest: str | None = None
    secrets: tuple[str, ...] = ()
    connector: ConnectorKey | None = None
    findings: Findings | None = None

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = orjson.loads(self.spec_json)
        return spec

    @property
    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = orjson.loads(self.status_json)
        return status

    def observed(self) -> ConnectionStatus:
        """The stored status, read through the model it was written with."""
        try:
            return ConnectionStatus.model_validate(self.status)
        except ValidationError:
            return ConnectionStatus()  # not written by this operator: judged afresh


def _ours(labels: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(
        sorted((k, v) for k, v in (labels or {}).items() if k in (CONNECTOR_LABEL, DRIVER_LABEL))
    )


@dataclass(frozen=True)
class OperatorSettings:
    max_concurrent_verifications: int = 256
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
        self.tracked: dict[Key, Tracked] = {}
        self.connectors: dict[ConnectorKey, dict[str, Any] | None] = {}
        self.by_connector: dict[ConnectorKey, set[Key]] = defaultdict(set)
        self.secret_versions: dict[Key, str | None] = {}
        self.secret_readers: dict[Key, set[Key]] = defaultdict(set)
        # (namespace, connector) -> {name: creationTimestamp} of Connections claiming default
        self.default_claims: dict[tuple[str, ConnectorKey], dict[str, str]] = defaultdict(dict)
        self.buckets: dict[ConnectorKey, TokenBucket] = {}
        self._gates: DestinationGates[Key] | None = None
        self._queue: WorkQueue[Key] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._recount: set[ConnectorKey] = set()
        self._count_writer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random()
        # cleared while another replica works: the workers then wait, keys stay queued
        self.working = asyncio.Event()
        self.working.set()

    # ----- events ------------------------------------------------------------------

    @property
    def gates(self) -> DestinationGates[Key]:
        if self._gates is None:
            self._gates = DestinationGates(PER_DESTINATION, self.queue.add)
        return self._gates

    @property
    def queue(self) -> WorkQueue[Key]:
        """The work queue and its workers, started with the first event."""
        if self._queue is None:
            self._queue = WorkQueue(
                base_delay=API_RETRY_SECONDS, max_delay=API_RETRY_CAP_SECONDS, rng=self._rng
            )
            loop = asyncio.get_running_loop()
            self._workers = [
                loop.create_task(self._work(self._queue))
                for _ in range(self.settings.max_concurrent_verifications)
            ]
        return self._queue

    async def connection_changed(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        known = self.tracked.get(key)
        version = meta.get("resourceVersion")
        if (
            known is not None
            and known.uid == meta.get("uid")
            and _resource_version_older(version, known.resource_version)
        ):
            return  # an event from before our own last write
        spec = body.get("spec") or {}
        observed = (
            _ours(meta.get("labels")),
            (meta.get("annotations") or {}).get(VERIFY_REQUESTED_ANNOTATION),
            _compact(spec),
            _compact(body.get("status") or {}),
        )
        if known is not None and known.uid == meta.get("uid"):
            unchanged = observed == (
                known.labels,
                known.requested,
                known.spec_json,
                known.status_json,
            )
            # Updated in place: a verification running now updates the same record.
            known.labels, known.requested, known.spec_json, known.status_json = observed
            known.generation, known.resource_version = meta.get("generation"), version
            if unchanged:
                return  # our own status write coming back: the decision state has it
            record = known
        else:
            if known is not None:
                self._forget(key, known)  # replaced under the same name
            record = self.tracked[key] = Tracked(
                uid=meta.get("uid", ""),
                created=meta.get("creationTimestamp", ""),
                generation=meta.get("generation"),
                resource_version=version,
                labels=observed[0],
                requested=observed[1],
                spec_json=observed[2],
                status_json=observed[3],
            )
        self._claim_default(key, record, spec)
        self.queue.add(key)

    async def connection_deleted(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        record = self.tracked.pop(key, None)
        if self._queue is not None:
            self._queue.discard(key)
            self.gates.forget(key)
        self.metrics.forget_connection(namespace, name)
        if record is not None:
            self._forget(key, record)
        # the binding Secret is owned by the Connection: the garbage collector removes it

    def _forget(self, key: Key, record: Tracked) -> None:
        self._track(key, record, None, ())
        self._release_default(key)

    async def connector_changed(
        self, kind: str, body: dict[str, Any] | None, name: str, namespace: str | None
    ) -> None:
        ckey: ConnectorKey = (kind, namespace or "", name)
        before = self.connectors.get(ckey)
        self.connectors[ckey] = body
        if (
            before is not None
            and body is not None
            and before.get("metadata", {}).get("generation")
            == body.get("metadata", {}).get("generation")
        ):
            # A status-only change, usually our own write: nothing to re-verify, and the
            # count of Connections is kept current by the batched writes of _count_later.
            return
        if body is not None:
            await self._write_connector_status(ckey, body)
        else:
            self.buckets.pop(ckey, None)
        for key in list(self.by_connector.get(ckey, ())):
            self.queue.add(key)

    async def secret_changed(self, namespace: str, name: str, resource_version: str | None) -> None:
        """Only the resourceVersion is kept, of Secrets a Connection reads."""
        skey = (namespace, name)
        readers = self.secret_readers.get(skey)
        if not readers or self.secret_versions.get(skey) == resource_version:
            return
        self.secret_versions[skey] = resource_version
        for key in list(readers):
            self.queue.add(key)

    async def secrets_relisted(self, namespace: str | None, seen: set[Key]) -> None:
        """After a fresh list of Secrets: the read ones it no longer has are gone."""
        for skey, version in list(self.secret_versions.items()):
            if version is not None and skey not in seen and namespace in (None, skey[0]):
                await self.secret_changed(*skey, None)

    async def close(self) -> None:
        """Stop the workers, timers and pending writes, before the API client goes away."""
        if self._queue is not None:
            self._queue.close()
        tasks = [*self._workers, *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, work: Any) -> asyncio.Task[None]:
        """A background task of this reconciler, cancelled by close()."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ----- the workers -------------------------------------------------------------

    async def _work(self, queue: WorkQueue[Key]) -> None:
        while True:
            await self.working.wait()
            key = await queue.get()
            try:
                delay = await self.reconcile(key)
            except (kube.KubeApiError, aiohttp.ClientError, TimeoutError) as exc:
                # kopf does not retry event handlers: the queue does, with backoff, so a
                # failing request is never repeated on a fixed timer
                delay = queue.add_rate_limited(key)
                logger.warning(
                    "could not reconcile %s/%s (%s); trying again in %.0fs",
                    *key,
                    _api_problem(exc),
                    delay,
                    extra=object_fields(*key),
                )
            except Exception as exc:
                delay = queue.add_rate_limited(key)
                # the type only: a traceback's message could carry a credential
                logger.error(
                    "reconciling %s/%s crashed with %s; trying again in %.0fs",
                    *key,
                    type(exc).__name__,
                    delay,
                    extra=object_fields(*key),
                )
            else:
                queue.forget(key)
                if delay is not None and key in self.tracked:
                    queue.add_after(key, delay)
            finally:
                self.gates.release_unused(key)
                queue.done(key)

    # ----- deciding ----------------------------------------------------------------

    async def connector_spec(self, namespace: str, spec: Mapping[str, Any]) -> ConnectorSpec | None:
        """The connector a Connection spec refers to, as it is now (for admissions)."""
        ckey = connector_key(namespace, spec)
        _, connector = judge_connector(ckey, await self._connector(ckey, fresh=True), self.drivers)
        return connector

    async def _connector(self, ckey: ConnectorKey, fresh: bool = False) -> dict[str, Any] | None:
        """The cached connector, which the watches keep current on the working replica.
        ``fresh`` asks for the connector as it is now: a standby's watches are paused,
        so it reads from the API server instead."""
        if fresh and not self.working.is_set():
            kind, namespace, name = ckey
            return await self.client.get(kube.connector_path(kind, namespace or None, name))
        if ckey not in self.connectors:
            kind, namespace, name = ckey
            self.connectors[ckey] = await self.client.get(
                kube.connector_path(kind, namespace or None, name)
            )
        return self.connectors[ckey]

    async def _resolve_connector(
        self, namespace: str, spec: Mapping[str, Any]
    ) -> tuple[ConditionState, ConnectorSpec | None]:
        ckey = connector_key(namespace, spec)
        return judge_connector(ckey, await self._connector(ckey), self.drivers)

    async def _secret_version(self, namespace: str, name: str) -> str | None:
        skey = (namespace, name)
        if skey not in self.secret_versions:
            secret = await self.client.request(
                "GET", kube.secret_path(namespace, name), accept=kube.METADATA
            )
            self.secret_versions[skey] = secret["metadata"]["resourceVersion"] if secret else None
        return self.secret_versions[skey]

    def _track(
        self, key: Key, record: Tracked, ckey: ConnectorKey | None, names: Iterable[str]
    ) -> None:
        """Index the Connection under its connector and the Secrets it reads (None and
        none: under nothing, as when it is gone)."""
        if record.connector != ckey:
            if record.connector is not None:
                self.by_connector[record.connector].discard(key)
                self._count_later(record.connector)
            if ckey is not None:
                self.by_connector[ckey].add(key)
                self._count_later(ckey)
            record.connector = ckey
        wanted = tuple(sorted(set(names)))
        for old in set(record.secrets) - set(wanted):
            readers = self.secret_readers.get((key[0], old))
            if readers is not None:
                readers.discard(key)
                if not readers:
                    del self.secret_readers[(key[0], old)]
                    self.secret_versions.pop((key[0], old), None)
        for new in wanted:
            self.secret_readers[(key[0], new)].add(key)
        record.secrets = wanted

    async def _current_hash(self, key: Key, record: Tracked, spec: Mapping[str, Any]) -> str:
        ckey = connector_key(key[0], spec)
        connector = await self._connector(ckey)
        names = self._secret_names(spec, connector)
        self._track(key, record, ckey, names)
        versions = {n: await self._secret_version(key[0], n) for n in names}
        meta = (connector or {}).get("metadata", {})
        return inputs_hash(spec, meta.get("uid"), meta.get("generation"), versions)

    @staticmethod
    def _secret_names(spec: Mapping[str, Any], connector: dict[str, Any] | None) -> list[str]:
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

    async def reconcile(self, key: Key) -> float | None:
        """One step for one Connection; seconds until it should be looked at again."""
        record = self.tracked.get(key)
        if record is None:
            return None
        spec = record.spec
        status = record.observed()
        verification = status.verification or VerificationStatus()
        if not record.loaded:
            record.handled_hash = verification.inputs_hash
            record.handled_request = verification.requested_at
            record.loaded = True
        await self._ensure_labels(key, record, spec)
        if spec.get("suspend"):
            if status.phase != "Suspended":
                await self._write_suspended(key, record)
            return None
        current = await self._current_hash(key, record, spec)
        resumed = status.phase == "Suspended"
        changed = current != record.handled_hash or resumed
        if (spec.get("verification") or {}).get("mode") == "Manual":
            changed = status.verification is None  # once at creation, then only on request
        if changed or record.requested != record.handled_request:
            logger.info(
                "verifying %s/%s now: %s",
                *key,
                "verification requested"
                if record.requested != record.handled_request
                else f"inputs changed ({record.handled_hash} -> {current})",
                extra=object_fields(*key),
            )
            return await self.verify(key, record, current, status)
        if verification.next_time is not None:
            wait = (verification.next_time - _now()).total_seconds()
            return wait if wait > 0 else await self.verify(key, record, current, status)
        return await self._watch_staleness(key, record, spec, status)

    async def _watch_staleness(
        self, key: Key, record: Tracked, spec: Mapping[str, Any], observed: ConnectionStatus
    ) -> float | None:
        """Without a next regular verification, a success ages into reason Stale."""
        last_success = (observed.verification or VerificationStatus()).last_success_time
        if last_success is None or _ready_reason(observed) != Reason.VERIFIED:
            return None
        status = record.status
        connector = await self._connector(connector_key(key[0], spec))
        try:
            connection_spec = ConnectionSpec.model_validate(spec)
            connector_spec = ConnectorSpec.model_validate((connector or {}).get("spec", {}))
        except ValidationError:
            return None
        stale_at = bounds(connection_spec, connector_spec).cadence.stale_at(last_success)
        if _now() < stale_at:
            return (stale_at - _now()).total_seconds()
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
            record.generation,
            _now(),
        )
        await self._patch_status(key, record, {"phase": "Pending", "conditions": conditions})
        await self._after_status_write(key, record, status, "Pending", conditions)
        return None

    # ----- verifying ---------------------------------------------------------------

    async def verify(
        self, key: Key, record: Tracked, handled_hash: str, observed: ConnectionStatus
    ) -> float | None:
        """Resolve, validate, verify, project the binding and write status once."""
        namespace = key[0]
        spec_body = record.spec
        requested = record.requested
        started = _now()
        connector_state, connector_spec = await self._resolve_connector(namespace, spec_body)
        outcome: VerifyOutcome | None = None
        credentials_state: ConditionState | None = None
        verified_state: ConditionState | None = None
        secret_fields: dict[str, bool] = {}
        binding: str | None = None
        duration_ms: int | None = None
        cadence = Cadence("Periodic", 3600.0)
        gate: str | None = None
        try:
            if connector_spec is not None:
                try:
                    spec = ConnectionSpec.model_validate(spec_body)
                    limits = bounds(spec, connector_spec)
                    cadence = limits.cadence
                    config = resolve_config(connector_spec, spec.config)
                    # before the Secrets are read: a Connection sent to wait in line
                    # would read them again when its turn comes
                    target = destination(connector_spec.driver, config)
                    if not self.gates.enter(target, key):
                        return None  # back when a verification to that host ends
                    gate = target
                    secrets = await self._read_secrets(namespace, record.secrets)
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
                            key, record, connector_spec.driver, config.values, creds.values
                        )
                        wait = self._take_budget(record.connector, limits)
                        if wait > 0:
                            await self._write_rate_limited(
                                key, record, connector_state, credentials_state
                            )
                            return wait
                        outcome, elapsed = await run_verification(
                            self.drivers[connector_spec.driver],
                            build_verify_request(
                                connector_spec, spec, config, creds, limits.timeout_seconds
                            ),
                            egress=self.settings.egress,
                            timeout_seconds=limits.timeout_seconds,
                        )
                        duration_ms = int(elapsed * 1000)
                        verified_state = _verified_state(outcome, limits)
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
        finally:
            if gate is not None:
                self.gates.leave(gate)
        findings = Findings(
            suspended=False,
            connector=connector_state,
            credentials=credentials_state,
            verified=verified_state,
            default_conflict=self._default_conflict(key, record),
        )
        record.findings = findings
        finished = _now()
        previous = observed.verification or VerificationStatus()
        failures = (
            0
            if outcome is not None and outcome.result == "Succeeded"
            else previous.consecutive_failures + 1
        )
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
        succeeded = outcome is not None and outcome.result == "Succeeded"
        result = outcome.result if outcome else "Unknown" if verified_state is None else "Failed"
        verification = VerificationStatus.model_construct(
            last_attempt_time=_second(started),
            last_success_time=_second(finished) if succeeded else previous.last_success_time,
            next_time=_second(next_time) if next_time else None,
            duration_ms=duration_ms,
            consecutive_failures=failures,
            inputs_hash=handled_hash,
            requested_at=requested,
            result=result,
            error=None
            if succeeded
            else VerificationError.model_construct(
                code=str(code),
                message=_first_problem(verified_state, credentials_state, connector_state),
                retryable=retryable,
            ),
            details=VerificationDetails.model_construct(
                server_version=outcome.server_version, latency_ms=outcome.latency_ms
            )
            if outcome is not None
            else None,
            checks=[
                CheckResult.model_construct(
                    type=cast(CheckType, c.type),  # the type of the CheckSpec it ran
                    target=c.target,
                    result=c.result,
                    code=str(c.code),
                    message=c.message,
                )
                for c in (outcome.checks if outcome else ())
            ],
        )
        self.metrics.observe_verification(
            connector_spec.driver if outcome is not None and connector_spec else None,
            result,
            str(code),
            duration_ms / 1000 if duration_ms is not None else None,
        )
        await self._write_status(
            key,
            record,
            findings,
            {
                "verification": _wire(verification),
                "hasCredentials": bool(secret_fields) and all(secret_fields.values())
                if secret_fields
                else credentials_state is not None and credentials_state.status == "True",
                "secretFields": {k: {"configured": v} for k, v in secret_fields.items()},
                "binding": {"name": binding} if binding else None,
            },
        )
        record.handled_hash = handled_hash
        record.handled_request = requested
        logger.info(
            "verified %s/%s: %s, %s, in %s ms; next at %s",
            *key,
            result,
            code,
            duration_ms,
            _timestamp(next_time) or "a change or request",
            extra=object_fields(*key),
        )
        if next_time is not None:
            return max(0.0, (next_time - _now()).total_seconds())
        return None

    def _take_budget(self, ckey: ConnectorKey | None, limits: Bounds) -> float:
        """0 when the connector's rate limit allows a call now, else seconds to wait.

        Another edit of the connector keeps the spent budget, or a re-verification
        wave would be free; only a new rateLimit starts a new bucket.
        """
        if limits.rate_limit is None or ckey is None:
            return 0.0
        bucket = self.buckets.get(ckey)
        if bucket is None or bucket.budget != limits.rate_limit:
            bucket = self.buckets[ckey] = TokenBucket(*limits.rate_limit)
        wait = bucket.take()
        if wait > 0:
            self.metrics.rate_limited.inc()
        return wait

    async def _write_rate_limited(
        self,
        key: Key,
        record: Tracked,
        connector_state: ConditionState,
        credentials_state: ConditionState,
    ) -> None:
        if _ready_reason(record.observed()) == Reason.RATE_LIMITED:
            return  # said already
        await self._write_status(
            key,
            record,
            Findings(
                suspended=False,
                connector=connector_state,
                credentials=credentials_state,
                verified=ConditionState(
                    "Unknown", Reason.RATE_LIMITED, "waiting for the connector's rate limit"
                ),
            ),
            {},
        )

    async def _read_secrets(
        self, namespace: str, names: Iterable[str]
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
        record: Tracked,
        driver: str,
        config: Mapping[str, str | int | bool],
        secrets: Mapping[str, str],
    ) -> str:
        manifest = build_binding_secret(
            connection=key[1],
            namespace=key[0],
            uid=record.uid,
            driver=driver,
            config=config,
            secrets=secrets,
        )
        digest = inputs_hash(manifest, None, None, {})
        if record.binding_digest != digest:
            await self.client.apply(kube.secret_path(key[0], binding_name(key[1])), manifest)
            record.binding_digest = digest
        return binding_name(key[1])

    # ----- defaults ----------------------------------------------------------------

    def _claim_default(self, key: Key, record: Tracked, spec: Mapping[str, Any]) -> None:
        """Index the claim to be the default, so a conflict is found without a scan."""
        self._release_default(key)
        if spec.get("default"):
            claim = (key[0], connector_key(key[0], spec))
            before = self._default_winner(*claim)
            self.default_claims[claim][key[1]] = record.created
            if before not in (None, self._default_winner(*claim)):
                self._requeue_claims(claim)

    def _release_default(self, key: Key) -> None:
        for claim, names in list(self.default_claims.items()):
            if claim[0] == key[0] and key[1] in names:
                before = self._default_winner(*claim)
                del names[key[1]]
                if not names:
                    del self.default_claims[claim]
                if before == key[1]:
                    self._requeue_claims(claim)

    def _requeue_claims(self, claim: tuple[str, ConnectorKey]) -> None:
        """The winner changed: the other claimants re-derive their status."""
        for name in self.default_claims.get(claim, {}):
            record = self.tracked.get((claim[0], name))
            if record is not None and record.findings is not None:
                self._start(self._refresh_default((claim[0], name)))

    async def _refresh_default(self, key: Key) -> None:
        record = self.tracked.get(key)
        if record is None or record.findings is None:
            return
        conflict = self._default_conflict(key, record)
        if conflict == record.findings.default_conflict:
            return
        findings = Findings(
            suspended=False,
            connector=record.findings.connector,
            credentials=record.findings.credentials,
            verified=record.findings.verified,
            default_conflict=conflict,
        )
        record.findings = findings
        try:
            await self._write_status(key, record, findings, {})
        except (kube.KubeApiError, aiohttp.ClientError, TimeoutError):
            self.queue.add(key)

    def _default_winner(self, namespace: str, ckey: ConnectorKey) -> str | None:
        """Of the Connections claiming default for one connector, the oldest wins."""
        claims = self.default_claims.get((namespace, ckey))
        if not claims:
            return None
        return min((created, name) for name, created in claims.items())[1]

    def _default_conflict(self, key: Key, record: Tracked) -> str | None:
        spec = record.spec
        if not spec.get("default"):
            return None
        winner = self._default_winner(key[0], connector_key(key[0], spec))
        if winner is None or winner == key[1]:
            return None
        return f"Connection {winner!r} is the older default for this connector"

    # ----- writing -----------------------------------------------------------------

    async def labels_for(
        self, namespace: str, spec: Mapping[str, Any], fresh: bool = False
    ) -> dict[str, str]:
        """The labels that let `kubectl get connections -l` filter by connector and driver."""
        ckey = connector_key(namespace, spec)
        connector = await self._connector(ckey, fresh)
        wanted = {CONNECTOR_LABEL: ckey[2]}
        driver = ((connector or {}).get("spec") or {}).get("driver")
        if driver:
            wanted[DRIVER_LABEL] = driver
        return wanted

    async def _ensure_labels(self, key: Key, record: Tracked, spec: Mapping[str, Any]) -> None:
        # usually set at admission already; a patch only without the webhook
        wanted = await self.labels_for(key[0], spec)
        have = dict(record.labels)
        if all(have.get(k) == v for k, v in wanted.items()):
            return
        await self.client.merge_patch(kube.connection_path(*key), {"metadata": {"labels": wanted}})
        record.labels = _ours({**have, **wanted})

    async def _write_suspended(self, key: Key, record: Tracked) -> None:
        previous = record.findings
        findings = Findings(
            suspended=True,
            connector=previous.connector
            if previous
            else ConditionState("Unknown", Reason.SUSPENDED, "not resolved while suspended"),
            credentials=previous.credentials if previous else None,
            verified=previous.verified if previous else None,
        )
        await self._write_status(key, record, findings, {})

    async def _write_status(
        self, key: Key, record: Tracked, findings: Findings, extra: dict[str, Any]
    ) -> None:
        status = record.status
        phase, conditions = connection_conditions(
            findings, status.get("conditions") or [], record.generation, _now()
        )
        spec = record.spec
        written = {
            "phase": phase,
            "conditions": conditions,
            "isDefault": bool(spec.get("default"))
            and self._default_winner(key[0], connector_key(key[0], spec)) == key[1],
            "observedGeneration": record.generation,
            **extra,
        }
        # Sending a refused patch again would be refused again. The reason alone (short,
        # from a fixed list) always fits, so the Connection still says what is wrong; the
        # next attempt comes at its regular time.
        if not await self._patch_unless_refused(key, record, written, "status"):
            conditions = [{**c, "message": STATUS_REFUSED_MESSAGE} for c in conditions]
            reason_only = {"phase": phase, "conditions": conditions}
            if not await self._patch_unless_refused(key, record, reason_only, "reason"):
                return
        await self._after_status_write(key, record, status, phase, conditions)

    async def _patch_unless_refused(
        self, key: Key, record: Tracked, status: Mapping[str, Any], what: str
    ) -> bool:
        """False when the API server refused the patch as such (a 4xx repeating cannot fix)."""
        try:
            await self._patch_status(key, record, status)
        except kube.KubeApiError as exc:
            if not _refused(exc):
                raise
            logger.error(
                "the API server refused the %s of %s/%s (%s %s)",
                what,
                *key,
                exc.status,
                exc.reason,
                extra=object_fields(*key),
            )
            return False
        return True

    async def _patch_status(self, key: Key, record: Tracked, status: Mapping[str, Any]) -> None:
        """Every status write of a Connection: cut to the schema's limits and read through
        the ConnectionStatus model, so only what the API defines is written. The answer
        becomes the status the next decision starts from."""
        written = _wire(ConnectionStatus.model_validate(fit_status(status)))
        answer = await self.client.merge_patch(
            kube.connection_path(*key) + "/status", {"status": written}
        )
        if answer:
            record.status_json = _compact(answer.get("status") or {})
            record.resource_version = (answer.get("metadata") or {}).get("resourceVersion")

    async def _after_status_write(
        self,
        key: Key,
        record: Tracked,
        old_status: Mapping[str, Any],
        phase: str,
        conditions: list[dict[str, Any]],
    ) -> None:
        connector = (record.connector or ("", "", ""))[2]
        self.metrics.observe_phase(*key, connector, phase)
        await self._record_transition(key, record, old_status, phase, conditions)

    async def _record_transition(
        self,
        key: Key,
        record: Tracked,
        old_status: Mapping[str, Any],
        phase: str,
        conditions: list[dict[str, Any]],
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
        await self._post_event(key, record, event_reason, event_type, message)

    async def _post_event(
        self, key: Key, record: Tracked, reason: str, type_: str, message: str
    ) -> None:
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
                "uid": record.uid,
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
                "could not record event %s on %s/%s: %s %s",
                reason,
                *key,
                exc.status,
                exc.reason,
                extra=object_fields(*key),
            )

    # ----- connectors ----------------------------------------------------------------

    def _count_later(self, ckey: ConnectorKey) -> None:
        """Connector status counts its Connections; batched so a burst costs one write."""
        self._recount.add(ckey)
        # one writer at a time: two could land out of order and leave an old count
        if self._count_writer is None or self._count_writer.done():
            self._count_writer = self._start(self._flush_counts())

    async def _flush_counts(self) -> None:
        while self._recount:
            await asyncio.sleep(1.0)
            pending, self._recount = self._recount, set()
            await self._write_counts(pending)

    async def _write_counts(self, pending: set[ConnectorKey]) -> None:
        for ckey in pending:
            body = self.connectors.get(ckey)
            if body is None:
                continue
            try:
                await self._write_connector_status(ckey, body)
            except (kube.KubeApiError, aiohttp.ClientError, TimeoutError) as exc:
                again = not (isinstance(exc, kube.KubeApiError) and _refused(exc))
                logger.warning(
                    "could not update status of %s %s (%s)%s",
                    ckey[0],
                    ckey[2],
                    _api_problem(exc),
                    "; trying again" if again else "",
                    extra=object_fields(ckey[1], ckey[2]),
                )
                if again:
                    self._recount.add(ckey)

    async def _write_connector_status(self, ckey: ConnectorKey, body: dict[str, Any]) -> None:
        kind, namespace, name = ckey
        state, _ = judge_connector(ckey, body, self.drivers)
        if state.status == "True":
            state = ConditionState(
                "True",
                state.reason,
                "deprecated"
                if state.reason == Reason.CONNECTOR_DEPRECATED
                else "the definition is usable",
            )
        old = body.get("status") or {}
        count = len(self.by_connector.get(ckey, ()))
        generation = body["metadata"].get("generation")
        conditions = merge_conditions(
            old.get("conditions") or [], [("Ready", state)], generation, _now()
        )
        desired = {"conditions": conditions, "connections": count, "observedGeneration": generation}
        if all(old.get(k) == v for k, v in desired.items() if k != "conditions") and [
            (c.get("status"), c.get("reason"), c.get("message")) for c in old.get("conditions", [])
        ] == [(c["status"], c["reason"], c["message"]) for c in conditions]:
            return
        answer = await self.client.merge_patch(
            kube.connector_path(kind, namespace or None, name) + "/status", {"status": desired}
        )
        if answer:
            # the next comparison starts from what was written, not from the last event
            self.connectors[ckey] = {**body, "status": answer.get("status") or desired}


def _verified_state(outcome: VerifyOutcome, limits: Bounds) -> ConditionState:
    return ConditionState(
        "True"
        if outcome.result == "Succeeded"
        else "Unknown"
        if outcome.result == "Unknown"
        else "False",
        outcome.code,
        "; ".join(m for m in (outcome.message, *limits.notes) if m),
    )


def _first_problem(*states: ConditionState | None) -> str:
    for s in states:
        if s is not None and s.status != "True":
            return s.message
    return ""


def _second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def _wire(model: ConnectionStatus | VerificationStatus) -> dict[str, Any]:
    """The model as written: camelCase, and a field set to None stays None, so the merge
    patch removes it (an error from before a success, a binding that went away)."""
    return model.model_dump(by_alias=True, mode="json", exclude_unset=True)


def _ready_reason(status: ConnectionStatus) -> str | None:
    return next((c.reason for c in status.conditions if c.type == "Ready"), None)
