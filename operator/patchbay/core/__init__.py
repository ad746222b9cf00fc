"""The domain of patchbay without Kubernetes: resolving a Connection against its
connector, its inputs, schedule, status and binding, and verification around a driver.
Plain functions and records, testable without a cluster."""
