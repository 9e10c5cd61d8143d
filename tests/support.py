"""Real parts for the tests: a local multi-node Ray cluster started with `ray start`, moto's S3 server,
an HTTP proxy in front of an S3 server that changes what passes, CLI runs, the photos the tests classify,
and polling for a condition."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import ray

from batchinfer.config import S3Options
from devkit.seaweed import free_ports

BIN = Path(sys.executable).parent
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
# The session S3 server's secret key (tests/conftest.py): distinctive, so that the reliability tests can
# search every log line and output object for it.
SECRET = "bi-Known-Secret-3f9a1c7e5d2b8046"
T = TypeVar("T")


def photo_dir() -> Path:
    """The real photos the tests classify and crop: those shipped with scikit-image (coffee.png,
    chelsea.png, rocket.jpg, …)."""
    import skimage

    return Path(skimage.__file__).parent / "data"


class GaveUp(RuntimeError):
    """A wait ended without its condition: it timed out, or went on being pointless (`give_up`)."""


def wait_until(condition: Callable[[], T], timeout_s: float, what: str,
               give_up: Callable[[], str | None] | None = None, interval_s: float = 1.0) -> T:
    """Poll `condition` every `interval_s` until it returns something truthy, and return that. Raise GaveUp
    once `give_up` returns a reason (e.g. the process being waited on has exited) or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = condition()
        if found:
            return found
        reason = give_up() if give_up is not None else None
        if reason:
            raise GaveUp(f"gave up waiting for {what}: {reason}")
        if time.monotonic() >= deadline:
            raise GaveUp(f"no {what} within {timeout_s:.0f} s")
        time.sleep(interval_s)


@contextmanager
def moto_server() -> Iterator[S3Options]:
    """moto's S3 server in this process (any key and secret are accepted; region us-east-1)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Options(endpoint=f"http://{host}:{port}", region="us-east-1", access_key="moto", secret_key="moto")
    finally:
        server.stop()


class S3Forwarder(BaseHTTPRequestHandler):
    """Forwards each request to `upstream` with its headers as sent (so signatures hold), less `dropped`;
    `refusal` may answer a request itself instead. Subclasses change what passes; `seen` records every
    request's (method, path, lower-cased headers)."""

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int]
    seen: list[tuple[str, str, dict[str, str]]]
    dropped: frozenset[str] = frozenset()

    def refusal(self, headers: dict[str, str]) -> tuple[int, bytes] | None:
        """(status, XML body) to answer instead of the upstream, or None to forward."""
        return None

    def forward(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.seen.append((self.command, self.path, headers))
        refused = self.refusal(headers)
        if refused is not None:
            status, body = refused
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        body = self.rfile.read(int(headers.get("content-length") or 0))
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() not in self.dropped:
                connection.putheader(name, value)
        connection.endheaders(body)
        answer = connection.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("date", "server", "connection", "transfer-encoding", "content-length"):
                self.send_header(name, value)
        # a HEAD answer's length is the object's, which pyarrow reads as its size
        self.send_header("Content-Length", answer.getheader("Content-Length", "0") if self.command == "HEAD"
                         else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = forward

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def forwarding(upstream: S3Options, handler: type[S3Forwarder],
               seen: list[tuple[str, str, dict[str, str]]] | None = None) -> Iterator[S3Options]:
    """`upstream`'s options with the endpoint moved to a local proxy that serves `handler`."""
    host, port = upstream.endpoint.removeprefix("http://").split(":")
    bound = type(handler.__name__, (handler,), {"upstream": (host, int(port)), "seen": [] if seen is None else seen})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), bound)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        yield S3Options(endpoint=f"http://127.0.0.1:{proxy.server_port}", region=upstream.region,
                        access_key=upstream.access_key, secret_key=upstream.secret_key)
    finally:
        proxy.shutdown()
        proxy.server_close()


@contextmanager
def jobs_on(cluster: "LocalRayCluster") -> Iterator["LocalRayCluster"]:
    """RAY_ADDRESS (and Ray's test settings, RAY_ENV) point every job at `cluster` in the block; the
    environment is as it was after it."""
    previous = {key: os.environ.get(key) for key in ("RAY_ADDRESS", *RAY_ENV)}
    os.environ.update(RAY_ENV, RAY_ADDRESS=cluster.address)
    try:
        yield cluster
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def free_port() -> int:
    return free_ports(1)[0]


STOP_GRACE_S = 5.0  # LocalRayCluster.stop: how long the nodes get to end on SIGTERM, all together


