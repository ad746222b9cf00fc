"""Run a real local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager).

Everything listens on 127.0.0.1 only. Used by the test suite (``import localcluster``) and by
humans::

    python tests/support/localcluster.py up [--state-dir DIR]    # prints `export KUBECONFIG=...`
    python tests/support/localcluster.py env [--state-dir DIR]
    python tests/support/localcluster.py down [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import atexit
import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from localserver import free_port
from testpki import CertificateAuthority, pem_key, subject_alternative_names
from testprograms import find_program

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"
DEFAULT_STATE_DIR = Path.home() / ".cache" / "patchbay" / "cluster"
CONTEXT_NAME = "patchbay-local"
SERVICE_CIDR = "10.0.0.0/24"
# Start order; stop() goes in reverse so nothing loses its backend while still running.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
STATE_FILE = "state.json"
# Marks a directory as created by `up`, so `down` never deletes a directory it does not own.
MARKER_FILE = ".patchbay-localcluster"

READY_TIMEOUT = 90.0
CONTROLLERS_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class ControlPlaneError(RuntimeError):
    """The control plane failed to start or is in an unexpected state."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl call failed; unlike CalledProcessError, str() includes stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr or ''}".rstrip()


def find_binaries() -> Path:
    """Return the directory holding etcd, kube-apiserver, kube-controller-manager (and kubectl).

    Honours ``KUBEBUILDER_ASSETS`` (envtest convention); otherwise builds or reuses the cached
    binaries via ``hack/build-control-plane.sh``.
    """
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        path = Path(assets)
        if not path.is_dir():
            raise ControlPlaneError(f"KUBEBUILDER_ASSETS={assets} is not a directory")
        return path
    # stderr is inherited so a (slow) first build shows its progress.
    out = subprocess.run(
        [find_program("bash"), str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=True
    ).stdout
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if not lines:
        raise ControlPlaneError(f"{BUILD_SCRIPT} printed no binary directory")
    return Path(lines[-1])


def _binary(bin_dir: Path, name: str) -> str:
    # envtest asset dirs lack kubectl and kube-controller-manager, hence the PATH fallback.
    candidate = bin_dir / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ControlPlaneError(f"{name} not found in {bin_dir} nor on PATH")
    return found


@dataclass
class ControlPlane:
    """A running control plane; ``stop()`` tears it down."""

    workdir: Path
    kubeconfig: Path
    server: str
    bin_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Always filled; the only handle on processes of a detached cluster loaded from state.json.
    pids: dict[str, int] = field(default_factory=dict)

    def stop(self) -> None:
        """Terminate all components (SIGTERM, then SIGKILL after a grace period). Idempotent."""
        atexit.unregister(self.stop)
        for name in reversed(COMPONENTS):
            if name in self.pids:
                _terminate(self.pids[name], self.processes.get(name))
        self.processes.clear()
        self.pids.clear()

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster and capture its output."""
        cmd = [_binary(self.bin_dir, "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    # A killed process whose parent is gone may linger as a zombie if PID 1 does not reap;
    # it holds no resources, so count it as dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        # Detached components lead their own session; signal the whole group then.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _terminate(pid: int, proc: subprocess.Popen[bytes] | None) -> None:
    def wait(timeout: float) -> bool:
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    if proc is not None and proc.poll() is not None:
        return
    _signal(pid, signal.SIGTERM)
    if not wait(STOP_TIMEOUT):
        _signal(pid, signal.SIGKILL)
        wait(STOP_TIMEOUT)


# --- certificates -----------------------------------------------------------------------------


@dataclass
class _Pki:
    ca_cert: Path
    admin_cert: Path
    admin_key: Path
    serving_cert: Path
    serving_key: Path
    kcm_cert: Path
    kcm_key: Path
    sa_public: Path
    sa_private: Path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _make_pki(pki_dir: Path) -> _Pki:
    pki_dir.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.create("patchbay-local-ca")
    # 10.0.0.1 is the first address of SERVICE_CIDR, i.e. the in-cluster `kubernetes` service.
    serving_sans = subject_alternative_names(
        "127.0.0.1",
        "10.0.0.1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    )
    serving = ca.issue("kube-apiserver", server=True, sans=serving_sans)
    admin = ca.issue("admin", organizations=("system:masters",))
    kcm = ca.issue("system:kube-controller-manager")
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_pub = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _Pki(
        ca_cert=_write(pki_dir / "ca.crt", ca.cert_pem),
        serving_cert=_write(pki_dir / "apiserver.crt", serving[0]),
        serving_key=_write(pki_dir / "apiserver.key", serving[1]),
        admin_cert=_write(pki_dir / "admin.crt", admin[0]),
        admin_key=_write(pki_dir / "admin.key", admin[1]),
        kcm_cert=_write(pki_dir / "kube-controller-manager.crt", kcm[0]),
        kcm_key=_write(pki_dir / "kube-controller-manager.key", kcm[1]),
        sa_public=_write(pki_dir / "sa.pub", sa_pub),
        sa_private=_write(pki_dir / "sa.key", pem_key(sa_key)),
    )


def _write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> Path:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT_NAME,
                "cluster": {"server": server, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            }
        ],
        "contexts": [{"name": CONTEXT_NAME, "context": {"cluster": CONTEXT_NAME, "user": user}}],
        "current-context": CONTEXT_NAME,
    }
    # JSON is valid YAML, so every kubeconfig reader accepts it, and no YAML library is needed.
    return _write(path, json.dumps(config, indent=2).encode())


# --- processes --------------------------------------------------------------------------------


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _launch(cp: ControlPlane, name: str, argv: list[str], detach: bool) -> None:
    log = cp.workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cp.workdir,
            start_new_session=detach,
        )
    cp.processes[name] = proc
    cp.pids[name] = proc.pid


def _wait_ready(cp: ControlPlane, name: str, probe: Callable[[], bool], timeout: float) -> None:
    log = cp.workdir / f"{name}.log"
    deadline = time.monotonic() + timeout
    while True:
        rc = cp.processes[name].poll()
        if rc is not None:
            raise ControlPlaneError(f"{name} exited with code {rc}; last log lines:\n{_tail(log)}")
        if probe():
            return
        if time.monotonic() > deadline:
            raise ControlPlaneError(
                f"{name} not ready within {timeout:.0f}s; last log lines:\n{_tail(log)}"
            )
        time.sleep(0.25)


# Loopback only: never let a proxy from the environment intercept these requests.
_NO_PROXY = urllib.request.ProxyHandler({})


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    handlers: list[urllib.request.BaseHandler] = [_NO_PROXY]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=5) as resp:
            status: int = resp.status
            return status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_control_plane(
    workdir: Path, bin_dir: Path | None = None, *, detach: bool = False
) -> ControlPlane:
    """Start etcd, kube-apiserver and kube-controller-manager with state under ``workdir``.

    With ``detach`` the components get their own sessions and outlive this Python process;
    otherwise they are stopped at interpreter exit at the latest. On failure everything already
    started is stopped before the error propagates.
    """
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    bin_dir = (bin_dir or find_binaries()).resolve()
    etcd_bin = _binary(bin_dir, "etcd")
    apiserver_bin = _binary(bin_dir, "kube-apiserver")
    kcm_bin = _binary(bin_dir, "kube-controller-manager")

    # Always a fresh cluster: an old data dir would remember a different peer URL.
    etcd_dir = workdir / "etcd"
    shutil.rmtree(etcd_dir, ignore_errors=True)
    pki = _make_pki(workdir / "pki")

    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    cp = ControlPlane(
        workdir=workdir, kubeconfig=workdir / "kubeconfig", server=server, bin_dir=bin_dir
    )
    if not detach:
        # Backstop for callers that forget stop(); stop() unregisters it.
        atexit.register(cp.stop)

    tls = ssl.create_default_context(cafile=str(pki.ca_cert))
    tls.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))

    try:
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        _launch(
            cp,
            "etcd",
            [
                etcd_bin,
                f"--data-dir={etcd_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # Throwaway data: durability is not worth the fsync latency.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            detach,
        )
        _wait_ready(cp, "etcd", lambda: _http_ok(f"{etcd_url}/health"), READY_TIMEOUT)

        _launch(
            cp,
            "kube-apiserver",
            [
                apiserver_bin,
                f"--etcd-servers={etcd_url}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={workdir / 'pki'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_public}",
                f"--service-account-signing-key-file={pki.sa_private}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                # Saves CPU and memory; a single-user test cluster needs no fairness queues.
                "--enable-priority-and-fairness=false",
            ],
            detach,
        )
        _wait_ready(cp, "kube-apiserver", lambda: _http_ok(f"{server}/readyz", tls), READY_TIMEOUT)
        _write_kubeconfig(
            cp.kubeconfig, server, pki.ca_cert, pki.admin_cert, pki.admin_key, "admin"
        )

        kcm_kubeconfig = _write_kubeconfig(
            workdir / "kube-controller-manager.kubeconfig",
            server,
            pki.ca_cert,
            pki.kcm_cert,
            pki.kcm_key,
            "system:kube-controller-manager",
        )
        _launch(
            cp,
            "kube-controller-manager",
            [
                kcm_bin,
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                "--controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token",
                f"--service-account-private-key-file={pki.sa_private}",
                f"--root-ca-file={pki.ca_cert}",
                "--leader-elect=false",
                # No serving endpoint needed; readiness is judged by the controllers' effects.
                "--secure-port=0",
                # Each controller acts as its own kube-system ServiceAccount, bound by the
                # bootstrap RBAC policy; the shared system:kube-controller-manager identity
                # may only list/watch, so the garbage collector could not delete anything.
                "--use-service-account-credentials=true",
            ],
            detach,
        )
        # The serviceaccount controller creates this; its existence shows the controllers run.
        sa_url = f"{server}/api/v1/namespaces/default/serviceaccounts/default"
        _wait_ready(
            cp, "kube-controller-manager", lambda: _http_ok(sa_url, tls), CONTROLLERS_TIMEOUT
        )
    except BaseException:
        cp.stop()
        raise
    return cp


def install_crds(cp: ControlPlane, crd_dir: Path) -> None:
    """Apply the CRD manifests in ``crd_dir`` and wait until they are Established."""
    if not any(p.suffix in {".yaml", ".yml", ".json"} for p in crd_dir.iterdir()):
        # `kubectl apply` refuses an empty directory; nothing to install is not an error.
        return
    cp.kubectl("apply", "--server-side", "-f", str(crd_dir))
    cp.kubectl("wait", "--for", "condition=Established", "crd", "--all", "--timeout=60s")


# --- CLI --------------------------------------------------------------------------------------


def _load_state(state_dir: Path) -> dict[str, object] | None:
    try:
        data: dict[str, object] = json.loads((state_dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def _running_pids(state: dict[str, object]) -> dict[str, int]:
    """Pids from state.json still running the binary they were started as (guards pid reuse)."""
    alive: dict[str, int] = {}
    components = state.get("components")
    if not isinstance(components, dict):
        return alive
    for name, info in components.items():
        pid = int(info["pid"])
        if _argv0(pid) == info["exe"] and _alive(pid):
            alive[str(name)] = pid
    return alive


def _argv0(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _export_line(kubeconfig: Path | str) -> str:
    return f"export KUBECONFIG={kubeconfig}"


def _cmd_up(state_dir: Path, crd_dir: Path) -> int:
    state = _load_state(state_dir)
    if state is not None and _running_pids(state):
        print(
            f"a cluster from {state_dir} is already running; "
            "run `python tests/support/localcluster.py down` first",
            file=sys.stderr,
        )
        return 1
    if (state_dir / MARKER_FILE).exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / MARKER_FILE).touch()

    started = time.monotonic()
    try:
        cp = start_control_plane(state_dir, detach=True)
    except ControlPlaneError as exc:
        print(f"failed to start the control plane: {exc}", file=sys.stderr)
        return 1
    try:
        # Written before anything else can fail, so `down` can always find the processes.
        state = {
            "server": cp.server,
            "kubeconfig": str(cp.kubeconfig),
            "bin_dir": str(cp.bin_dir),
            "components": {name: {"pid": pid, "exe": _argv0(pid)} for name, pid in cp.pids.items()},
        }
        (state_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
        if crd_dir.is_dir():
            install_crds(cp, crd_dir)
    except subprocess.CalledProcessError as exc:
        cp.stop()
        print(f"failed to install CRDs from {crd_dir}: {exc}", file=sys.stderr)
        return 1
    except BaseException:
        cp.stop()
        raise
    print(f"control plane ready at {cp.server} in {time.monotonic() - started:.1f}s")
    print(_export_line(cp.kubeconfig))
    return 0


def _cmd_down(state_dir: Path) -> int:
    state = _load_state(state_dir)
    if state is not None:
        running = _running_pids(state)
        ControlPlane(
            workdir=state_dir,
            kubeconfig=state_dir / "kubeconfig",
            server=str(state.get("server", "")),
            bin_dir=Path(str(state.get("bin_dir", ""))),
            pids=running,
        ).stop()
    if (state_dir / MARKER_FILE).exists():
        shutil.rmtree(state_dir)
    return 0


def _cmd_env(state_dir: Path) -> int:
    state = _load_state(state_dir)
    if state is None or not _running_pids(state):
        print(f"no cluster running from {state_dir}", file=sys.stderr)
        return 1
    print(_export_line(str(state["kubeconfig"])))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python tests/support/localcluster.py up|down|env``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("up", "start a detached cluster and print the KUBECONFIG export line"),
        ("down", "stop the cluster and remove its state dir"),
        ("env", "print the KUBECONFIG export line of the running cluster"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
        if name == "up":
            p.add_argument(
                "--crd-dir",
                type=Path,
                default=REPO_ROOT / "crds",
                help="CRD manifests to install (default: %(default)s; skipped if no YAML)",
            )
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir).expanduser().resolve()
    if args.command == "up":
        return _cmd_up(state_dir, Path(args.crd_dir).expanduser().resolve())
    if args.command == "down":
        return _cmd_down(state_dir)
    return _cmd_env(state_dir)


if __name__ == "__main__":
    sys.exit(main())
