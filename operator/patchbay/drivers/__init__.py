"""Protocol drivers, one module each, behind the interface in ``base``, registered in
``registry``."""

from __future__ import annotations

from patchbay.drivers.base import Driver


def available_drivers() -> dict[str, Driver]:
    """Every driver this build ships, by Connector.spec.driver name."""
    # Imported here: the registry imports every driver and its protocol library.
    from patchbay.drivers.registry import instantiate

    return instantiate()
