"""Failover between the chart's operator replicas on the real control plane.

There are no pods here, so every replica is `patchbay run` started with the chart's
own arguments (each on its own loopback ports, as each pod would have its own IP),
its `POD_ID`, and the chart's ServiceAccount token. The admission webhooks are
registered as the chart registers them, except that they call a URL: a TCP proxy on
loopback that stands in for the webhook Service and kube-proxy, sending each
connection to one of the ready replicas in turn. A replica joins that Service once
its webhook port accepts connections (the chart's readiness probe) and leaves it
when it is killed or asked to stop (the endpoint controller's part).

What a Service cannot hide is a request in flight to a pod at the moment it dies:
the API server does not resend an admission request, so under `failurePolicy: Fail`
that one write is refused. The writers here never have a request in flight when a
replica is killed; docs/operations.md ("Availability") says what a crash costs.

Takeover times are printed (`pytest -s`), never asserted.
"""

from __future__ import annotations

import base64
import copy
import json
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

import localcluster
import localwebhooks
from chart import (
    WEBHOOK_KINDS,
    Manifest,
    apply_manifests,
    helm_binary,
    install_without_webhooks,
    mounted_secret,
    of_kind,
    operator_container,
    render,
    the,
    token_kubeconfig,
)
from http_server import TokenApi
from localserver import free_port
from operator_harness import (
    OperatorProcess,
    apply,
    get_json,
    http_connection,
    token_secret,
    wait_for,
    wait_for_reason,
)

# --- the webhook Service ------------------------------------------------------------------------


class ServiceProxy:
    """TCP on a loopback port to one of the endpoints, round robin, as kube-proxy does
    for a Service; the TLS session is the replica's own."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._endpoints: list[int] = []
        self._turn = 0
        self._open: dict[int, set[socket.socket]] = {}
        self._closed = False
        threading.Thread(target=self._accept, name="service-proxy", daemon=True).start()

    def add(self, port: int) -> None:
        with self._lock:
            self._endpoints.append(port)
            self._open.setdefault(port, set())

    def remove(self, port: int, *, drop_connections: bool) -> None:
        """Out of the endpoints; open connections end too when the pod is gone."""
        with self._lock:
            self._endpoints.remove(port)
            sockets = list(self._open.get(port, ())) if drop_connections else []
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _pick(self) -> int | None:
        with self._lock:
            if not self._endpoints:
                return None
            self._turn = (self._turn + 1) % len(self._endpoints)
            return self._endpoints[self._turn]

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            port = self._pick()
            try:
                if port is None:
                    raise ConnectionRefusedError
                backend = socket.create_connection(("127.0.0.1", port), timeout=5)
                backend.settimeout(None)
            except OSError:
                client.close()  # no endpoint: refused, as a Service without ready pods
                continue
            with self._lock:
                self._open.setdefault(port, set()).update((client, backend))
            for source, sink in ((client, backend), (backend, client)):
                threading.Thread(target=self._pipe, args=(source, sink, port), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, port: int) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._open.get(port, set()).difference_update((source, sink))
            source.close()


# --- the replicas -------------------------------------------------------------------------------


@dataclass
class Replica:
    pod: str  # POD_ID, kopf's identity among peers
    webhook_port: int
    process: OperatorProcess

    def peering_changes(self) -> list[tuple[float, str]]:
        """(time, "pause" | "resume") for every peering decision in the replica's log."""
        changes: list[tuple[float, str]] = []
        for line in self.process.logs().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            message = str(record.get("message", ""))
            kind = (
                "resume"
                if message.startswith("Resuming operations")
                else "pause"
                if message.startswith("Pausing")
                else None
            )
            if kind is not None:
                at = datetime.strptime(str(record["time"]), "%Y-%m-%d %H:%M:%S,%f")
                changes.append((at.timestamp(), kind))
        return changes

    def resumed_since(self, moment: float) -> float | None:
        """When the replica last went to work after ``moment``, if it did."""
        resumes = [at for at, kind in self.peering_changes() if kind == "resume" and at >= moment]
        return resumes[-1] if resumes else None

    def working(self) -> bool:
        # kopf starts a peered operator paused and logs each change of its mind
        changes = self.peering_changes()
        return bool(changes) and changes[-1][1] == "resume"


