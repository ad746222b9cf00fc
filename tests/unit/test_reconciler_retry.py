"""A Connection whose evaluation met an API server error is evaluated again later,
since kopf does not retry event handlers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from patchbay import kube
from patchbay.controller import connection as reconciler
from patchbay.controller.connection import Reconciler
from patchbay.controller.writer import STATUS_REFUSED_MESSAGE


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

    async def replace(self, path: str, body: Any) -> dict[str, Any]:
        self.writes.append(("PUT", path))
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


class RefusingStatusApi(FlakyApi):
    """Refuses the first status patch as invalid (422), like a message over maxLength."""

    def __init__(self) -> None:
        super().__init__()
        self.failures_left = 0
        self.refusals_left = 1
        self.status_patches: list[dict[str, Any]] = []

    async def merge_patch(self, path: str, body: Any) -> dict[str, Any]:
        if path.endswith("/status"):
            self.status_patches.append(body["status"])
            if self.refusals_left:
                self.refusals_left -= 1
                raise kube.KubeApiError(422, "Invalid", "status.verification: Too long")
        return await super().merge_patch(path, body)


def test_refused_status_is_replaced_by_its_reason_and_not_sent_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconciler, "API_RETRY_SECONDS", 0.01)
    api = RefusingStatusApi()

    async def scenario() -> None:
        subject = Reconciler(api, {})  # type: ignore[arg-type]
        await subject.connection_changed(dict(CONNECTION))
        for _ in range(100):
            if len(api.status_patches) >= 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # room for any retry of the refused patch
        await subject.close()

    asyncio.run(scenario())

    refused, fallback = api.status_patches[0], api.status_patches[1]
    assert len(api.status_patches) == 2
    assert "verification" in refused
    assert "verification" not in fallback
    ready = next(c for c in fallback["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ConnectorNotFound")
    assert ready["message"] == STATUS_REFUSED_MESSAGE
    assert fallback["phase"] == "Failed"
