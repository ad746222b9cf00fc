#!/usr/bin/env bash
# End to end on a kind cluster: build the operator image, load it into kind,
# install the Helm chart, apply the example Connectors and a Connection against
# an HTTP server inside the cluster, and wait until the Connection is Ready.
# Needs docker, kind and kubectl on PATH; helm comes from hack/build-helm.sh.
# The image is the one the chart deploys by default (a test keeps them equal).
set -euo pipefail

IMAGE="${PATCHBAY_IMAGE:-patchbay/operator:0.1.0}"
CLUSTER="${PATCHBAY_KIND_CLUSTER:-patchbay-e2e}"
NAMESPACE=patchbay-system
DEMO=patchbay-e2e
cd "$(dirname "$0")/.."
HELM="$(hack/build-helm.sh)"

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "$tool is required for the kind end-to-end run" >&2; exit 1; }
done

cleanup() {
  if [ "${PATCHBAY_KEEP_CLUSTER:-}" != 1 ]; then kind delete cluster --name "$CLUSTER"; fi
}
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s
fi
trap cleanup EXIT
kubectl config use-context "kind-$CLUSTER"

docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

"$HELM" upgrade --install patchbay charts/patchbay \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --wait --timeout 180s
kubectl -n "$NAMESPACE" rollout status deployment/patchbay --timeout=120s

# An HTTP API inside the cluster that answers 200 to the right bearer token.
kubectl create namespace "$DEMO" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$DEMO" apply -f - <<'YAML'
apiVersion: v1
kind: Secret
metadata:
  name: api-token
stringData:
  token: e2e-token
---
apiVersion: v1
kind: Pod
metadata:
  name: token-api
  labels: {app: token-api}
spec:
  containers:
    - name: api
      image: python:3.12.8-slim-bookworm
      command:
        - python
        - -c
        - |
          from http.server import BaseHTTPRequestHandler, HTTPServer
          class Api(BaseHTTPRequestHandler):
              def do_GET(self):
                  ok = self.headers.get("Authorization") == "Bearer e2e-token"
                  self.send_response(200 if ok else 401)
                  self.end_headers()
          HTTPServer(("", 8000), Api).serve_forever()
      ports: [{containerPort: 8000}]
---
apiVersion: v1
kind: Service
metadata:
  name: token-api
spec:
  selector: {app: token-api}
  ports: [{port: 80, targetPort: 8000}]
---
apiVersion: patchbay.dev/v1alpha1
kind: Connection
metadata:
  name: token-api
spec:
  connectorRef: {kind: ClusterConnector, name: http-api}
  config:
    baseUrl: http://token-api
  credentials:
    secretRef: {name: api-token}
YAML
kubectl -n "$DEMO" wait pod/token-api --for=condition=Ready --timeout=180s
kubectl -n "$DEMO" wait connection/token-api --for=condition=Ready --timeout=180s
# The examples point at hosts that do not exist here: each must still get a
# classified result (phase Failed with a reason), never stay unanswered.
kubectl -n "$DEMO" apply -f deploy/examples/
kubectl -n "$DEMO" wait connections --all --for=jsonpath='{.status.phase}' --timeout=180s
kubectl -n "$DEMO" get connections
kubectl -n "$DEMO" get secret token-api-binding
echo "e2e: Connection token-api is Ready"