@dataclass
class Release:
    """The chart's objects on the control plane and the replicas run from its Deployment."""

    cp: localcluster.ControlPlane
    namespace: str  # the one watched namespace
    peering: str
    args: list[str]
    kubeconfig: Path
    workdir: Path
    serving: localwebhooks.WebhookServing
    service: ServiceProxy
    replicas: list[Replica] = field(default_factory=list)

    def start(self, pod: str) -> Replica:
        """A pod of the Deployment: running, registered among the peers, and ready."""
        port = free_port()
        args: list[str] = []
        for arg in self.args:
            name = arg.partition("=")[0]
            if name == "--liveness":
                arg = f"--liveness=http://127.0.0.1:{free_port()}/healthz"
            elif name == "--webhook-port":
                arg = f"--webhook-port={port}"
            elif name == "--webhook-cert":
                arg = f"--webhook-cert={self.serving.cert_file}"
            elif name == "--webhook-key":
                arg = f"--webhook-key={self.serving.key_file}"
            elif name == "--metrics-port":
                continue  # the harness gives each process a metrics port of its own
            args.append(arg)
        args.append("--webhook-host=127.0.0.1")
        with pytest.MonkeyPatch.context() as env:
            env.setenv("POD_ID", pod)
            process = OperatorProcess(
                self.cp, self.workdir / f"{pod}.log", *args, kubeconfig=self.kubeconfig
            )
        replica = Replica(pod, port, process)
        self.replicas.append(replica)
        wait_for(lambda: pod in self.peers(), f"{pod} among the peers")
        wait_for(lambda: _accepts(port), f"{pod} serving its webhook port")
        self.service.add(port)
        return replica

    def peers(self) -> dict[str, dict[str, Any]]:
        obj = get_json(self.cp, "kopfpeering", self.peering, "-n", self.namespace)
        status: dict[str, dict[str, Any]] = obj.get("status") or {}
        return status

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.process.process.poll() is None]

    def ranked(self) -> list[Replica]:
        """The live replicas, the one kopf lets work first: the highest priority."""
        peers = self.peers()
        live = [r for r in self.live() if r.pod in peers]
        priorities = [int(peers[r.pod]["priority"]) for r in live]
        assert len(set(priorities)) == len(priorities), f"replicas of equal priority: {peers}"
        return sorted(live, key=lambda r: -int(peers[r.pod]["priority"]))

    def wait_settled(self) -> tuple[Replica, list[Replica]]:
        """The working replica, once it is the only one working, and those standing by."""

        def settled() -> tuple[Replica, list[Replica]] | None:
            first, *rest = self.ranked()
            if first.working() and not any(r.working() for r in rest):
                return first, rest
            return None

        result: tuple[Replica, list[Replica]] = wait_for(settled, "one working replica", 120)
        return result

    def kill(self, replica: Replica) -> float:
        """SIGKILL, as a crash or an OOM kill; the pod then leaves the Service."""
        killed_at = time.time()
        replica.process.process.kill()
        replica.process.process.wait()
        self.service.remove(replica.webhook_port, drop_connections=True)
        return killed_at

    def stop(self, replica: Replica) -> float:
        """A pod being deleted: it leaves the Service first (the chart's preStop delay
        lets it answer meanwhile), then gets SIGTERM."""
        self.service.remove(replica.webhook_port, drop_connections=False)
        time.sleep(1)  # the shutdown delay, shortened
        stopped_at = time.time()
        replica.process.stop()
        return stopped_at

    def takeover(self, since: float, what: str) -> tuple[Replica, float]:
        """The replica that went to work after ``since``, and how many seconds later."""

        def resumed() -> tuple[Replica, float] | None:
            for replica in self.live():
                at = replica.resumed_since(since)
                if at is not None:
                    return replica, at - since
            return None

        result: tuple[Replica, float] = wait_for(resumed, what, timeout=180)
        return result


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _webhook_configurations(
    manifests: list[Manifest], url_base: str, ca_pem: bytes
) -> list[Manifest]:
    """The chart's configurations, calling ``url_base`` instead of the Service."""
    configurations = []
    for kind in WEBHOOK_KINDS:
        configuration = copy.deepcopy(the(manifests, kind))
        for webhook in configuration["webhooks"]:
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {
                "url": f"{url_base}{path}",
                "caBundle": base64.b64encode(ca_pem).decode(),
            }
        configurations.append(configuration)
    return configurations


@pytest.fixture(scope="module")
def helm_path() -> Path:
    return helm_binary()


