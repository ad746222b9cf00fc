"""Bounds on what a user may ask of the operator.

The CRD schema refuses values outside them at admission; the reconciler also
clamps objects stored before a bound existed, and says so in a condition.
"""

from __future__ import annotations

# Below this a periodic verification becomes a request storm against the vendor.
MIN_INTERVAL = "1m"
MIN_INTERVAL_SECONDS = 60.0
# A token bucket refilled faster than this is no limit at all.
MIN_RATE_LIMIT_PERIOD = "1s"
MIN_RATE_LIMIT_PERIOD_SECONDS = 1.0
# One verification (or discovery call) may hold a concurrency slot at most this long.
MAX_TIMEOUT = "2m"
MAX_TIMEOUT_SECONDS = 120.0
