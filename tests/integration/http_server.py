"""A local HTTP API for tests, served on loopback from a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class TokenApi:
    """Answers 200 to `Authorization: Bearer <token>` and 401 to anything else."""

    token: str
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.headers.get("Authorization", ""))
        self.paths.append(request.path)
        if request.headers.get("Authorization") == f"Bearer {self.token}":
            return web.json_response({"ok": True}, headers={"Server": "token-api/1.0"})
        return web.json_response({"error": "invalid token"}, status=401)


@contextmanager
def serve_token_api(token: str, host: str = "127.0.0.1") -> Iterator[TokenApi]:
    api = TokenApi(token=token, host=host)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", api.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        api.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        runner_box.append(runner)
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    ready.wait(10)
    try:
        yield api
    finally:
        asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
