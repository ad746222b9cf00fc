"""The benchmark's bare client: JSON requests, raw text and watch streams.

One urllib3 connection pool with the kubeconfig's client certificate and no object models,
so the client's own cost per request stays small and the same for every round. It talks to
127.0.0.1 only, and retries only a request that never reached the server or a GET whose
pooled connection broke.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

GROUP, VERSION = "patchbay.dev", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


class BenchError(RuntimeError):
    """The benchmark could not complete."""


class ApiError(BenchError):
    """A non-success answer from kube-apiserver."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        text = body.decode(errors="replace")
        message = text
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            message = parsed["message"]
        super().__init__(f"{method} {path}: HTTP {status}: {message[:300]}")
        self.status = status


class Api:
    """A thread-safe client for kube-apiserver on 127.0.0.1 (client certificate auth)."""

    def __init__(self, kubeconfig: Path, pool_size: int) -> None:
        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=configuration
        )
        host = str(configuration.host).rstrip("/")
        if urlsplit(host).hostname != "127.0.0.1":
            raise BenchError(f"the benchmark connects to 127.0.0.1 only, not {host}")
        if not configuration.cert_file or not configuration.key_file:
            raise BenchError("the kubeconfig has no client certificate")
        self.host = host
        self._pool = urllib3.PoolManager(
            num_pools=1,
            maxsize=pool_size,
            cert_reqs="CERT_REQUIRED",
            ca_certs=configuration.ssl_ca_cert,
            cert_file=configuration.cert_file,
            key_file=configuration.key_file,
            retries=urllib3.Retry(
                total=3,
                connect=3,
                read=2,
                status=0,
                other=0,
                redirect=0,
                allowed_methods=frozenset({"GET"}),
                raise_on_status=False,
            ),
        )

    def _url(self, path: str, query: Mapping[str, str] | None) -> str:
        return self.host + path + (f"?{urlencode(query)}" if query else "")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = JSON,
        query: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Any:
        """One request; the parsed JSON answer. Raises ApiError for HTTP 4xx/5xx."""
        headers = {"Accept": JSON}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = content_type
        response = self._pool.request(
            method,
            self._url(path, query),
            body=data,
            headers=headers,
            timeout=urllib3.Timeout(connect=10.0, read=timeout),
        )
        if response.status >= 400:
            raise ApiError(method, path, response.status, response.data)
        return json.loads(response.data) if response.data else None

    def get(self, path: str) -> dict[str, Any]:
        body = self.request("GET", path)
        if not isinstance(body, dict):
            raise BenchError(f"GET {path}: unexpected answer {type(body).__name__}")
        return body

    def text(self, path: str) -> str:
        response = self._pool.request(
            "GET", self._url(path, None), timeout=urllib3.Timeout(connect=10.0, read=60.0)
        )
        if response.status >= 400:
            raise ApiError("GET", path, response.status, response.data)
        return bytes(response.data).decode(errors="replace")

    def watch(
        self, path: str, query: Mapping[str, str], read_timeout: float
    ) -> Iterator[dict[str, Any]]:
        """The events of one watch request, until the server ends it or nothing arrives for
        ``read_timeout`` seconds (then urllib3 raises a ReadTimeoutError)."""
        response = self._pool.request(
            "GET",
            self._url(path, {**query, "watch": "1"}),
            headers={"Accept": JSON},
            timeout=urllib3.Timeout(connect=10.0, read=read_timeout),
            preload_content=False,
            retries=False,  # a quiet watch ends; the caller opens the next one
        )
        try:
            if response.status >= 400:
                raise ApiError("GET", path, response.status, response.read())
            buffer = bytearray()
            for chunk in response.stream(65536):
                buffer += chunk
                while True:
                    end = buffer.find(b"\n")
                    if end < 0:
                        break
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        event = json.loads(line)
                        if isinstance(event, dict):
                            yield event
        finally:
            response.close()
            response.release_conn()


# --- paths ------------------------------------------------------------------------------------


def connections_path(namespace: str, name: str = "", subresource: str = "") -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/connections"
    if name:
        path += f"/{quote(name)}"
    if subresource:
        path += f"/{subresource}"
    return path


def cluster_connector_path(name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/clusterconnectors/{quote(name)}"


def secrets_path(namespace: str, name: str = "") -> str:
    path = f"/api/v1/namespaces/{quote(namespace)}/secrets"
    return f"{path}/{quote(name)}" if name else path


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/events"


NAMESPACES_PATH = "/api/v1/namespaces"


# --- reading Connections ----------------------------------------------------------------------


def condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for found in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(found, dict) and found.get("type") == type_:
            return found
    return {}


def is_ready(obj: Mapping[str, Any]) -> bool:
    return condition(obj, "Ready").get("status") == "True"


def ready_reason(obj: Mapping[str, Any]) -> str | None:
    reason = condition(obj, "Ready").get("reason")
    return reason if isinstance(reason, str) else None


def is_failed(obj: Mapping[str, Any]) -> bool:
    """Ready=False: the operator gave a definite answer other than success."""
    return condition(obj, "Ready").get("status") == "False"


def requested_at(obj: Mapping[str, Any]) -> str | None:
    value = ((obj.get("status") or {}).get("verification") or {}).get("requestedAt")
    return value if isinstance(value, str) else None
