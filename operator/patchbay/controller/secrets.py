"""A watch on Secrets that sees their metadata only.

The operator needs a Secret's name and resourceVersion to notice a rotation;
its data is read at verification and never kept. The API server is asked for
PartialObjectMetadata, as controller-runtime's metadata informers do, so no
Secret value travels to the operator through the watch.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

import aiohttp

from patchbay import kube

logger = logging.getLogger(__name__)

# namespace, name, resourceVersion (None: deleted)
SecretHandler = Callable[[str, str, str | None], Awaitable[None]]
# namespace (None: all), the (namespace, name) pairs a fresh list found
RelistHandler = Callable[[str | None, set[tuple[str, str]]], Awaitable[None]]

PAGE_SIZE = 500
WATCH_SECONDS = 300
RETRY_SECONDS = 5.0


class SecretMetadataWatch:
    """List, then watch, the Secrets of some namespaces (or all); relist when the
    watch falls too far behind (410 Gone) or fails."""

    def __init__(
        self,
        client: kube.KubeClient,
        namespaces: Sequence[str] | None,
        on_secret: SecretHandler,
        on_relist: RelistHandler,
    ) -> None:
        self._client = client
        self._namespaces: Sequence[str | None] = list(namespaces) if namespaces else [None]
        self._on_secret = on_secret
        self._on_relist = on_relist
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(ns)) for ns in self._namespaces]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, namespace: str | None) -> None:
        rng = random.Random()
        while True:
            try:
                version: str | None = await self._list(namespace)
                while version is not None:
                    version = await self._watch(namespace, version)
            except asyncio.CancelledError:
                raise
            except (kube.KubeApiError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                problem = (
                    f"{exc.status} {exc.reason}"
                    if isinstance(exc, kube.KubeApiError)
                    else type(exc).__name__
                )
                logger.warning("the Secret watch failed (%s); listing again", problem)
                await asyncio.sleep(RETRY_SECONDS * rng.uniform(0.5, 1.0))

    async def _list(self, namespace: str | None) -> str:
        seen: set[tuple[str, str]] = set()
        params = {"limit": str(PAGE_SIZE)}
        while True:
            page = await self._client.request(
                "GET", kube.secrets_path(namespace), params=params, accept=kube.METADATA_LIST
            )
            page = page or {}
            for item in page.get("items") or []:
                meta = item.get("metadata") or {}
                key = (meta.get("namespace", ""), meta.get("name", ""))
                seen.add(key)
                await self._on_secret(*key, meta.get("resourceVersion"))
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                await self._on_relist(namespace, seen)
                return str((page.get("metadata") or {}).get("resourceVersion", ""))
            params = {"limit": str(PAGE_SIZE), "continue": token}

    async def _watch(self, namespace: str | None, version: str) -> str | None:
        """Follow events from version; the version to go on from, or None to relist."""
        params = {"resourceVersion": version, "allowWatchBookmarks": "true"}
        async for event in self._client.watch(
            kube.secrets_path(namespace),
            params,
            accept=kube.METADATA,
            timeout_seconds=WATCH_SECONDS,
        ):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:  # too old: what happened meanwhile is lost
                    return None
                raise kube.KubeApiError(int(obj.get("code") or 500), str(obj.get("reason", "")), "")
            meta = obj.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            await self._on_secret(
                meta.get("namespace", ""),
                meta.get("name", ""),
                None if kind == "DELETED" else meta.get("resourceVersion"),
            )
        return version
