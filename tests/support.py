"""Real parts for the tests: a local multi-node Ray cluster started with `ray start`, and CLI runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ray

from devkit.seaweed import free_ports

BIN = Path(sys.executable).parent
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    return free_ports(1)[0]


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

    def join_node(self, params: list[str], name: str, timeout_s: float = 240) -> subprocess.Popen:
        """Start one more worker node (`ray start --address … --block`), like a pod the autoscaler adds,
        and wait until the cluster counts it. `ray start` gives up after waiting 30 s for its raylet to
        register, which a loaded 2-core machine can exceed: a node whose start failed is started again once."""
        count = len(self.alive_nodes()) + 1
        node = self._start_node([f"--address={self.address}", *params], f"{name}-0")
        try:
            self.wait_for_nodes(count, timeout_s)
            return node
        except RuntimeError:
            if node.poll() is None:
                raise
            self.nodes.remove(node)
        node = self._start_node([f"--address={self.address}", *params], f"{name}-1")
        self.wait_for_nodes(count, timeout_s)
        return node

    def alive_nodes(self) -> list[dict]:
        """Resources of the alive nodes (marked in the output: a loaded cluster's log lines come
        interleaved with it)."""
        script = ("import json, ray; ray.init(address='{}', logging_level='ERROR', log_to_driver=False); "
                  "print('NODES', json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']]))"
                  ).format(self.address)
        result = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True,
                                text=True, timeout=60)
        import json

        found = [line for line in result.stdout.splitlines() if line.startswith("NODES ")]
        return json.loads(found[-1].removeprefix("NODES ")) if result.returncode == 0 and found else []

    def wait_for_nodes(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.poll() is not None:
                    raise RuntimeError(f"a Ray node exited; see logs in {self.workdir}")
            if len(self.alive_nodes()) >= count:
                return
            time.sleep(1)
        raise RuntimeError(f"Ray cluster did not reach {count} nodes in {timeout_s:.0f} s")

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
        if ray.is_initialized():
            ray.shutdown()
        for node in reversed(self.nodes):
            try:
                os.killpg(node.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for node in reversed(self.nodes):
            try:
                node.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill_node(node)
        self.nodes.clear()


def run_cli(args: list[str], env: dict[str, str], timeout_s: float = 600) -> subprocess.CompletedProcess:
    """Run the installed `batchinfer` command as a user would."""
    return subprocess.run([str(BIN / "batchinfer"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s)
