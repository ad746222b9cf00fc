"""The shared verification runner around every driver.

Drivers only speak their protocol. This module adds what every verification
needs: the rate limit of the connector, one timeout over the whole attempt,
classification of anything a driver did not classify, and scrubbing of secret
values from every message that leaves it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import replace

from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import ConnectorSpec
from patchbay.api.reasons import Reason
from patchbay.core.config import ResolvedConfig
from patchbay.core.credentials import ResolvedCredentials
from patchbay.drivers.base import Driver, DriverError, Egress, VerifyOutcome
from patchbay.drivers.base import VerifyRequest as VerifyRequest
from patchbay.drivers.text import REDACTED as REDACTED
from patchbay.drivers.text import scrub as scrub

logger = logging.getLogger(__name__)

# How long a driver may take to stop after its timeout before its slot is freed anyway.
CANCEL_GRACE_SECONDS = 2.0
# drivers that ignored cancellation, kept referenced until they end
_abandoned: set[asyncio.Future[VerifyOutcome]] = set()


def build_verify_request(
    connector: ConnectorSpec,
    connection: ConnectionSpec,
    config: ResolvedConfig,
    credentials: ResolvedCredentials,
    timeout_seconds: float,
) -> VerifyRequest:
    """What the driver is asked: the connector's checks run before the Connection's own,
    and the servers that can are told the time limit too. A Connection's own request
    replaces its connector's where allow_connection_options let it, and still proves
    that credentials are required when the connector's does."""
    own_request = connection.verification.http
    demanded = connector.verification.http
    if own_request is not None and demanded is not None and demanded.credentials_required:
        # a Connection's request may say where and how, not prove less
        own_request = own_request.model_copy(update={"credentials_required": True})
    return VerifyRequest(
        timeout_seconds=timeout_seconds,
        config=config.values,
        secrets=credentials.values,
        auth=connector.auth,
        checks=[*connector.verification.checks, *connection.verification.checks],
        connection_checks=len(connection.verification.checks),
        http=own_request or connector.verification.http,
        http_errors=connector.verification.http_errors,
        tls=credentials.tls,
        credential_placement=own_request.credential if own_request else None,
        keep_access_token=connection.binding is not None and connection.binding.access_token,
    )


def _scrub_outcome(outcome: VerifyOutcome, secrets: Iterable[str]) -> VerifyOutcome:
    values = list(secrets)
    return replace(
        outcome,
        message=scrub(outcome.message, values),
        server_version=scrub(outcome.server_version, values) if outcome.server_version else None,
        checks=tuple(
            replace(c, target=scrub(c.target, values), message=scrub(c.message, values))
            for c in outcome.checks
        ),
    )


async def _verify_within(
    driver: Driver, request: VerifyRequest, egress: Egress, timeout_seconds: float
) -> VerifyOutcome:
    """The driver's answer, or TimeoutError once the timeout and a short grace are over.

    asyncio.timeout would wait for a cancelled driver however long its cleanup takes,
    holding the caller's concurrency slot; here the caller is free after the grace.
    """
    attempt = asyncio.ensure_future(driver.verify(request, egress))
    try:
        done, _ = await asyncio.wait({attempt}, timeout=timeout_seconds)
    except asyncio.CancelledError:
        attempt.cancel()
        raise
    if done:
        return attempt.result()
    attempt.cancel()
    done, _ = await asyncio.wait({attempt}, timeout=CANCEL_GRACE_SECONDS)
    if done:
        if not attempt.cancelled():
            attempt.exception()  # retrieved: the timeout is the answer
    else:
        logger.warning(
            "driver %s did not stop within %gs of its timeout", driver.name, CANCEL_GRACE_SECONDS
        )
        _abandoned.add(attempt)
        attempt.add_done_callback(_abandoned.discard)
    raise TimeoutError


async def run_verification(
    driver: Driver,
    request: VerifyRequest,
    *,
    egress: Egress,
    timeout_seconds: float,
    limiter: AbstractAsyncContextManager[object] | None = None,
) -> tuple[VerifyOutcome, float]:
    """Verify under the rate limit and one timeout; returns the outcome and its duration."""
    async with limiter if limiter is not None else nullcontext():
        started = time.monotonic()
        try:
            outcome = await _verify_within(driver, request, egress, timeout_seconds)
        except TimeoutError:
            outcome = VerifyOutcome(
                "Failed",
                Reason.TIMEOUT,
                f"no answer within {timeout_seconds:g}s",
            )
        except DriverError as exc:
            outcome = VerifyOutcome(
                "Failed",
                exc.code,
                exc.message,
                retryable=exc.retryable,
                retry_after=exc.retry_after,
            )
        except Exception as exc:  # an unclassified failure is a driver bug: keep it visible
            logger.warning("driver %s raised an unclassified %s", driver.name, type(exc).__name__)
            outcome = VerifyOutcome(
                "Unknown", Reason.PROVIDER_ERROR, f"{type(exc).__name__}: {exc}"
            )
        elapsed = time.monotonic() - started
    secrets = [*request.secrets.values(), *request.issued.values()]
    return _scrub_outcome(outcome, secrets), elapsed
