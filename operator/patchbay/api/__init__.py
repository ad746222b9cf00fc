"""The patchbay API (group patchbay.dev, version v1alpha1) as pydantic models."""

from patchbay.api.common import API_VERSION, GROUP, VERSION, Condition
from patchbay.api.connection import Connection, ConnectionSpec, ConnectionStatus
from patchbay.api.connector import ClusterConnector, Connector, ConnectorSpec, ConnectorStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "ClusterConnector",
    "Condition",
    "Connection",
    "ConnectionSpec",
    "ConnectionStatus",
    "Connector",
    "ConnectorSpec",
    "ConnectorStatus",
]
