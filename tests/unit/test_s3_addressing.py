"""Where the s3 driver sends its requests: virtual-hosted or path-style addressing."""

from __future__ import annotations

import pytest
from yarl import URL

from patchbay.drivers.s3 import bucket_address


@pytest.mark.parametrize(
    ("endpoint", "bucket", "path_style", "origin", "path"),
    [
        # AWS: the bucket becomes part of the host name.
        ("https://s3.eu-west-1.amazonaws.com", "orders", False,
         "https://orders.s3.eu-west-1.amazonaws.com", ""),
        ("https://minio.storage.svc:9000/", "orders", True,
         "https://minio.storage.svc:9000", "/orders"),
        # An IP address cannot carry a bucket name.
        ("http://10.1.2.3:9000", "orders", False, "http://10.1.2.3:9000", "/orders"),
        ("http://[fd00::5]:9000", "orders", False, "http://[fd00::5]:9000", "/orders"),
        # Dots would not match a wildcard certificate; upper case is no DNS label.
        ("https://s3.amazonaws.com", "logs.example.com", False,
         "https://s3.amazonaws.com", "/logs.example.com"),
        ("https://s3.amazonaws.com", "Legacy", False, "https://s3.amazonaws.com", "/Legacy"),
        # An endpoint behind a path keeps it.
        ("https://gateway.example/s3/", "orders", True, "https://gateway.example", "/s3/orders"),
    ],
)  # fmt: skip
def test_bucket_address(
    endpoint: str, bucket: str, path_style: bool, origin: str, path: str
) -> None:
    assert bucket_address(URL(endpoint), bucket, path_style) == (URL(origin), path)
