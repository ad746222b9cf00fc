"""The driver registry: one registration per driver, true to the driver's code."""

from __future__ import annotations

import pytest

from patchbay.api.connector import ConnectorSpec
from patchbay.drivers import available_drivers
from patchbay.drivers.base import DriverInfo, FileBrowsing, SqlBrowsing
from patchbay.drivers.registry import REGISTERED, UnknownDriverError, driver_info, driver_names


def test_each_driver_is_registered_once_under_the_name_it_answers_to() -> None:
    names = driver_names()
    assert len(names) == len(set(names))
    for info in REGISTERED:
        assert info.factory().name == info.name
        assert driver_info(info.name) is info


@pytest.mark.parametrize("info", REGISTERED, ids=lambda info: info.name)
def test_registered_capabilities_are_the_ones_the_driver_implements(info: DriverInfo) -> None:
    driver = info.factory()

    assert "verify" in info.capabilities
    assert ("sql" in info.capabilities) == isinstance(driver, SqlBrowsing)
    assert ("files" in info.capabilities) == isinstance(driver, FileBrowsing)


def test_operator_and_cli_get_one_instance_of_every_registered_driver() -> None:
    drivers = available_drivers()

    assert list(drivers) == driver_names()
    assert all(drivers[name].name == name for name in drivers)


def test_unregistered_driver_name_is_an_unknown_driver() -> None:
    with pytest.raises(UnknownDriverError):
        driver_info("oracle")


def test_connector_schema_allows_exactly_the_registered_drivers() -> None:
    schema = ConnectorSpec.model_json_schema(by_alias=True)

    assert schema["properties"]["driver"]["enum"] == driver_names()
