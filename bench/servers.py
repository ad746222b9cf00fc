"""The systems the operator verifies: a token API and a black hole, both on 127.0.0.1.

Both run on one asyncio loop in a background thread of the benchmark process.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web
from kubeapi import BenchError

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


def _port(server: asyncio.AbstractServer | None) -> int:
    sockets = getattr(server, "sockets", None)
    if not sockets:
        raise BenchError("a benchmark server did not bind a socket")
    return int(sockets[0].getsockname()[1])


class TokenServer:
    """Answers 200 to ``Authorization: Bearer <token>``, 401 otherwise; counts requests."""

    def __init__(self, loop: LoopThread, token: str) -> None:
        self.token = token
        self.requests = 0
        self.authorized = 0
        self._loop = loop
        self._runner: web.AppRunner | None = None
        self.port = loop.run(self._start())

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        # Runs on the loop thread only, so plain increments are safe.
        self.requests += 1
        if request.headers.get("Authorization") == f"Bearer {self.token}":
            self.authorized += 1
            return web.json_response({"ok": True}, headers={"Server": "bench-api/1.0"})
        return web.json_response({"error": "invalid token"}, status=401)

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        return _port(site._server)

    def stop(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                self._loop.run(self._runner.cleanup())
            self._runner = None


class BlackHole:
    """Accepts connections and never answers; counts them."""

    def __init__(self, loop: LoopThread) -> None:
        self.accepted = 0
        self.open = 0
        self.most_open = 0
        self._loop = loop
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = loop.run(self._start())

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _silent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        self._writers.add(writer)
        try:
            await reader.read()  # until the client gives up and closes
        except OSError:
            pass
        finally:
            self.open -= 1
            self._writers.discard(writer)
            writer.close()

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._silent, "127.0.0.1", 0, backlog=1024)
        return _port(self._server)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):  # held connections would keep it open
                writer.close()
            await asyncio.wait_for(self._server.wait_closed(), 5.0)

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._loop.run(self._close())
            self._server = None
