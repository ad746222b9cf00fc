"""Run a throwaway MinIO server (an S3-compatible object store) for tests.

The binary comes from hack/build-minio.sh (built once from Go modules and
cached). The server listens on a free port of 127.0.0.1 only, keeps its data
in a temporary directory and has generated root credentials::

    server = start_s3(tmp_path)
    server.create_bucket("orders")
    server.put_object("orders", "incoming/a.csv", b"id\\n1\\n")
    key = server.assume_role(policy)   # temporary keys limited by a policy
    ...
    server.stop()

Restricted keys come from MinIO's STS AssumeRole with an inline session
policy: the standard AWS API, so no admin client is needed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session
from botocore.config import Config

from localserver import free_port, stop_process, tail

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-minio.sh"
START_TIMEOUT = 60
REGION = "us-east-1"


class S3Error(RuntimeError):
    """The server could not be built or started."""


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass
class S3Server:
    port: int
    root: AccessKey
    datadir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    scheme: str = "http"
    # The certificate of a TLS server, which is its own CA.
    ca_file: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.datadir.parent / "minio.log"

    def client(self, service: str = "s3", key: AccessKey | None = None) -> Any:
        """A botocore client for this server, with root keys unless others are given."""
        key = key or self.root
        return botocore.session.get_session().create_client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=key.access_key_id,
            aws_secret_access_key=key.secret_access_key,
            aws_session_token=key.session_token,
            verify=str(self.ca_file) if self.ca_file else True,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=10,
                read_timeout=30,
            ),
        )

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def put_object(self, bucket: str, key: str, body: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=body)

    def assume_role(self, policy: dict[str, Any], duration_seconds: int = 3600) -> AccessKey:
        """Temporary keys allowed only what both root and the session policy allow."""
        answer = self.client("sts").assume_role(
            RoleArn="arn:minio:iam:::role/patchbay-test",  # MinIO ignores it for root
            RoleSessionName="patchbay-test",
            Policy=json.dumps(policy),
            DurationSeconds=duration_seconds,
        )
        credentials = answer["Credentials"]
        return AccessKey(
            credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"]
        )

    def stop(self) -> None:
        """Stop the server and remove its data; safe to call twice."""
        if self.process is not None:
            stop_process(self.process)
        shutil.rmtree(self.datadir, ignore_errors=True)


def minio_binary() -> Path:
    """The cached MinIO binary, built on first use."""
    result = subprocess.run(
        [str(BUILD_SCRIPT)], capture_output=True, text=True, check=False, cwd=REPO_ROOT
    )
    if result.returncode != 0:
        raise S3Error(f"building MinIO failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _live(server: S3Server) -> bool:
    try:
        # Liveness is served without TLS checks: the server's certificate is the test's own.
        context = ssl._create_unverified_context()
        url = f"{server.endpoint}/minio/health/live"
        with urllib.request.urlopen(url, timeout=2, context=context) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_s3(workdir: Path, *, tls: tuple[str, str] | None = None) -> S3Server:
    """Start MinIO on a free loopback port; returns once it serves requests.

    With tls (certificate PEM, key PEM) it serves HTTPS only.
    """
    binary = minio_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    server = S3Server(
        port=free_port(),
        root=AccessKey("root-" + secrets.token_hex(6), secrets.token_urlsafe(24)),
        datadir=Path(tempfile.mkdtemp(prefix="data-", dir=workdir)),
    )
    env = {
        **os.environ,
        "MINIO_ROOT_USER": server.root.access_key_id,
        "MINIO_ROOT_PASSWORD": server.root.secret_access_key,
        "MINIO_BROWSER": "off",  # no web console, so no second port
        "MINIO_UPDATE": "off",
        "HOME": str(workdir),  # its config directory (~/.minio) goes with the test
    }
    certs_dir = workdir / "certs"
    certs_dir.mkdir(exist_ok=True)
    if tls is not None:
        server.scheme = "https"
        server.ca_file = certs_dir / "public.crt"
        (certs_dir / "public.crt").write_text(tls[0])
        (certs_dir / "private.key").write_text(tls[1])
    log = server.log_path.open("wb")
    try:
        server.process = subprocess.Popen(
            [str(binary), "server", "--quiet", "--address", f"{server.host}:{server.port}",
             "--certs-dir", str(certs_dir), str(server.datadir)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not _live(server):
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise S3Error(f"MinIO did not start; log tail:\n{tail(server.log_path)}")
            time.sleep(0.2)
    except BaseException:
        server.stop()
        raise
    finally:
        log.close()
    return server


def bucket_policy(bucket: str, *, deny_prefix: str | None = None) -> dict[str, Any]:
    """A session policy: read and list the bucket, except under deny_prefix if given."""
    statements: list[dict[str, Any]] = [
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetObject", "s3:GetBucketLocation"],
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        }
    ]
    if deny_prefix is not None:
        statements += [
            {
                "Effect": "Deny",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/{deny_prefix}*"],
            },
            {
                "Effect": "Deny",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
                "Condition": {"StringLike": {"s3:prefix": [f"{deny_prefix}*"]}},
            },
        ]
    return {"Version": "2012-10-17", "Statement": statements}
