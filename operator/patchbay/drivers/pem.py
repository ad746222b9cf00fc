"""PEM material (CA certificates, client certificates and keys) for libraries that read it
only from files: ssl's ``load_cert_chain``, libpq, python-tds."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def pem_files(prefix: str, pems: Mapping[str, str | None]) -> Iterator[dict[str, str]]:
    """The path of a file for each PEM text given (by name; empty ones are left out).

    The files live in a private directory (mode 0700, each file 0600, created new) for
    the duration of the ``with`` block and are removed whatever happens. Writing them is
    small local work: callers on the event loop run it where the library reads them.
    """
    given = {name: pem for name, pem in pems.items() if pem}
    if not given:
        yield {}
        return
    with tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as directory:
        paths: dict[str, str] = {}
        for name, pem in given.items():
            path = os.path.join(directory, name)
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(pem)
            paths[name] = path
        yield paths
