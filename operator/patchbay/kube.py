"""A small async Kubernetes API client for the operator's own reads and writes.

kopf owns the watches; this client does the few direct calls the reconciler
needs (read Secrets, patch status, apply the binding Secret, post Events)
without blocking the event loop. Configuration comes from the in-cluster
service account or a kubeconfig, through the kubernetes package's loaders.
"""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from patchbay import __version__

FIELD_MANAGER = "patchbay"
# Accept headers that make the API server send metadata only (names, resourceVersions,
# labels), never a Secret's data: what controller-runtime's metadata informers ask for.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
# An object is at most ~1.5 MiB in etcd; a watch line longer than this is not one.
MAX_WATCH_LINE = 4 * 1024 * 1024
MERGE_PATCH = "application/merge-patch+json"


class KubeApiError(Exception):
    """A non-success answer from the API server."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


def load_configuration(kubeconfig: str | None = None) -> Any:
    """In-cluster configuration when running in a Pod, otherwise the kubeconfig."""
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def load_caller_configuration(kubeconfig: str | None, context: str | None) -> tuple[Any, str]:
    """For a person's tools: the kubeconfig first (the file given, $KUBECONFIG or
    ~/.kube/config) with its context's namespace, else the Pod's service account.
    Raises kubernetes.config.ConfigException."""
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except k8s_config.ConfigException:
        if kubeconfig or context or not os.path.exists(IN_CLUSTER_NAMESPACE):
            raise
        k8s_config.load_incluster_config(client_configuration=configuration)
        with open(IN_CLUSTER_NAMESPACE) as f:
            return configuration, f.read().strip()
    contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
    return configuration, ((chosen or {}).get("context") or {}).get("namespace") or "default"


class KubeClient:
    def __init__(self, configuration: Any) -> None:
        self._configuration = configuration
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        if not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._server = configuration.host.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=64),
            timeout=aiohttp.ClientTimeout(total=30),
            # names the operator in managedFields and the API server's audit log
            headers={"User-Agent": f"{FIELD_MANAGER}/{__version__}"},
        )

    def _headers(
        self, content_type: str | None, accept: str = "application/json"
    ) -> dict[str, str]:
        headers = {"Accept": accept}
        # The loaders store a bearer token under "BearerToken" (service account, kubeconfig
        # token); auth_settings() turns whatever they stored into the header to send.
        for setting in self._configuration.auth_settings().values():
            if setting["in"] == "header" and setting["value"]:
                headers[setting["key"]] = setting["value"]
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
        accept: str = "application/json",
    ) -> dict[str, Any] | None:
        """The decoded answer; None for 404 on GET. Raises KubeApiError otherwise."""
        data = None if body is None else orjson.dumps(body)
        if data is not None and content_type is None:
            content_type = "application/json"
        async with self._session.request(
            method,
            self._server + path,
            data=data,
            params=params,
            headers=self._headers(content_type, accept),
        ) as response:
            raw = await response.read()
            try:
                payload = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                if response.status < 400:
                    raise
                payload = {}  # an error page from something in front of the API server
            if response.status == 404 and method == "GET":
                return None
            if response.status >= 400:
                payload = payload if isinstance(payload, dict) else {}
                raise KubeApiError(
                    response.status,
                    str(payload.get("reason", response.reason)),
                    str(payload.get("message", "")),
                )
            return payload if isinstance(payload, dict) else {}

    async def get(self, path: str) -> dict[str, Any] | None:
        return await self.request("GET", path)

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        return await self.request("PATCH", path, patch, content_type=MERGE_PATCH)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return await self.request("POST", path, body, params={"fieldManager": FIELD_MANAGER})

    async def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """An unconditional update (PUT): the object becomes ``body``, so keys it no longer
        has are gone, which an apply after a create does not promise."""
        return await self.request("PUT", path, body, params={"fieldManager": FIELD_MANAGER})

    async def watch(
        self, path: str, params: dict[str, str], *, accept: str, timeout_seconds: int
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch request, decoded, until the server ends it."""
        async with self._session.get(
            self._server + path,
            params={**params, "watch": "true", "timeoutSeconds": str(timeout_seconds)},
            headers=self._headers(None, accept),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=30, sock_read=timeout_seconds + 30
            ),
        ) as response:
            if response.status >= 400:
                payload = await response.json(content_type=None)
                payload = payload if isinstance(payload, dict) else {}
                raise KubeApiError(
                    response.status,
                    str(payload.get("reason", response.reason)),
                    str(payload.get("message", "")),
                )
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                if b"\n" not in chunk:
                    if len(buffer) > MAX_WATCH_LINE:
                        raise KubeApiError(500, "WatchLineTooLong", "a watch event is too long")
                    continue
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        event = orjson.loads(line)
                        if isinstance(event, dict):
                            yield event

    async def close(self) -> None:
        await self._session.close()


def connection_path(namespace: str, name: str = "") -> str:
    base = f"/apis/patchbay.dev/v1alpha1/namespaces/{namespace}/connections"
    return f"{base}/{name}" if name else base


def connector_path(kind: str, namespace: str | None, name: str) -> str:
    if kind == "ClusterConnector":
        return f"/apis/patchbay.dev/v1alpha1/clusterconnectors/{name}"
    return f"/apis/patchbay.dev/v1alpha1/namespaces/{namespace}/connectors/{name}"


def secret_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets/{name}"


def secrets_path(namespace: str | None) -> str:
    """Every Secret of one namespace, or of the cluster."""
    return f"/api/v1/namespaces/{namespace}/secrets" if namespace else "/api/v1/secrets"


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/events"


def secret_data(values: Mapping[str, str]) -> dict[str, str]:
    """Values as a Secret's data. A Secret the operator applies carries data, not
    stringData: server-side apply then removes the keys it no longer sends, whereas
    stringData is folded into data and never owned."""
    return {k: base64.b64encode(v.encode()).decode("ascii") for k, v in values.items()}


def secret_values(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's data, decoded. Only for handing to a driver: never log or store it."""
    return {
        k: base64.b64decode(v).decode("utf-8", "replace")
        for k, v in (secret.get("data") or {}).items()
    }