@pytest.fixture
def release(
    control_plane: localcluster.ControlPlane, helm_path: Path, namespace: str, tmp_path: Path
) -> Iterator[Release]:
    name = f"fo-{uuid.uuid4().hex[:8]}"
    release_namespace = f"{name}-system"
    control_plane.kubectl("create", "namespace", release_namespace)
    values = {
        "watchNamespaces": [namespace],
        "peering": {"enabled": True, "name": name},
        # the chart denies loopback by default; here every system under test is on it
        "egress": {"deny": []},
    }
    manifests = render(
        helm_path, values, release=name, namespace=release_namespace, include_crds=True
    )
    deployment = the(manifests, "Deployment")
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    token = install_without_webhooks(control_plane, manifests, release_namespace)
    # One certificate for every replica, as they all mount the same Secret; for the
    # loopback address the proxy listens on rather than the Service's name.
    serving = localwebhooks.serving(tmp_path / "webhook-tls")
    service = ServiceProxy()
    configurations = _webhook_configurations(
        manifests, f"https://127.0.0.1:{service.port}", serving.ca_pem
    )
    _, mount_path = mounted_secret(manifests)
    assert any(
        a.startswith(f"--webhook-cert={mount_path}") for a in operator_container(manifests)["args"]
    )
    result = Release(
        cp=control_plane,
        namespace=namespace,
        peering=name,
        args=list(operator_container(manifests)["args"]),
        kubeconfig=token_kubeconfig(control_plane, token, tmp_path / "kubeconfig"),
        workdir=tmp_path,
        serving=serving,
        service=service,
    )
    apply_manifests(control_plane, configurations)
    try:
        yield result
    finally:
        for replica in result.replicas:
            replica.process.stop()
        for configuration in configurations:
            control_plane.kubectl(
                "delete",
                configuration["kind"],
                configuration["metadata"]["name"],
                "--ignore-not-found",
                check=False,
            )
        service.close()
        for m in of_kind(manifests, "ClusterRoleBinding") + of_kind(manifests, "ClusterRole"):
            control_plane.kubectl(
                "delete", m["kind"], m["metadata"]["name"], "--ignore-not-found", check=False
            )
        control_plane.kubectl("delete", "namespace", release_namespace, "--wait=false", check=False)


# --- writers ------------------------------------------------------------------------------------


@dataclass
class Writes:
    """Creates Connections one after another on a thread, each through the webhooks."""

    cp: localcluster.ControlPlane
    namespace: str
    base_url: str
    created: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _between: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="writes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            name = f"conn-{number:04d}"
            with self._between:
                result = self.cp.kubectl(
                    "create",
                    "-n",
                    self.namespace,
                    "-f",
                    "-",
                    input=yaml.safe_dump(http_connection(name, self.base_url)),
                    check=False,
                )
            if result.returncode == 0:
                self.created.append(name)
            else:
                self.refused.append((name, result.stderr.strip()))
            time.sleep(0.1)

    @contextmanager
    def between_two(self) -> Iterator[None]:
        """No write in flight meanwhile."""
        with self._between:
            yield

    def wait_for_more(self, count: int) -> None:
        target = len(self.created) + count
        wait_for(lambda: len(self.created) >= target or self.refused, f"{count} more writes")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


def _bindings_by_owner(cp: localcluster.ControlPlane, namespace: str) -> Counter[str]:
    secrets = get_json(cp, "secrets", "-n", namespace)["items"]
    return Counter(
        ref["name"]
        for s in secrets
        for ref in s["metadata"].get("ownerReferences", [])
        if ref["kind"] == "Connection"
    )


# --- the tests ----------------------------------------------------------------------------------


