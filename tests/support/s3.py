"""A real S3-protocol server on loopback for tests: moto's server, with credentials enforced, behind a
TCP proxy that can be stopped and restarted to simulate the server going away mid-request."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TcpProxy:
    """Forwards 127.0.0.1:port to the target; `stop()` closes the listener and resets every connection."""

    def __init__(self, target_port: int, port: int = 0):
        self.target, self.port = ("127.0.0.1", target_port), port
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.bytes_up = 0
        self.on_bytes = None  # callback(bytes_up), from the forwarding threads

    def start(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    @property
    def running(self) -> bool:
        return self._listener is not None

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, up: bool) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if up:
                    self.bytes_up += len(data)
                    if self.on_bytes:
                        self.on_bytes(self.bytes_up)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                try:
                    conn.close()
                except OSError:
                    pass


@dataclass
class S3Server:
    process: subprocess.Popen
    port: int
    proxy: TcpProxy
    access_key: str
    secret_key: str
    outputs: list[str] = field(default_factory=list)  # every text tests saw, checked for leaked secrets

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.proxy.port}"

    def env(self, **extra) -> dict[str, str]:
        return {
            "MINIO_ACCESS_KEY": self.access_key,
            "MINIO_SECRET_KEY": self.secret_key,
            "PNAS_STORAGE_ENDPOINT": self.endpoint,
            "PNAS_STORAGE_SECURE": "false",
            "PNAS_STORAGE_RETRIES": "4",
            "PNAS_STORAGE_BACKOFF": "0.25",
            **extra,
        }

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        from minio import Minio

        return Minio(
            f"127.0.0.1:{self.port}",
            access_key=access_key or self.access_key,
            secret_key=secret_key or self.secret_key,
            secure=False,
        )

    def upload_dir(self, folder: Path, bucket: str, prefix: str) -> None:
        client = self.client()
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                client.fput_object(bucket, f"{prefix}/{path.relative_to(folder).as_posix()}", str(path))

    def stop(self) -> None:
        self.proxy.stop()
        self.process.terminate()
        self.process.wait(10)


def start_server(buckets: tuple[str, ...] = ()) -> S3Server:
    """moto_server on a free port; an IAM user with full S3 rights; then credentials enforced."""
    import boto3

    port = free_port()
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    process = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{base}/moto-api/", timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("moto_server did not start")
            time.sleep(0.1)
    iam = boto3.client(
        "iam", endpoint_url=base, region_name="us-east-1", aws_access_key_id="boot", aws_secret_access_key="boot"
    )
    iam.create_user(UserName="pnas")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="pnas", PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="pnas")["AccessKey"]
    # from now on every request must be signed with a known key
    request = urllib.request.Request(
        f"{base}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request).read()
    server = S3Server(process, port, TcpProxy(port).start(), key["AccessKeyId"], key["SecretAccessKey"])
    for bucket in buckets:
        server.client().make_bucket(bucket)
    return server


def scrub_env() -> dict[str, str]:
    """The test process's environment without any S3 credential, so each test sets its own."""
    names = ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    return {k: v for k, v in os.environ.items() if k not in names}
