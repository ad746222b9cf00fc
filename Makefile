# patchbay developer entry points. `make test` is what CI runs.
PYTHON ?= python3
export PATCHBAY_CACHE_DIR ?= $(HOME)/.cache/patchbay

.PHONY: install crds chart-files lint test test-deps test-unit test-drivers test-controlplane \
	test-chart cluster-up cluster-down control-plane demo \
	helm minio go-tools argocd-health-checks e2e-kind

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev]'

# The CRDs are generated into crds/ and into the copies the Helm chart and the
# kustomize base ship; tests fail when any copy is stale.
crds:
	$(PYTHON) -m patchbay.api.crd crds
	$(PYTHON) -m patchbay.api.crd charts/patchbay/crds
	$(PYTHON) -m patchbay.api.crd deploy/base/crds
	$(PYTHON) -m patchbay.api.reference docs/api.md

# The chart ships the ClusterConnector catalogue of deploy/connectors/, and the Argo CD
# health checks of deploy/argocd/health/ in its values.
chart-files: crds argocd-health-checks
	rm -f charts/patchbay/files/connectors/*.yaml
	cp deploy/connectors/*.yaml charts/patchbay/files/connectors/

argocd-health-checks:
	$(PYTHON) hack/argocd_health_checks.py

lint:
	$(PYTHON) -m ruff check operator tests hack bench
	$(PYTHON) -m ruff format --check operator tests hack bench
	$(PYTHON) -m mypy

# Builds etcd, kube-apiserver, kube-controller-manager and kubectl once into
# $(PATCHBAY_CACHE_DIR) unless KUBEBUILDER_ASSETS points at existing binaries.
control-plane:
	@if [ -z "$$KUBEBUILDER_ASSETS" ]; then hack/build-control-plane.sh >/dev/null; fi

# Builds a pinned helm once into $(PATCHBAY_CACHE_DIR)/helm/<version>/.
helm:
	@hack/build-helm.sh >/dev/null

# Builds the MinIO server the s3 driver's tests run against, once, into $(PATCHBAY_CACHE_DIR).
minio:
	@hack/build-minio.sh >/dev/null

# Builds kstatus and the Argo CD health runner (hack/gotools) and a pinned promtool once
# into $(PATCHBAY_CACHE_DIR); the GitOps and monitoring tests run them.
go-tools:
	@hack/build-go-tools.sh >/dev/null

# Debian packages the integration tests start (PostgreSQL server, ...).
test-deps:
	hack/install-test-deps.sh

test: install lint control-plane helm minio go-tools test-deps
	$(PYTHON) -m pytest

# One tier at a time, named for what it needs (see tests/conftest.py).
test-unit: install
	$(PYTHON) -m pytest tests/unit

test-drivers: install minio test-deps
	$(PYTHON) -m pytest tests/drivers

test-controlplane: install control-plane minio go-tools test-deps
	$(PYTHON) -m pytest tests/controlplane

test-chart: install control-plane helm go-tools test-deps
	$(PYTHON) -m pytest tests/chart

cluster-up: install control-plane
	$(PYTHON) tests/support/localcluster.py up

# One command: control plane, PostgreSQL, CRDs, catalogue, operator, two Connections.
demo: install control-plane test-deps
	$(PYTHON) hack/demo.py

cluster-down:
	$(PYTHON) tests/support/localcluster.py down

# End to end on a kind cluster with Docker (not available on every machine; CI
# runs it in .github/workflows/e2e-kind.yaml): build the image, load it into
# kind, install the chart, apply the examples, wait until they are Ready.
e2e-kind: helm
	hack/e2e-kind.sh