def test_killing_the_working_replica_mid_rollout_refuses_no_write_and_every_connection_converges(
    release: Release, api: TokenApi, token: str
) -> None:
    cp, ns = release.cp, release.namespace
    apply(cp, ns, token_secret("api-token", token))
    old = [release.start("patchbay-old-1")]
    release.wait_settled()
    # from here on every write that succeeds was answered by a replica (failurePolicy Fail)
    localwebhooks.wait_effective(cp, ns)
    old.append(release.start("patchbay-old-2"))
    release.wait_settled()
    writes = Writes(cp, ns, api.base_url)
    writes.start()
    try:
        writes.wait_for_more(5)
        # the rollout's first step: a pod of the new ReplicaSet joins (maxSurge 1) ...
        new = [release.start("patchbay-new-1")]
        working, _ = release.wait_settled()
        # ... and the working pod crashes
        with writes.between_two():
            killed_at = release.kill(working)
        before_takeover = len(writes.created)
        successor, crash_seconds = release.takeover(killed_at, "a standby taking over")
        admitted_meanwhile = len(writes.created) - before_takeover
        writes.wait_for_more(5)
        # the rollout goes on: the second new pod joins, then the old ones are stopped
        new.append(release.start("patchbay-new-2"))
        handovers: list[tuple[str, str, float]] = []
        for replica in [r for r in old if r in release.live()]:
            was_working = replica.working()
            stopped_at = release.stop(replica)
            if was_working:
                successor_of_stopped, seconds = release.takeover(
                    stopped_at, "a standby taking over"
                )
                handovers.append((replica.pod, successor_of_stopped.pod, seconds))
            writes.wait_for_more(5)
    finally:
        writes.stop()

    print(
        f"\nSIGKILL of {working.pod}: {successor.pod} took over after {crash_seconds:.1f}s; "
        f"{admitted_meanwhile} Connections admitted meanwhile by replicas standing by"
    )
    for stopped, taker, seconds in handovers:
        print(f"SIGTERM of {stopped}: {taker} took over after {seconds:.1f}s")
    print(f"{len(writes.created)} Connections created, {len(writes.refused)} refused")
    assert writes.refused == []
    assert {r.pod for r in release.live()} == {r.pod for r in new if r is not working}
    for name in writes.created:
        obj = wait_for_reason(cp, ns, name, "Verified", timeout=120)
        assert obj["status"]["binding"]["name"] == f"{name}-binding"
    bindings = _bindings_by_owner(cp, ns)
    assert {name: bindings[name] for name in writes.created} == dict.fromkeys(writes.created, 1)


def _standby_alone_in_the_service(release: Release) -> tuple[Replica, Replica]:
    release.start("patchbay-1")
    release.wait_settled()
    release.start("patchbay-2")
    working, (standby,) = release.wait_settled()
    release.service.remove(working.webhook_port, drop_connections=True)
    localwebhooks.wait_effective(release.cp, release.namespace)
    return working, standby


def _dry_run(release: Release, connection: Manifest) -> subprocess.CompletedProcess[str]:
    return release.cp.kubectl(
        "create",
        "-n",
        release.namespace,
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=yaml.safe_dump(connection),
        check=False,
    )


def test_a_replica_standing_by_judges_and_labels_connections(
    release: Release, api: TokenApi, token: str
) -> None:
    cp, ns = release.cp, release.namespace
    apply(cp, ns, token_secret("api-token", token))
    working, standby = _standby_alone_in_the_service(release)

    leaky = http_connection("leaky", api.base_url)
    leaky["spec"]["config"]["token"] = token
    refused = _dry_run(release, leaky)
    assert "denied the request" in refused.stderr
    assert "variable 'token'" in refused.stderr
    assert token not in refused.stderr
    admitted = _dry_run(release, http_connection("fine", api.base_url))
    assert admitted.returncode == 0, admitted.stderr
    assert json.loads(admitted.stdout)["metadata"]["labels"]["patchbay.dev/driver"] == "http"
    apply(cp, ns, http_connection("fine", api.base_url))
    wait_for_reason(cp, ns, "fine", "Verified")
    # the working replica verified it; the one that answered is still standing by
    assert working.working() and not standby.working()


def test_a_replica_standing_by_judges_by_the_connector_as_it_is_now(
    release: Release, api: TokenApi, token: str
) -> None:
    cp, ns = release.cp, release.namespace
    connector: Manifest = yaml.safe_load(
        (Path(__file__).parents[2] / "deploy" / "connectors" / "http-api.yaml").read_text()
    )
    connector = {
        "apiVersion": connector["apiVersion"],
        "kind": "Connector",
        "metadata": {"name": "regional-api"},
        "spec": connector["spec"],
    }
    region = {"key": "region", "label": "Region", "type": "string", "required": False}
    connector["spec"]["variables"].append(region)
    apply(cp, ns, connector, token_secret("api-token", token))
    _, standby = _standby_alone_in_the_service(release)

    regional = http_connection("regional", api.base_url, connector="regional-api")
    regional["spec"]["config"]["region"] = "eu-west"
    assert _dry_run(release, regional).returncode == 0
    # the region becomes a credential: it may no longer be written inline
    region["secret"] = True
    apply(cp, ns, connector)
    refused = _dry_run(release, regional)
    assert "variable 'region'" in refused.stderr, refused.stdout
    assert not standby.working()
