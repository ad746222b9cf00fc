# patchbay developer entry points. `make test` is what CI runs.
PYTHON ?= python3
export PATCHBAY_CACHE_DIR ?= $(HOME)/.cache/patchbay

.PHONY: install crds lint test test-deps test-unit cluster-up cluster-down control-plane minio demo

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev]'

crds:
	$(PYTHON) -m patchbay.api.crd crds

lint:
	$(PYTHON) -m ruff check operator tests hack bench
	$(PYTHON) -m ruff format --check operator tests hack bench
	$(PYTHON) -m mypy

# Builds etcd, kube-apiserver, kube-controller-manager and kubectl once into
# $(PATCHBAY_CACHE_DIR) unless KUBEBUILDER_ASSETS points at existing binaries.
control-plane:
	@if [ -z "$$KUBEBUILDER_ASSETS" ]; then hack/build-control-plane.sh >/dev/null; fi

# Builds the MinIO server the s3 driver's tests run against, once, into $(PATCHBAY_CACHE_DIR).
minio:
	@hack/build-minio.sh >/dev/null

# Debian packages the integration tests start (PostgreSQL server, ...).
test-deps:
	hack/install-test-deps.sh

test: install lint control-plane minio test-deps
	$(PYTHON) -m pytest

test-unit: install
	$(PYTHON) -m pytest tests/unit

cluster-up: install control-plane
	$(PYTHON) hack/localcluster.py up

# One command: control plane, PostgreSQL, CRDs, catalogue, operator, two Connections.
demo: install control-plane test-deps
	$(PYTHON) hack/demo.py

cluster-down:
	$(PYTHON) hack/localcluster.py down
