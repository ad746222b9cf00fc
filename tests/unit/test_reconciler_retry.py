"""A Connection whose evaluation met an API server error is evaluated again later,
since kopf does not retry event handlers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from patchbay import kube, reconciler
from patchbay.reconciler import Reconciler


class FlakyApi:
    """Fails the first GET with 503, then answers that nothing exists; records writes."""

    def __init__(self) -> None:
        self.failures_left = 1
        self.writes: list[tuple[str, str]] = []

    async def get(self, path: str) -> dict[str, Any] | None:
        if self.failures_left:
            self.failures_left -= 1
            raise kube.KubeApiError(503, "Service Unavailable", "etcd is restarting")
        return None

    async def merge_patch(self, path: str, body: Any) -> dict[str, Any]:
        self.writes.append(("PATCH", path))
        return {}

    async def create(self, path: str, body: Any) -> dict[str, Any]:
        self.writes.append(("POST", path))
        return {}

    async def apply(self, path: str, body: Any) -> dict[str, Any]:
        self.writes.append(("APPLY", path))
        return {}


CONNECTION = {
    "apiVersion": "patchbay.dev/v1alpha1",
    "kind": "Connection",
    "metadata": {"name": "orders", "namespace": "shop", "generation": 1, "uid": "u-1"},
    "spec": {"connectorRef": {"kind": "ClusterConnector", "name": "missing"}},
}


def test_api_error_during_evaluation_is_retried_until_status_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconciler, "API_RETRY_SECONDS", 0.01)
    api = FlakyApi()

    async def scenario() -> list[tuple[str, str]]:
        subject = Reconciler(api, {})  # type: ignore[arg-type]
        await subject.connection_changed(dict(CONNECTION))
        assert api.writes == []  # the first attempt met the 503
        for _ in range(200):
            if any(path.endswith("/orders/status") for _, path in api.writes):
                break
            await asyncio.sleep(0.01)
        await subject.close()
        return api.writes

    writes = asyncio.run(scenario())

    assert (
        "PATCH",
        "/apis/patchbay.dev/v1alpha1/namespaces/shop/connections/orders/status",
    ) in writes
