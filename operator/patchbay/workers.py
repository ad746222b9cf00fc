"""Thread pools for the blocking work the operator does off the event loop.

CPU-bound work (decrypting private keys, parsing PEM into TLS contexts) and
DNS resolution each get their own small, bounded pool, and neither uses
asyncio's default executor. Key decryption costs what the key file says
(KDF rounds); DNS lookups wait on the network. Sharing one pool would let a
handful of expensive keys hold every thread while each verification that
resolves a host name queues behind them.

A thread cannot be killed: when a verification times out, work already running
in a thread goes on until it returns, and only work still queued is dropped.
So every CPU-bound input is bounded before it gets here (the sftp driver caps
KDF rounds and iterations), which bounds how long a thread stays busy after the
timeout; a full CPU pool only delays other CPU work, never a DNS lookup.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

# CPU-bound work runs at most this many at once: more threads than cores only
# share the same cores.
CPU_WORKERS = max(2, min(4, os.cpu_count() or 1))
# Lookups mostly wait on the resolver; the C library's resolver timeout bounds each one.
DNS_WORKERS = 16

_cpu_pool = ThreadPoolExecutor(max_workers=CPU_WORKERS, thread_name_prefix="patchbay-cpu")
_dns_pool = ThreadPoolExecutor(max_workers=DNS_WORKERS, thread_name_prefix="patchbay-dns")


async def run_cpu(fn: Callable[..., T], *args: object) -> T:
    """fn(*args) in the CPU pool; cancelling the caller drops it if it has not started."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    return await loop.run_in_executor(_cpu_pool, functools.partial(context.run, fn, *args))


async def resolve(host: str, port: int) -> list[str]:
    """The addresses getaddrinfo finds for host (stream sockets), looked up in the DNS pool.

    Raises socket.gaierror as getaddrinfo does.
    """

    def lookup() -> list[str]:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [str(sockaddr[0]) for *_, sockaddr in infos]

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_dns_pool, lookup)
