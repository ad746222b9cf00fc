"""Reconciliation of Connections, independent of kopf.

The kopf handlers in ``patchbay.controller.handlers`` feed watch events in. Each
event updates the compact record of its object in the cache and puts the object's
key on one work queue. Workers take keys off the queue, one worker per key at a
time, and run one reconcile step: decide whether the Connection needs a
verification now, verify it, write its status in one patch, and say when to look
at it again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

import aiohttp
from pydantic import ValidationError

from patchbay import kube
from patchbay.api.common import (
    ALLOWED_CONNECTIONS_ANNOTATION,
    AUTHORIZATION_ANNOTATION,
    CONNECTOR_LABEL,
    DRIVER_LABEL,
    VERIFY_REQUESTED_ANNOTATION,
)
from patchbay.api.connection import (
    CheckResult,
    ConnectionSpec,
    ConnectionStatus,
    VerificationDetails,
    VerificationError,
    VerificationStatus,
)
from patchbay.api.connector import CheckType, ConnectorSpec
from patchbay.api.reasons import NOT_RETRYABLE, Reason
from patchbay.controller.cache import (
    Cache,
    Key,
    Tracked,
    compact,
    our_labels,
    resource_version_older,
)
from patchbay.controller.connector import ConnectorStatusWriter
from patchbay.controller.defaults import Claim, DefaultClaims
from patchbay.controller.gates import DestinationGates
from patchbay.controller.queue import WorkQueue
from patchbay.controller.writer import (
    StatusWriter,
    api_problem,
    now,
    ready_reason,
    timestamp,
    wire,
)
from patchbay.core.authorization import opted_in, record_holds, scope
from patchbay.core.binding import (
    SUSPENDED_KEY,
    binding_name,
    build_binding_secret,
    withheld_binding_secret,
)
from patchbay.core.config import (
    ConfigInvalidError,
    ResolvedConfig,
    allow_connection_options,
    resolve_config,
)
from patchbay.core.credentials import (
    CredentialsError,
    credential_sources,
    referenced_secrets,
    resolve_credentials,
)
from patchbay.core.egress import EgressPolicy, connector_egress
from patchbay.core.inputs import inputs_hash
from patchbay.core.ratelimit import BudgetScope, KeyedBuckets, budget_scope
from patchbay.core.resolve import (
    ConnectorKey,
    connector_key,
    destination,
    judge_connector,
    validation_message,
)
from patchbay.core.schedule import Bounds, Cadence, bounds, next_attempt
from patchbay.core.status import (
    STALLED_REASONS,
    SUCCESS_WARNINGS,
    ConditionState,
    Findings,
    merge_conditions,
)
from patchbay.core.tokens import (
    build_token_state,
    standing_values,
    token_renewal,
    token_state_name,
    unexpired_access_token,
)
from patchbay.core.verification import build_verify_request, run_verification
from patchbay.drivers.base import Driver, VerifyOutcome
from patchbay.logs import object_fields
from patchbay.metrics import Metrics

logger = logging.getLogger(__name__)
# The binding digest of a record whose binding a suspend emptied: matches no projection.
WITHHELD = "withheld"

# after the API server failed a request while a Connection was reconciled: the first
# retry, doubled on each further failure up to the cap
API_RETRY_SECONDS = 10.0
API_RETRY_CAP_SECONDS = 300.0
# Verifications to one host:port at once. A host that accepts and never answers
# holds its verifications until their timeout; capped per destination, it cannot
# hold the workers that every other system's Connections need.
PER_DESTINATION = 16


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
        self.cache = Cache()
        # the key of admission records (None: no record holds; Secrets must opt in)
        self.admission_key: bytes | None = None
        self.defaults = DefaultClaims()
        self.buckets: KeyedBuckets[tuple[ConnectorKey, BudgetScope]] = KeyedBuckets()
        self._gates: DestinationGates[Key] | None = None
        self._queue: WorkQueue[Key] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random()
        self.writer = StatusWriter(client, self.metrics)
        self.connector_status = ConnectorStatusWriter(client, self.drivers, self.cache, self._start)
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
        known = self.cache.tracked.get(key)
        version = meta.get("resourceVersion")
        if (
            known is not None
            and known.uid == meta.get("uid")
            and resource_version_older(version, known.resource_version)
        ):
            return  # an event from before our own last write
        spec = body.get("spec") or {}
        annotations = meta.get("annotations") or {}
        observed = (
            our_labels(meta.get("labels")),
            annotations.get(VERIFY_REQUESTED_ANNOTATION),
            compact(spec),
            compact(body.get("status") or {}),
            annotations.get(AUTHORIZATION_ANNOTATION),
        )
        if known is not None and known.uid == meta.get("uid"):
            unchanged = observed == (
                known.labels,
                known.requested,
                known.spec_json,
                known.status_json,
                known.authorization,
            )
            # Updated in place: a verification running now updates the same record.
            (
                known.labels,
                known.requested,
                known.spec_json,
                known.status_json,
                known.authorization,
            ) = observed
            known.generation, known.resource_version = meta.get("generation"), version
            if unchanged:
                return  # our own status write coming back: the decision state has it
            record = known
        else:
            if known is not None:
                self._forget(key, known)  # replaced under the same name
            record = self.cache.tracked[key] = Tracked(
                uid=meta.get("uid", ""),
                created=meta.get("creationTimestamp", ""),
                generation=meta.get("generation"),
                resource_version=version,
                labels=observed[0],
                requested=observed[1],
                spec_json=observed[2],
                status_json=observed[3],
                authorization=observed[4],
            )
        self._claim_default(key, record, spec)
        self.queue.add(key)

    async def connection_deleted(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        record = self.cache.tracked.pop(key, None)
        if self._queue is not None:
            self._queue.discard(key)
            self.gates.forget(key)
        self.metrics.forget_connection(namespace, name)
        if record is not None:
            self._forget(key, record)
        # the binding Secret is owned by the Connection: the garbage collector removes it

    def _forget(self, key: Key, record: Tracked) -> None:
        self.connector_status.count_later(self.cache.index(key, record, None, ()))
        self._refresh_claims(self.defaults.release(key))

    async def connector_changed(
        self, kind: str, body: dict[str, Any] | None, name: str, namespace: str | None
    ) -> None:
        ckey: ConnectorKey = (kind, namespace or "", name)
        before = self.cache.connectors.get(ckey)
        self.cache.connectors[ckey] = body
        if (
            before is not None
            and body is not None
            and before.get("metadata", {}).get("generation")
            == body.get("metadata", {}).get("generation")
        ):
            # A status-only change, usually our own write: nothing to re-verify, and the
            # count of Connections is kept current by ConnectorStatusWriter.count_later.
            return
        if body is not None:
            await self.connector_status.write(ckey, body)
        else:
            self.buckets.discard(lambda bucket: bucket[0] == ckey)
        for key in list(self.cache.by_connector.get(ckey, ())):
            self.queue.add(key)

    async def secret_changed(self, namespace: str, name: str, resource_version: str | None) -> None:
        """Only the resourceVersion is kept, of Secrets a Connection reads."""
        skey = (namespace, name)
        readers = self.cache.secret_readers.get(skey)
        if not readers or self.cache.secret_versions.get(skey) == resource_version:
            return
        self.cache.secret_versions[skey] = resource_version
        for key in list(readers):
            self.queue.add(key)

    async def secrets_relisted(self, namespace: str | None, seen: set[Key]) -> None:
        """After a fresh list of Secrets: the read ones it no longer has are gone."""
        for skey, version in list(self.cache.secret_versions.items()):
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
                    api_problem(exc),
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
                if delay is not None and key in self.cache.tracked:
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
        if ckey not in self.cache.connectors:
            kind, namespace, name = ckey
            self.cache.connectors[ckey] = await self.client.get(
                kube.connector_path(kind, namespace or None, name)
            )
        return self.cache.connectors[ckey]

    async def _secret_version(self, namespace: str, name: str) -> str | None:
        skey = (namespace, name)
        if skey not in self.cache.secret_versions:
            secret = await self.client.request(
                "GET", kube.secret_path(namespace, name), accept=kube.METADATA
            )
            self.cache.secret_versions[skey] = (
                secret["metadata"]["resourceVersion"] if secret else None
            )
        return self.cache.secret_versions[skey]

    async def _current_hash(
        self, key: Key, record: Tracked, spec: Mapping[str, Any], *, fetch: bool = True
    ) -> str | None:
        connector = await self._connector(connector_key(key[0], spec))
        return await self._inputs_hash(key, record, spec, connector, fetch=fetch)

    async def _inputs_hash(
        self,
        key: Key,
        record: Tracked,
        spec: Mapping[str, Any],
        connector: dict[str, Any] | None,
        *,
        fetch: bool = True,
    ) -> str | None:
        """The inputs hash, after indexing the Connection under its connector and Secrets.
        Without ``fetch``, None when a Secret's version is not known yet, instead of
        reading its metadata."""
        ckey = connector_key(key[0], spec)
        names = self._secret_names(spec, connector)
        self.connector_status.count_later(self.cache.index(key, record, ckey, names))
        versions: dict[str, str | None] = {}
        for name in names:
            if not fetch and (key[0], name) not in self.cache.secret_versions:
                return None
            versions[name] = await self._secret_version(key[0], name)
        meta = (connector or {}).get("metadata", {})
        return inputs_hash(
            spec, meta.get("uid"), meta.get("generation"), versions, record.authorization
        )

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
        record = self.cache.tracked.get(key)
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
            withhold = not (spec.get("binding") or {}).get("keepWhileSuspended")
            withheld = bool(status.binding and status.binding.credentials_withheld)
            # keepWhileSuspended set later brings nothing back before a verification
            if status.phase != "Suspended" or (withhold and not withheld):
                await self._write_suspended(key, record, withhold)
            return None
        first = status.verification is None
        requested = record.requested != record.handled_request
        # A first or requested verification reads the Secrets anyway and learns their
        # versions from them: no read of their metadata before it.
        current = await self._current_hash(key, record, spec, fetch=not (first or requested))
        resumed = status.phase == "Suspended"
        changed = first or current != record.handled_hash or resumed
        if (spec.get("verification") or {}).get("mode") == "Manual":
            changed = first  # once at creation, then only on request
        if changed or requested:
            logger.info(
                "verifying %s/%s now: %s",
                *key,
                "verification requested"
                if requested
                else f"inputs changed ({record.handled_hash} -> {current})",
                extra=object_fields(*key),
            )
            return await self.verify(key, record, current, status)
        if verification.next_time is not None:
            wait = (verification.next_time - now()).total_seconds()
            return wait if wait > 0 else await self.verify(key, record, current, status)
        return await self._watch_staleness(key, record, spec, status)

    async def _watch_staleness(
        self, key: Key, record: Tracked, spec: Mapping[str, Any], observed: ConnectionStatus
    ) -> float | None:
        """Without a next regular verification, a success ages into reason Stale."""
        last_success = (observed.verification or VerificationStatus()).last_success_time
        if last_success is None or ready_reason(observed) not in (
            Reason.VERIFIED,
            *SUCCESS_WARNINGS,
        ):
            return None
        status = record.status
        connector = await self._connector(connector_key(key[0], spec))
        try:
            connection_spec = ConnectionSpec.model_validate(spec)
            connector_spec = ConnectorSpec.model_validate((connector or {}).get("spec", {}))
        except ValidationError:
            return None
        stale_at = bounds(connection_spec, connector_spec).cadence.stale_at(last_success)
        if now() < stale_at:
            return (stale_at - now()).total_seconds()
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
            now(),
        )
        await self.writer.patch(
            key,
            record,
            {"phase": "Pending", "reason": Reason.STALE, "conditions": conditions},
        )
        await self.writer.written(key, record, status, "Pending", conditions)
        return None

    # ----- verifying ---------------------------------------------------------------

    async def verify(
        self, key: Key, record: Tracked, handled_hash: str | None, observed: ConnectionStatus
    ) -> float | None:
        """Resolve, validate, verify, project the binding and write status once.
        ``handled_hash`` None: the inputs hash is taken once the Secrets were read."""
        namespace = key[0]
        spec_body = record.spec
        requested = record.requested
        started = now()
        ckey = connector_key(namespace, spec_body)
        connector_body = await self._connector(ckey)
        connector_state, connector_spec = judge_connector(ckey, connector_body, self.drivers)
        outcome: VerifyOutcome | None = None
        credentials_state: ConditionState | None = None
        verified_state: ConditionState | None = None
        secret_fields: dict[str, bool] = {}
        binding: str | None = None
        binding_conflict: str | None = None
        renew_at: datetime | None = None  # of the access token in the binding
        duration_ms: int | None = None
        cadence = Cadence("Periodic", 3600.0)
        gate: str | None = None
        # suspended without keepWhileSuspended: nothing with credentials until a success
        withheld = bool(observed.binding and observed.binding.credentials_withheld)
        try:
            if connector_spec is not None:
                try:
                    spec = ConnectionSpec.model_validate(spec_body)
                    limits = bounds(spec, connector_spec)
                    cadence = limits.cadence
                    config = resolve_config(connector_spec, spec.config)
                    allow_connection_options(connector_spec, spec)
                    # before the Secrets are read: a Connection sent to wait in line
                    # would read them again when its turn comes
                    target = destination(connector_spec.driver, config)
                    if not self.gates.enter(target, key):
                        return None  # back when a verification to that host ends
                    gate = target
                    secrets, allowing = await self._read_secrets(namespace, key[1], record.secrets)
                    try:
                        self._authorise(key, record, spec_body, secrets, allowing)
                        creds = resolve_credentials(spec, config.secret_variables, secrets)
                        # only a refresh grant may be issued new values in place of these
                        sources: dict[str, str] = {}
                        if connector_spec.auth.type == "oauth2RefreshToken":
                            sources = self._sources(namespace, spec, config)
                            standing = await self._standing_tokens(key, sources)
                            creds = replace(creds, values={**creds.values, **standing})
                        secret_fields = creds.configured
                        credentials_state = ConditionState(
                            "True", Reason.VERIFIED, "all referenced Secrets and keys found"
                        )
                    except CredentialsError as exc:
                        credentials_state = ConditionState("False", exc.reason, exc.message)
                        secret_fields = {v.key: False for v in config.secret_variables}
                        creds = None
                    bind_token = spec.binding is not None and spec.binding.access_token
                    if creds is not None:
                        # with a token to bind, or credentials withheld since a suspend:
                        # projected once the verification is over
                        if not (bind_token or withheld):
                            binding, binding_conflict = await self._project_binding(
                                key, record, connector_spec, config.values, creds.values
                            )
                        wait = self._take_budget(
                            record.connector,
                            budget_scope(
                                connector_spec.rate_limit,
                                key,
                                spec,
                                config.secret_variables,
                                target,
                            ),
                            limits,
                        )
                        if wait > 0:
                            await self._write_rate_limited(
                                key, record, connector_state, credentials_state
                            )
                            return wait
                        request = build_verify_request(
                            connector_spec, spec, config, creds, limits.timeout_seconds
                        )
                        outcome, elapsed = await run_verification(
                            self.drivers[connector_spec.driver],
                            request,
                            egress=connector_egress(self.settings.egress, connector_spec),
                            timeout_seconds=limits.timeout_seconds,
                        )
                        duration_ms = int(elapsed * 1000)
                        if request.issued:
                            await self._keep_issued(key, record, request.issued, sources)
                        restore = withheld and outcome.result == "Succeeded"
                        if ((request.issued or bind_token) and not withheld) or restore:
                            granted = request.granted
                            if bind_token and not granted:
                                granted = await self._unexpired_access_token(key)
                            renew_at = token_renewal(granted, finished=now())
                            # workloads get the tokens that work now
                            binding, binding_conflict = await self._project_binding(
                                key,
                                record,
                                connector_spec,
                                config.values,
                                {**creds.values, **request.issued, **granted},
                            )
                        verified_state = _verified_state(outcome, limits)
                except ValidationError as exc:
                    verified_state = ConditionState(
                        "False", Reason.CONFIG_INVALID, validation_message(exc)
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
            default_conflict=self.defaults.conflict(key, _claimed(key, record.spec)),
            binding_conflict=binding_conflict,
        )
        record.findings = findings
        if handled_hash is None:
            # the versions of the Secrets just read, with the connector verified against
            handled_hash = await self._inputs_hash(key, record, spec_body, connector_body) or ""
        finished = now()
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
        # a missing connector or Secret waits for a change like a refused login does
        retryable = outcome.retryable if outcome else code not in STALLED_REASONS
        next_time = next_attempt(
            cadence,
            now=finished,
            succeeded=outcome is not None and outcome.result == "Succeeded",
            retryable=retryable and code not in NOT_RETRYABLE,
            consecutive_failures=failures,
            retry_after=outcome.retry_after if outcome else None,
            rng=self._rng,
        )
        if renew_at is not None and cadence.mode != "Manual":
            next_time = renew_at if next_time is None else min(next_time, renew_at)
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
                "verification": wire(verification),
                "hasCredentials": bool(secret_fields) and all(secret_fields.values())
                if secret_fields
                else credentials_state is not None and credentials_state.status == "True",
                "secretFields": {k: {"configured": v} for k, v in secret_fields.items()},
                "binding": {"name": binding_name(key[1]), "credentialsWithheld": True}
                if withheld and binding is None and not binding_conflict
                else {"name": binding, "credentialsWithheld": None}  # null: a merge removes it
                if binding
                else None,
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
            timestamp(next_time) or "a change or request",
            extra=object_fields(*key),
        )
        if next_time is not None:
            return max(0.0, (next_time - now()).total_seconds())
        return None

    def _take_budget(self, ckey: ConnectorKey | None, scope: BudgetScope, limits: Bounds) -> float:
        """0 when the connector's rate limit allows a call now, else seconds to wait.

        Another edit of the connector keeps the spent budget, or a re-verification
        wave would be free; only a new rateLimit starts a new bucket.
        """
        if limits.rate_limit is None or ckey is None:
            return 0.0
        wait = self.buckets.take((ckey, scope), limits.rate_limit)
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
        if ready_reason(record.observed()) == Reason.RATE_LIMITED:
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
        self, namespace: str, connection: str, names: Iterable[str]
    ) -> tuple[dict[str, dict[str, str] | None], set[str]]:
        """The Secrets' values (None: absent), and which of them allow the Connection
        by annotation."""
        found: dict[str, dict[str, str] | None] = {}
        allowing: set[str] = set()
        for name in names:
            secret = await self.client.get(kube.secret_path(namespace, name))
            self.cache.secret_versions[(namespace, name)] = (
                secret["metadata"]["resourceVersion"] if secret else None
            )
            found[name] = None if secret is None else kube.secret_values(secret)
            if secret is not None and opted_in(secret["metadata"].get("annotations"), connection):
                allowing.add(name)
        return found, allowing

    def _authorise(
        self,
        key: Key,
        record: Tracked,
        spec: Mapping[str, Any],
        secrets: Mapping[str, dict[str, str] | None],
        allowing: set[str],
    ) -> None:
        """Raise SecretNotAuthorized for the first Secret whose use by this Connection
        was never authorised (see core/authorization.py). An absent Secret is left to
        credential resolution, which reports it as not found."""
        if record_holds(self.admission_key, scope(*key, spec), record.authorization):
            return
        for name, values in secrets.items():
            if values is not None and name not in allowing:
                raise CredentialsError(
                    Reason.SECRET_NOT_AUTHORIZED,
                    f"Secret {name!r} is not authorised for this Connection: no admission "
                    "record shows that its author may get it, and the Secret's annotation "
                    f"{ALLOWED_CONNECTIONS_ANNOTATION} does not name it",
                )

    async def _project_binding(
        self,
        key: Key,
        record: Tracked,
        connector: ConnectorSpec,
        config: Mapping[str, str | int | bool],
        secrets: Mapping[str, str],
    ) -> tuple[str | None, str | None]:
        """Create or update the binding Secret: its name, or None and why when a Secret of
        that name exists that this Connection does not own, which is left untouched."""
        manifest = build_binding_secret(
            connection=key[1],
            namespace=key[0],
            uid=record.uid,
            driver=connector.driver,
            config=config,
            secrets=secrets,
            date_format=connector.date_format,
        )
        digest = inputs_hash(manifest, None, None, {})
        name = binding_name(key[1])
        if record.binding_digest == digest:
            return name, None
        if not await self._write_owned(key, record, manifest, first=record.binding_digest is None):
            return None, f"Secret {name!r} exists and is not this Connection's binding; it is "
            "left untouched"
        record.binding_digest = digest
        return name, None

    async def _unexpired_access_token(self, key: Key) -> dict[str, str]:
        """The access token in the binding while it is still valid: a failed renewal
        leaves workloads the token they have until it expires."""
        try:
            existing = await self.client.get(kube.secret_path(key[0], binding_name(key[1])))
        except (kube.KubeApiError, aiohttp.ClientError, TimeoutError):
            return {}
        return unexpired_access_token(kube.secret_values(existing) if existing else {}, now())

    async def _write_owned(
        self, key: Key, record: Tracked, manifest: dict[str, Any], *, first: bool
    ) -> bool:
        """Create or update a Secret this Connection owns; False, and nothing written, when
        a Secret of that name belongs to something else. ``first``: not written by this
        record yet, so it is created, or updated only when it is ours already, since
        applying over any Secret of that name would take it over, data and all."""
        path = kube.secret_path(key[0], manifest["metadata"]["name"])
        if first:
            try:
                await self.client.create(kube.secrets_path(key[0]), manifest)
                return True
            except kube.KubeApiError as exc:
                if exc.status != 409:
                    raise
            existing = await self.client.request("GET", path, accept=kube.METADATA)
            owners = ((existing or {}).get("metadata") or {}).get("ownerReferences") or []
            if not any(o.get("uid") == record.uid for o in owners):
                return False
        # the whole Secret is the operator's: a key it no longer writes (an expired access
        # token, a variable the connector dropped) must go
        try:
            await self.client.replace(path, manifest)
        except kube.KubeApiError as exc:
            if exc.status != 404:
                raise
            return await self._write_owned(key, record, manifest, first=True)  # deleted since
        return True

    def _sources(
        self, namespace: str, spec: ConnectionSpec, config: ResolvedConfig
    ) -> dict[str, str]:
        """Where each secret variable's value comes from, as it is now: SECRET/KEY@VERSION."""
        versions = self.cache.secret_versions
        return {
            s.variable: f"{s.secret}/{s.key}@{versions.get((namespace, s.secret))}"
            for s in credential_sources(spec, config.secret_variables)
        }

    async def _standing_tokens(self, key: Key, sources: Mapping[str, str]) -> dict[str, str]:
        """Refresh tokens a token endpoint issued in place of the user's, still standing."""
        state = await self.client.get(kube.secret_path(key[0], token_state_name(key[1])))
        return standing_values(state, sources)

    async def _keep_issued(
        self, key: Key, record: Tracked, issued: Mapping[str, str], sources: Mapping[str, str]
    ) -> None:
        """Store what a token endpoint issued: the values it replaced may be spent."""
        manifest = build_token_state(
            connection=key[1], namespace=key[0], uid=record.uid, issued=issued, sources=sources
        )
        try:
            kept = await self._write_owned(key, record, manifest, first=not record.token_state)
            problem = f"Secret {token_state_name(key[1])!r} belongs to something else"
        except (kube.KubeApiError, aiohttp.ClientError, TimeoutError) as exc:
            kept, problem = False, api_problem(exc)
        record.token_state = kept
        if not kept:
            logger.error(
                "could not keep the refresh token issued for %s/%s (%s); the token endpoint "
                "may have spent the one in its Secret",
                *key,
                problem,
                extra=object_fields(*key),
            )

    # ----- defaults ----------------------------------------------------------------

    def _claim_default(self, key: Key, record: Tracked, spec: Mapping[str, Any]) -> None:
        self._refresh_claims(self.defaults.claim(key, record.created, _claimed(key, spec)))

    def _refresh_claims(self, claims: list[Claim]) -> None:
        """The default's winner changed: the other claimants re-derive their status."""
        for claim in claims:
            for other in self.defaults.claimants(claim):
                record = self.cache.tracked.get(other)
                if record is not None and record.findings is not None:
                    self._start(self._refresh_default(other))

    async def _refresh_default(self, key: Key) -> None:
        record = self.cache.tracked.get(key)
        if record is None or record.findings is None:
            return
        conflict = self.defaults.conflict(key, _claimed(key, record.spec))
        if conflict == record.findings.default_conflict:
            return
        findings = replace(record.findings, suspended=False, default_conflict=conflict)
        record.findings = findings
        try:
            await self._write_status(key, record, findings, {})
        except (kube.KubeApiError, aiohttp.ClientError, TimeoutError):
            self.queue.add(key)

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
        record.labels = our_labels({**have, **wanted})

    async def _write_suspended(self, key: Key, record: Tracked, withhold: bool) -> None:
        """Suspended: the status says so and, unless the Connection keeps them, the
        binding's credentials are taken out."""
        extra: dict[str, Any] = {}
        if withhold:
            await self._withhold_credentials(key, record)
            extra["binding"] = {"name": binding_name(key[1]), "credentialsWithheld": True}
        previous = record.findings
        findings = Findings(
            suspended=True,
            connector=previous.connector
            if previous
            else ConditionState("Unknown", Reason.SUSPENDED, "not resolved while suspended"),
            credentials=previous.credentials if previous else None,
            verified=previous.verified if previous else None,
        )
        await self._write_status(key, record, findings, extra)

    async def _withhold_credentials(self, key: Key, record: Tracked) -> None:
        """Replace this Connection's binding with one that holds no credentials."""
        path = kube.secret_path(key[0], binding_name(key[1]))
        existing = await self.client.get(path)
        owners = ((existing or {}).get("metadata") or {}).get("ownerReferences") or []
        if existing is None or not any(o.get("uid") == record.uid for o in owners):
            return  # none yet, or not ours: nothing of this Connection's to take out
        if kube.secret_values(existing).get(SUSPENDED_KEY) != "true":
            await self.client.replace(path, withheld_binding_secret(existing))
        # whatever is projected next differs from what the record knew
        record.binding_digest = WITHHELD

    async def _write_status(
        self, key: Key, record: Tracked, findings: Findings, extra: dict[str, Any]
    ) -> None:
        claimed = _claimed(key, record.spec)
        winner = self.defaults.winner((key[0], claimed)) if claimed else None
        await self.writer.write(key, record, findings, extra, is_default=winner == key[1])


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


def _claimed(key: Key, spec: Mapping[str, Any]) -> ConnectorKey | None:
    """The connector a Connection claims to be the default of, if it claims that."""
    return connector_key(key[0], spec) if spec.get("default") else None
