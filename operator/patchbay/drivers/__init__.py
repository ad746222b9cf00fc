"""Protocol drivers, one module each, behind the interface in ``base``."""

from __future__ import annotations

from patchbay.drivers.base import Driver


def available_drivers() -> dict[str, Driver]:
    """Every driver this build ships, by Connector.spec.driver name."""
    from patchbay.drivers.http import HttpDriver
    from patchbay.drivers.mysql import MysqlDriver
    from patchbay.drivers.postgres import PostgresDriver
    from patchbay.drivers.s3 import S3Driver
    from patchbay.drivers.sftp import SftpDriver
    from patchbay.drivers.sqlserver import SqlServerDriver

    drivers: list[Driver] = [
        PostgresDriver(),
        MysqlDriver(),
        SqlServerDriver(),
        HttpDriver(),
        SftpDriver(),
        S3Driver(),
    ]
    return {d.name: d for d in drivers}
