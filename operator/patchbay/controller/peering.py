"""Whether this replica is the working one, by kopf's own peering rule.

kopf pauses its watches on a replica while a live peer of higher priority
exists, but its pause does not reach patchbay's work queue: a replica that
worked for a moment at startup would go on verifying what it had queued. This
follows the same peering object and applies the same rule, so the workers run
only on the working replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from patchbay import kube

logger = logging.getLogger(__name__)

POLL_SECONDS = 2.0


def _parse(moment: object) -> datetime | None:
    if not isinstance(moment, str):
        return None
    try:
        parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def outranked(peers: Iterable[Mapping[str, Any]], priority: int, now: datetime) -> bool:
    """A live peer of higher priority exists: kopf pauses this replica for it."""
    for peer in peers:
        seen = _parse(peer.get("lastseen"))
        if seen is None:
            continue
        alive = seen + timedelta(seconds=int(peer.get("lifetime") or 60)) > now
        if alive and int(peer.get("priority") or 0) > priority:
            return True
    return False


def peering_paths(name: str, namespaces: Sequence[str] | None) -> list[str]:
    if not namespaces:
        return [f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}"]
    return [f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings/{name}" for ns in namespaces]


async def follow_peering(
    client: kube.KubeClient,
    paths: Sequence[str],
    priority: int,
    working: asyncio.Event,
) -> None:
    """Keep ``working`` set exactly while no live peer outranks this replica."""
    while True:
        try:
            peers: list[Mapping[str, Any]] = []
            for path in paths:
                body = await client.get(path) or {}
                peers.extend(v for v in (body.get("status") or {}).values() if isinstance(v, dict))
            if outranked(peers, priority, datetime.now(UTC)):
                if working.is_set():
                    logger.info("standing by: a replica of higher priority is working")
                working.clear()
            else:
                if not working.is_set():
                    logger.info("working: no replica of higher priority is alive")
                working.set()
        except (kube.KubeApiError, aiohttp.ClientError, TimeoutError) as exc:
            # keep the last answer: kopf, too, goes on as it was until it knows better
            logger.warning("could not read the peering object (%s)", type(exc).__name__)
        await asyncio.sleep(POLL_SECONDS)
