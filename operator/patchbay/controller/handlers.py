"""The kopf handlers. Each one reads the event and hands it to the Reconciler,
which records it and queues the object's key.

Only event handlers are used: they keep no diff-base annotation and no
finalizer on any object, so the operator writes nothing to Secrets and only
labels and status to Connections. Secrets are not watched through kopf, which
would deliver their data: a metadata-only watch reports names and
resourceVersions.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from patchbay import kube
from patchbay.controller.authorization import load_admission_key, own_username
from patchbay.controller.connection import OperatorSettings, Reconciler
from patchbay.controller.peering import follow_peering, peering_paths
from patchbay.controller.secrets import SecretMetadataWatch
from patchbay.drivers import available_drivers
from patchbay.metrics import Metrics, MetricsServer

GROUP = "patchbay.dev"
VERSION = "v1alpha1"


class _NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf deep-copies every watched body on every event to find what changed for its
    change handlers. patchbay has none (event handlers only), so there is nothing to
    find: the essence is empty, and nothing is ever stored on an object."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Decided once: changing these later would make kopf re-handle every object.
    settings.persistence.finalizer = "patchbay.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="patchbay.dev")
    settings.persistence.diffbase_storage = _NoDiffBase(
        prefix="patchbay.dev", key="last-handled-configuration"
    )
    settings.admission.server = memo.get("webhook")
    settings.posting.enabled = False  # patchbay posts its own Events, on transitions only
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # kopf keeps a task per object for this long after its last event; the handlers only
    # record and queue, so a short linger keeps 10,000 objects from holding 10,000 tasks
    settings.batching.idle_timeout = 1.0
    # a standby takes over about this long after the active replica was killed
    settings.peering.lifetime = 15
    operator_settings: OperatorSettings = memo.get("settings") or OperatorSettings()
    client = kube.KubeClient(kube.load_configuration())
    memo["client"] = client
    metrics = Metrics()
    memo["reconciler"] = reconciler = Reconciler(
        client, available_drivers(), operator_settings, metrics
    )
    memo["secret_watch"] = watch = SecretMetadataWatch(
        client, memo.get("namespaces"), reconciler.secret_changed, reconciler.secrets_relisted
    )
    watch.start()
    admission_key: tuple[str, str] | None = memo.get("admission_key")
    if admission_key is not None:
        reconciler.admission_key = await load_admission_key(client, *admission_key)
    if memo.get("webhook") is not None:
        memo["own_user"] = await own_username(client)
    peering: tuple[str, int] | None = memo.get("peering")
    if peering is not None:
        name, priority = peering
        reconciler.working.clear()  # until the peering object says this replica works
        paths = peering_paths(name, memo.get("namespaces"))
        memo["peering_task"] = asyncio.get_running_loop().create_task(
            follow_peering(client, paths, priority, reconciler.working)
        )
    address: tuple[str, int] | None = memo.get("metrics_address")
    if address is not None:
        memo["metrics_server"] = server = MetricsServer(metrics, *address)
        await server.start()


@kopf.on.cleanup()
async def shut_down(memo: kopf.Memo, **_: Any) -> None:
    server = memo.get("metrics_server")
    if server is not None:
        await server.stop()
    watch = memo.get("secret_watch")
    if watch is not None:
        await watch.stop()
    following = memo.get("peering_task")
    if following is not None:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    reconciler = memo.get("reconciler")
    if reconciler is not None:
        await reconciler.close()
    client = memo.get("client")
    if client is not None:
        await client.close()


@kopf.on.event(GROUP, VERSION, "connections")
async def connection_event(
    event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    reconciler: Reconciler = memo["reconciler"]
    if event["type"] == "DELETED":
        await reconciler.connection_deleted(body["metadata"]["namespace"], body["metadata"]["name"])
    else:
        await reconciler.connection_changed(body)


@kopf.on.event(GROUP, VERSION, "connectors")
async def connector_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    reconciler: Reconciler = memo["reconciler"]
    meta = body["metadata"]
    await reconciler.connector_changed(
        "Connector",
        None if event["type"] == "DELETED" else dict(body),
        meta["name"],
        meta["namespace"],
    )


@kopf.on.event(GROUP, VERSION, "clusterconnectors")
async def cluster_connector_event(
    event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    reconciler: Reconciler = memo["reconciler"]
    await reconciler.connector_changed(
        "ClusterConnector",
        None if event["type"] == "DELETED" else dict(body),
        body["metadata"]["name"],
        None,
    )
