"""Every driver this build ships, each registered once with its metadata.

Modelled on external-secrets' ``pkg/register``: each driver module declares a
``DriverInfo`` (name, Service Binding type, default port, capabilities, factory) next
to its class, and this module lists them, explicitly. The CRD's list of drivers, the
binding Secret, the operator's and the CLI's drivers all come from here, so adding a
driver is its module plus one line below (and ``make crds``).
"""

from __future__ import annotations

from patchbay.drivers import http, mysql, postgres, s3, sftp, sqlserver
from patchbay.drivers.base import Driver, DriverInfo

REGISTERED: tuple[DriverInfo, ...] = (
    postgres.DRIVER,
    mysql.DRIVER,
    sqlserver.DRIVER,
    s3.DRIVER,
    sftp.DRIVER,
    http.DRIVER,
)
_BY_NAME = {info.name: info for info in REGISTERED}


class UnknownDriverError(KeyError):
    """No driver of this name is registered."""


def driver_names() -> list[str]:
    """The names Connector.spec.driver may take, in registration order."""
    return [info.name for info in REGISTERED]


def driver_info(name: str) -> DriverInfo:
    """The registration of the driver ``name``; UnknownDriverError when there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownDriverError(name) from None


def instantiate() -> dict[str, Driver]:
    """One instance of every registered driver, by name."""
    return {info.name: info.factory() for info in REGISTERED}
