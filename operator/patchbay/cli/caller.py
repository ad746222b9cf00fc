"""The CLI's access to the API server, as the person running it.

The CLI uses the caller's kubeconfig (or, inside a Pod, its service account)
and never the operator's identity, so it can do exactly what its caller may.
Every refusal becomes a ``CommandError`` with one line a person can act on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kubernetes import config as k8s_config

from patchbay import kube


class CommandError(Exception):
    """A failure the CLI reports as one line on stderr, with a non-zero exit code."""


@dataclass(frozen=True)
class CallerConfig:
    configuration: Any  # kubernetes.client.Configuration
    namespace: str  # the context's namespace, for commands run without -n


def load_caller_config(kubeconfig: str | None, context: str | None) -> CallerConfig:
    try:
        return CallerConfig(*kube.load_caller_configuration(kubeconfig, context))
    except k8s_config.ConfigException as exc:
        raise CommandError(f"cannot load the kubeconfig: {exc}") from None


def api_error_message(
    exc: kube.KubeApiError, verb: str, resource: str, namespace: str | None
) -> str:
    """One line for a refusal, e.g. 'forbidden: you may not get secrets in namespace x'."""
    where = f" in namespace {namespace}" if namespace else ""
    if exc.status == 403:
        return f"forbidden: you may not {verb} {resource}{where}"
    if exc.status == 401:
        return "unauthorized: the API server does not accept your credentials"
    if exc.status == 404:
        return f"not found: cannot {verb} {resource}{where}"
    return f"the API server refused to {verb} {resource}{where}: {exc}"


@contextmanager
def explained(verb: str, resource: str, namespace: str | None) -> Iterator[None]:
    """Turn the API server's refusals inside the block into a CommandError."""
    try:
        yield
    except kube.KubeApiError as exc:
        raise CommandError(api_error_message(exc, verb, resource, namespace)) from None


async def get_connection(client: kube.KubeClient, namespace: str, name: str) -> dict[str, Any]:
    with explained("get", "connections", namespace):
        body = await client.get(kube.connection_path(namespace, name))
    if body is None:
        raise CommandError(f"Connection {name!r} not found in namespace {namespace}")
    return body


async def patch_connection(
    client: kube.KubeClient, namespace: str, name: str, patch: dict[str, Any]
) -> dict[str, Any]:
    with explained("patch", "connections", namespace):
        try:
            body = await client.merge_patch(kube.connection_path(namespace, name), patch)
        except kube.KubeApiError as exc:
            if exc.status != 404:
                raise
            body = None
    if body is None:
        raise CommandError(f"Connection {name!r} not found in namespace {namespace}")
    return body
