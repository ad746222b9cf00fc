"""patchbay_connection_info on a running operator: one series per Connection that follows
its phase and reason, and goes with it."""

from __future__ import annotations

import localcluster
from http_server import TokenApi
from operator_harness import (
    OperatorProcess,
    apply,
    apply_http_connection,
    token_secret,
    wait_for,
    wait_for_reason,
)


def info_series(operator: OperatorProcess, name: str) -> list[dict[str, str]]:
    """The labels of every patchbay_connection_info series of the Connection ``name``."""
    return [
        dict(labels)
        for (metric, labels), value in operator.metrics().items()
        if metric == "patchbay_connection_info" and dict(labels)["name"] == name and value == 1
    ]


def test_connection_info_follows_phase_and_reason_and_goes_with_the_connection(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    api: TokenApi,
    token: str,
) -> None:
    apply_http_connection(control_plane, namespace, "orders", api.base_url, token)
    wait_for_reason(control_plane, namespace, "orders", "Verified")
    identity = {"namespace": namespace, "name": "orders", "connector": "http-api", "driver": "http"}
    assert info_series(operator, "orders") == [{**identity, "phase": "Ready", "reason": "Verified"}]

    apply(control_plane, namespace, token_secret("api-token", "rotated-to-a-wrong-value"))
    wait_for_reason(control_plane, namespace, "orders", "AuthenticationFailed")
    assert info_series(operator, "orders") == [
        {**identity, "phase": "Failed", "reason": "AuthenticationFailed"}
    ]

    control_plane.kubectl("delete", "connection", "orders", "-n", namespace)
    wait_for(lambda: not info_series(operator, "orders"), "the deleted Connection's series to go")
