"""The status of Connectors and ClusterConnectors: whether the definition is usable,
and the exact number of Connections that use it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import aiohttp

from patchbay import kube
from patchbay.api.reasons import Reason
from patchbay.controller.cache import Cache
from patchbay.controller.writer import api_problem, now, refused
from patchbay.core.resolve import ConnectorKey, judge_connector
from patchbay.core.status import ConditionState, merge_conditions, progress_conditions
from patchbay.drivers.base import Driver
from patchbay.logs import object_fields

logger = logging.getLogger(__name__)

# a burst of Connection changes costs one status write per connector per second
COUNT_BATCH_SECONDS = 1.0

Start = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class ConnectorStatusWriter:
    def __init__(
        self, client: kube.KubeClient, drivers: Mapping[str, Driver], cache: Cache, start: Start
    ) -> None:
        self.client = client
        self.drivers = drivers
        self.cache = cache
        self._start = start
        self._recount: set[ConnectorKey] = set()
        self._writer: asyncio.Task[None] | None = None

    def count_later(self, ckeys: list[ConnectorKey]) -> None:
        """Connector status counts its Connections; batched so a burst costs one write."""
        if not ckeys:
            return
        self._recount.update(ckeys)
        # one writer at a time: two could land out of order and leave an old count
        if self._writer is None or self._writer.done():
            self._writer = self._start(self._flush())

    async def _flush(self) -> None:
        while self._recount:
            await asyncio.sleep(COUNT_BATCH_SECONDS)
            pending, self._recount = self._recount, set()
            for ckey in pending:
                await self._write_count(ckey)

    async def _write_count(self, ckey: ConnectorKey) -> None:
        body = self.cache.connectors.get(ckey)
        if body is None:
            return
        try:
            await self.write(ckey, body)
        except (kube.KubeApiError, aiohttp.ClientError, TimeoutError) as exc:
            again = not (isinstance(exc, kube.KubeApiError) and refused(exc))
            logger.warning(
                "could not update status of %s %s (%s)%s",
                ckey[0],
                ckey[2],
                api_problem(exc),
                "; trying again" if again else "",
                extra=object_fields(ckey[1], ckey[2]),
            )
            if again:
                self._recount.add(ckey)

    async def write(self, ckey: ConnectorKey, body: dict[str, Any]) -> None:
        """The connector's Ready condition and count, unless its status says so already."""
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
        generation = body["metadata"].get("generation")
        conditions = merge_conditions(
            old.get("conditions") or [],
            [("Ready", state), *progress_conditions(state)],
            generation,
            now(),
        )
        desired = {
            "conditions": conditions,
            "connections": self.cache.count(ckey),
            "observedGeneration": generation,
        }
        if all(old.get(k) == v for k, v in desired.items() if k != "conditions") and [
            (c.get("status"), c.get("reason"), c.get("message")) for c in old.get("conditions", [])
        ] == [(c["status"], c["reason"], c["message"]) for c in conditions]:
            return
        answer = await self.client.merge_patch(
            kube.connector_path(kind, namespace or None, name) + "/status", {"status": desired}
        )
        if answer:
            # the next comparison starts from what was written, not from the last event
            self.cache.connectors[ckey] = {**body, "status": answer.get("status") or desired}