class LocalRayCluster:
    """A head and worker nodes on this machine, each a `ray start --block` in its own process group
    (so stopping it never touches other Ray clusters on the machine)."""

    def __init__(self, workdir: Path, head_params: list[str], worker_params: list[list[str]],
                 env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.head_params = head_params
        self.worker_params = worker_params
        self.port, self.dashboard_port = free_port(), free_port()
        self.env = {**os.environ, **RAY_ENV, "RAY_TMPDIR": str(workdir), **(env or {})}
        self.env.pop("RAY_ADDRESS", None)
        self.nodes: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start_node(self, params: list[str], name: str) -> subprocess.Popen:
        """Start one node. Each gets its own agent and metrics ports: Ray's fixed defaults (52365…)
        would collide between the nodes and clusters that share this machine, and a node whose
        dashboard agent cannot bind leaves the cluster without a job agent ("No available agent")."""
        log = (self.workdir / f"{name}.log").open("wb")
        agent, agent_grpc, runtime_env, metrics = free_ports(4)
        own_ports = [f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                     f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}"]
        node = subprocess.Popen([str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1",
                                 "--disable-usage-stats", *own_ports, *params],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes.append(node)
        return node

    def start(self, timeout_s: float = 120) -> "LocalRayCluster":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_node(["--head", f"--port={self.port}", "--include-dashboard=true",
                          "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                          f"--temp-dir={self.workdir}", *self.head_params], "head")
        self.wait_for_nodes(1, timeout_s)
        for index, params in enumerate(self.worker_params):  # one at a time, each retried once (join_node)
            self.join_node(params, f"worker-{index}", timeout_s)
        return self

    def replace_node(self, lost: subprocess.Popen, params: list[str], name: str,
                     timeout_s: float = 240) -> subprocess.Popen:
        """Start a new worker node in place of a lost (killed) one, as KubeRay does for a lost pod."""
        self.nodes.remove(lost)
        return self.join_node(params, name, timeout_s)

    def join_node(self, params: list[str], name: str, timeout_s: float = 240) -> subprocess.Popen:
        """Start one more worker node (`ray start --address … --block`), like a pod that KubeRay or the
        autoscaler adds (or one that replaces a lost pod), and wait until the cluster counts it alive: it
        is known by its own node name, so a lost node the cluster has not yet marked dead is never taken
        for it. `ray start` gives up after waiting 30 s for its raylet to register, which a loaded 2-core
        machine can exceed: a node whose start failed is started again once."""
        for attempt in range(2):
            node_name = f"{name}-{attempt}"
            node = self._start_node([f"--address={self.address}", f"--node-name={node_name}", *params], node_name)
            try:
                wait_until(lambda: node_name in self.alive_node_names(), timeout_s,
                           f"Ray node {node_name} to join (logs in {self.workdir})", give_up=self._node_exited)
                return node
            except RuntimeError:
                if node.poll() is None or attempt == 1:
                    raise
                self.nodes.remove(node)
        raise AssertionError("unreachable")

    def _alive(self) -> list[dict]:
        """The alive nodes as ray.nodes() describes them (marked in the output: a loaded cluster's log
        lines come interleaved with it)."""
        script = ("import json, ray; ray.init(address='{}', logging_level='ERROR', log_to_driver=False); "
                  "print('NODES', json.dumps([{{'NodeName': n['NodeName'], 'Resources': n['Resources']}} "
                  "for n in ray.nodes() if n['Alive']]))").format(self.address)
        result = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True,
                                text=True, timeout=60)
        found = [line for line in result.stdout.splitlines() if line.startswith("NODES ")]
        return json.loads(found[-1].removeprefix("NODES ")) if result.returncode == 0 and found else []

    def alive_nodes(self) -> list[dict]:
        """Resources of the alive nodes."""
        return [node["Resources"] for node in self._alive()]

    def alive_node_names(self) -> list[str]:
        return [node["NodeName"] for node in self._alive()]

    def _node_exited(self) -> str | None:
        """Why waiting for the cluster is pointless: one of its nodes exited."""
        exited = [node for node in self.nodes if node.poll() is not None]
        return f"a Ray node exited; see logs in {self.workdir}" if exited else None

    def wait_for_nodes(self, count: int, timeout_s: float) -> None:
        wait_until(lambda: len(self.alive_nodes()) >= count, timeout_s, f"the Ray cluster to reach {count} nodes",
                   give_up=self._node_exited)

    def process_ids(self, title_prefix: str, node: subprocess.Popen | None = None) -> list[int]:
        """Pids of this cluster's processes (or of one `node`'s) whose title (Ray sets `ray::<actor or
        task>`) starts with `title_prefix`: found by session (each node is started in its own), so other
        Ray clusters on the machine are never matched."""
        alive = [node] if node is not None else [each for each in self.nodes if each.poll() is None]
        sessions = {each.pid for each in alive}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if title.startswith(title_prefix) and os.getsid(int(entry.name)) in sessions:
                    found.append(int(entry.name))
            except (OSError, ProcessLookupError):
                continue  # the process ended while we looked
        return found

    def kill_node(self, node: subprocess.Popen) -> None:
        """Kill one node's whole process group (raylet, its workers) at once, like a lost pod."""
        try:
            os.killpg(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.wait()

    def stop(self) -> None:
        """SIGTERM every node, then SIGKILL the groups of those still up after STOP_GRACE_S in all: a
        `ray start --block` worker node takes about 30 s to end on SIGTERM, and a test cluster keeps
        nothing worth that wait (the fault tests kill nodes outright)."""
        if ray.is_initialized():
            ray.shutdown()
        for node in reversed(self.nodes):
            try:
                os.killpg(node.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + STOP_GRACE_S
        for node in reversed(self.nodes):
            try:
                node.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill_node(node)
        self.nodes.clear()


def start_cluster(workdir: Path, head_params: list[str], worker_params: list[list[str]],
                  env: dict[str, str] | None = None, timeout_s: float = 240) -> LocalRayCluster:
    """A started LocalRayCluster of a test's own (workdir `<workdir>-<attempt>`). A head whose `ray start`
    gave up on a busy machine is not retried in place (its ports may still be taken): the whole cluster
    is started once more."""
    for attempt in range(2):
        cluster = LocalRayCluster(Path(f"{workdir}-{attempt}"), head_params, worker_params, env)
        try:
            return cluster.start(timeout_s)
        except (RuntimeError, subprocess.TimeoutExpired):
            cluster.stop()
            if attempt == 1:
                raise
    raise AssertionError("unreachable")


def run_cli(args: list[str], env: dict[str, str], timeout_s: float = 600) -> subprocess.CompletedProcess:
    """Run the installed `batchinfer` command as a user would."""
    return subprocess.run([str(BIN / "batchinfer"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s)
