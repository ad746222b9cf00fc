"""Fake servers on loopback for the driver tests: what a real server cannot be made to do.

A subclass of FakeTcpServer says what it tells each client in ``converse``; the base
class listens, counts connections and, when it stops serving, hangs up on clients still
connected and lets their handlers finish.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Self


class FakeTcpServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.connections = 0
        self.connected = asyncio.Event()
        # Set when a conversation ends, whichever side hung up.
        self.closed = asyncio.Event()
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[task] = writer
        self.connections += 1
        self.connected.set()
        try:
            await self.converse(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        finally:
            writer.close()
            self.closed.set()

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[Self]:
        server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            try:
                yield self
            finally:
                for writer in self._clients.values():
                    writer.close()
                await asyncio.gather(*self._clients, return_exceptions=True)
