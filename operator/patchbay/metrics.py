"""Prometheus metrics of the operator and the endpoint that serves them.

The registry is per operator rather than the library's global one, so a test
or an embedding program sees exactly the series this operator produced.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import NamedTuple

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

# Verifications span loopback answers in milliseconds to a full timeout.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ConnectionLabels(NamedTuple):
    """The labels of a Connection's series besides its namespace and name."""

    connector: str
    driver: str
    phase: str
    reason: str


class ConnectionSeries(Collector):
    """The two series of each Connection, made at scrape time from one small record per
    Connection, rather than held as two gauges each: at 10,000 Connections the gauges'
    objects cost some 20 MiB. Only the current labels exist, so a Connection's old series
    is gone as soon as a label changes or the Connection does."""

    def __init__(self) -> None:
        self.connections: dict[tuple[str, str], ConnectionLabels] = {}

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "patchbay_connection_ready",
            "1 when the Connection's Ready condition is True, else 0.",
            labels=["namespace", "name", "connector"],
        )
        # Bounded: connector, driver, phase and reason each take few values.
        info = GaugeMetricFamily(
            "patchbay_connection_info",
            "1 for each Connection, labelled with its connector, driver, phase and Ready reason.",
            labels=["namespace", "name", "connector", "driver", "phase", "reason"],
        )
        for (namespace, name), labels in self.connections.items():
            ready.add_metric(
                [namespace, name, labels.connector], 1 if labels.phase == "Ready" else 0
            )
            info.add_metric([namespace, name, *labels], 1)
        yield ready
        yield info


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._connections = ConnectionSeries()
        self.registry.register(self._connections)
        self.verification_duration = Histogram(
            "patchbay_verification_duration_seconds",
            "Time one verification spent talking to the external system.",
            ["driver"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.verifications = Counter(
            "patchbay_verifications",
            "Verifications finished, by result and reason code.",
            ["result", "reason"],
            registry=self.registry,
        )
        # Without labels it is served from the start, at 0: the operator-down alert
        # looks for it.
        self.rate_limited = Counter(
            "patchbay_rate_limited",
            "Verifications that had to wait for their connector's rate limit.",
            registry=self.registry,
        )

    def observe_phase(
        self,
        namespace: str,
        name: str,
        connector: str,
        phase: str,
        *,
        driver: str,
        reason: str,
    ) -> None:
        # interned: thousands of Connections share a few connectors, phases and reasons
        # (str() first: a reason may be a Reason, which sys.intern refuses)
        labels = ConnectionLabels(
            *(sys.intern(str(value)) for value in (connector, driver, phase, reason))
        )
        self._connections.connections[(namespace, name)] = labels

    def forget_connection(self, namespace: str, name: str) -> None:
        self._connections.connections.pop((namespace, name), None)

    def observe_verification(
        self, driver: str | None, result: str, reason: str, seconds: float | None
    ) -> None:
        self.verifications.labels(result, reason).inc()
        if driver is not None and seconds is not None:
            self.verification_duration.labels(driver).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """`GET /metrics` on the operator's event loop; generating the text is cheap."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def _handle(self, _: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.exposition())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
