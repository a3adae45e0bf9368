"""A local Redis Cluster for tests and development, from the same redis-server binary.

`LocalCluster(data_dir).start()` starts N masters with R replicas each on free
loopback ports (the cluster bus port of every node picked free as well, never
port + 10000), each node with its own directory under `data_dir`, AOF
`appendfsync always` like the embedded Redis, and joins them with
`redis-cli --cluster create`. Every wait is on the state the cluster reports,
with a deadline. The ports are written to `data_dir/cluster.json`: starting again
over the same `data_dir` brings the same cluster back from its nodes.conf files.

    python -m gifting_server.local_cluster --data-dir data/cluster
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from gifting_server.cluster_view import SLOTS, NodeInfo, parse_cluster_info, parse_cluster_nodes
from gifting_server.embedded_redis import find_redis_server

log = logging.getLogger("gifting_server.cluster")

HOST = "127.0.0.1"
LAYOUT_FILE = "cluster.json"


# New clusters picked their ports this many times before giving up: another process
# can take a port between its pick (`free_ports`) and the node's bind.
PORT_ATTEMPTS = 5


class ClusterError(RuntimeError):
    pass


class PortTaken(ClusterError):
    """A node's port (or its bus port) was taken by another process: the node could
    not bind it, or what answers on it is another server."""


def free_ports(count: int) -> list[int]:
    """`count` distinct ports the OS had free a moment ago."""
    ports: set[int] = set()
    while len(ports) < count:
        with socket.socket() as s:
            s.bind((HOST, 0))
            ports.add(int(s.getsockname()[1]))
    return sorted(ports)


def find_redis_cli() -> str:
    path = shutil.which("redis-cli") or str(Path(find_redis_server()).with_name("redis-cli"))
    if not Path(path).exists():
        raise ClusterError("redis-cli not found (Debian: apt-get install redis-tools)")
    return path


class LocalCluster:
    """Start with `start()` (or as a context manager), stop with `stop()`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 5000,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports: list[int] = []
        self.bus_ports: dict[int, int] = {}
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def size(self) -> int:
        return self.masters * (1 + self.replicas)

    @property
    def urls(self) -> list[str]:
        return [f"redis://{HOST}:{port}" for port in self.ports]

    def node_dir(self, port: int) -> Path:
        return self.data_dir / f"node-{self.ports.index(port) + 1}"

    # -- starting and stopping

    def start(self, timeout_s: float = 60.0) -> LocalCluster:
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info("cluster ready: %s", " ".join(self.urls))
        return self

    def _start(self, timeout_s: float) -> None:
        layout = self.data_dir / LAYOUT_FILE
        if layout.exists():
            self._load_layout(layout)
            log.info("starting the cluster in %s again on ports %s", self.data_dir, self.ports)
            for port in self.ports:
                self._launch(port)
        else:
            self._launch_new(layout)
            self._create()
            # Only a cluster that was created is started again from this data dir.
            self._save_layout(layout)
        self.wait_ready(timeout_s)

    def _launch_new(self, layout: Path) -> None:
        """Every node of a new cluster on ports picked free; picked again when another
        process took one first (the node dirs of the attempt removed: nothing of them
        joined a cluster yet)."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self._new_layout(layout)
            log.info(
                "starting %d Redis nodes for %d masters with %d replica(s) each on ports %s",
                self.size,
                self.masters,
                self.replicas,
                self.ports,
            )
            try:
                for port in self.ports:
                    self._launch(port)
                return
            except PortTaken as e:
                if attempt == PORT_ATTEMPTS:
                    raise
                log.info("%s; picking other ports", e)
                self.stop()
                for port in self.ports:
                    shutil.rmtree(self.node_dir(port), ignore_errors=True)

    def _new_layout(self, layout: Path) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        leftovers = sorted(self.data_dir.glob("node-*/nodes.conf"))
        if leftovers:
            raise ClusterError(
                f"{leftovers[0]} belongs to a cluster without {layout}: "
                f"remove {self.data_dir} or choose another data dir"
            )
        ports = free_ports(2 * self.size)
        self.ports = ports[: self.size]
        self.bus_ports = dict(zip(self.ports, ports[self.size :], strict=True))

    def _save_layout(self, layout: Path) -> None:
        layout.write_text(
            json.dumps(
                {
                    "masters": self.masters,
                    "replicas": self.replicas,
                    "nodes": [{"port": p, "bus_port": self.bus_ports[p]} for p in self.ports],
                },
                indent=2,
            )
        )

    def _load_layout(self, layout: Path) -> None:
        saved = json.loads(layout.read_text())
        self.masters, self.replicas = saved["masters"], saved["replicas"]
        self.ports = [node["port"] for node in saved["nodes"]]
        self.bus_ports = {node["port"]: node["bus_port"] for node in saved["nodes"]}

    def command(self, port: int) -> list[str]:
        node_dir = self.node_dir(port)
        return [
            find_redis_server(),
            "--port", str(port),
            "--cluster-port", str(self.bus_ports[port]),
            "--bind", HOST,
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--dir", str(node_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            # A replica syncs at once instead of after the default 5 s batching delay.
            "--repl-diskless-sync-delay", "0",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(node_dir / "redis.log"),
        ]  # fmt: skip

    def _launch(self, port: int) -> None:
        node_dir = self.node_dir(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        # Its own session: a Ctrl-C meant for the launcher must not kill the nodes
        # under it; `stop()` ends them.
        self.processes[port] = subprocess.Popen(
            self.command(port), stdin=subprocess.DEVNULL, start_new_session=True
        )
        self._wait(lambda: self._answers(port), 10.0, f"node {port} to answer")

    def _create(self) -> None:
        addresses = [f"{HOST}:{port}" for port in self.ports]
        log.info("joining the nodes with redis-cli --cluster create")
        command = [
            find_redis_cli(),
            "--cluster", "create", *addresses,
            "--cluster-replicas", str(self.replicas),
            "--cluster-yes",
        ]  # fmt: skip
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise ClusterError(f"redis-cli --cluster create failed:\n{result.stdout}")

    def stop(self) -> None:
        """Ends every node this launcher started; their directories stay."""
        running = {port: p for port, p in self.processes.items() if p.poll() is None}
        for process in running.values():
            process.terminate()
        for port, process in running.items():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.warning("node %d did not stop on SIGTERM within 15 s; killing it", port)
                process.kill()
                process.wait()
        self.processes.clear()
        if running:
            log.info("cluster stopped (%d node(s))", len(running))

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the cluster says

    def _client(self, port: int, timeout_s: float = 1.0) -> redis.Redis:
        # No CLIENT SETINFO: two round trips more on every one of these short-lived
        # connections, for a library name nobody reads here.
        return redis.Redis(
            host=HOST, port=port, socket_timeout=timeout_s, decode_responses=True, driver_info=None
        )

    def _ask(self, port: int, *command: str) -> str:
        client = self._client(port)
        try:
            return str(client.execute_command(*command))  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def _pid(self, port: int) -> int:
        client = self._client(port)
        try:
            return int(client.info("server")["process_id"])
        finally:
            client.close()

    def _answers(self, port: int) -> bool:
        """Whether the node launched on `port` answers; `PortTaken` when another
        process holds its port or its bus port."""
        process = self.processes.get(port)
        log_file = self.node_dir(port) / "redis.log"
        if process is None or process.poll() is not None:
            if "Address already in use" in _read(log_file):
                raise PortTaken(f"port {port} or its bus port was taken by another process")
            raise ClusterError(f"redis-server on port {port} exited; see {log_file}")
        try:
            self._ask(port, "PING")
            # another server on the port (another cluster's node) would answer too
            answering = self._pid(port)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False
        if answering != process.pid:
            raise PortTaken(f"another process (pid {answering}) answers on port {port}")
        return True

    def running(self) -> list[int]:
        return [port for port, p in self.processes.items() if p.poll() is None]

    def info(self, port: int) -> dict[str, str]:
        return parse_cluster_info(self._ask(port, "CLUSTER", "INFO"))

    def nodes(self, port: int | None = None) -> list[NodeInfo]:
        """Every node as seen by `port` (by default the first running node that answers)."""
        for asked in [port] if port is not None else self.running():
            try:
                return parse_cluster_nodes(self._ask(asked, "CLUSTER", "NODES"))
            except (redis.ConnectionError, redis.TimeoutError):
                if port is not None:
                    raise
        raise ClusterError("no node of the cluster answers")

    def node(self, port: int) -> NodeInfo:
        return next(n for n in self.nodes() if n.port == port)

    def master_for_slot(self, slot: int) -> NodeInfo:
        for node in self.nodes():
            if node.role == "master" and not node.failed and node.serves(slot):
                return node
        raise ClusterError(f"no master serves slot {slot}")

    def master_for_key(self, key: str | bytes) -> NodeInfo:
        return self.master_for_slot(key_slot(key.encode() if isinstance(key, str) else key))

    def replicas_of(self, master: NodeInfo) -> list[NodeInfo]:
        return [n for n in self.nodes() if n.master_id == master.node_id]

    # -- waiting on the state

    def _wait(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout_s} s waiting for {what}")
            time.sleep(0.05)

    def replica_synced(self, port: int) -> bool:
        client = self._client(port)
        try:
            replication = client.info("replication")
        finally:
            client.close()
        return _synced(replication)

    def _state(self, port: int) -> tuple[dict[str, str], dict[str, Any], list[NodeInfo]]:
        """CLUSTER INFO, INFO replication and CLUSTER NODES of one node, asked in one
        round trip on one connection: `is_ready` runs before every test of a cluster
        run, and a connection per question made it cost ~50 ms on six nodes."""
        client = self._client(port)
        try:
            pipe = client.pipeline(transaction=False)
            pipe.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
            pipe.info("replication")
            pipe.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
            info, replication, nodes = pipe.execute()
        finally:
            client.close()
        return parse_cluster_info(str(info)), dict(replication), parse_cluster_nodes(str(nodes))

    def is_ready(self) -> bool:
        """Every running node says cluster_state:ok with every slot served and knows every
        node; all of them see the same roles and slots, no running node failing and no
        running master without slots; every running replica has synced with its master
        (a replica that never synced refuses to take over when its master fails)."""
        running = set(self.running())
        views = []
        try:
            for port in running:
                info, replication, view = self._state(port)
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                    return False
                if info.get("cluster_known_nodes") != str(self.size):
                    return False
                if not _synced(replication):
                    return False
                views.append(view)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False
        shapes = set()
        for view in views:
            live = [n for n in view if n.port in running]
            if any(n.failed or (n.role == "master" and not n.slots) for n in live):
                return False  # failing, or a replica-to-be that has not heard of its master
            shapes.add(tuple((n.port, n.role, n.master_id, n.slots) for n in live))
        return len(shapes) == 1

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        self._wait(self.is_ready, timeout_s, "cluster_state:ok with all 16384 slots on every node")

    def wait_for_failover(self, old_master: NodeInfo, timeout_s: float = 30.0) -> NodeInfo:
        """Waits until a replica of `old_master` serves its slots on every running node's
        view and the cluster is ok again; returns the promoted node."""
        slot = old_master.slots[0][0]
        log.info("waiting for a replica of node %d to take over its slots", old_master.port)

        def promoted() -> bool:
            try:
                views = [self.nodes(port) for port in self.running()]
            except (redis.ConnectionError, redis.TimeoutError):
                return False
            owners = {
                n.port for view in views for n in view if n.role == "master" and n.serves(slot)
            }
            return owners != {old_master.port} and len(owners) == 1 and self.is_ready()

        self._wait(promoted, timeout_s, f"a replica of node {old_master.port} to be promoted")
        new_master = self.master_for_slot(slot)
        log.info("node %d now serves the slots of node %d", new_master.port, old_master.port)
        return new_master

    # -- faults

    def kill(self, node: NodeInfo) -> None:
        """SIGKILL: no shutdown, no final fsync; what survives is what the AOF held."""
        process = self.processes[node.port]
        process.send_signal(signal.SIGKILL)
        process.wait()
        log.info("killed node %d (%s) with SIGKILL", node.port, node.role)

    def restart(self, node: NodeInfo, timeout_s: float = 30.0) -> None:
        """Starts a stopped node again; it rejoins from its nodes.conf (a master that lost
        its slots while down comes back as a replica of the node that took them)."""
        process = self.processes.get(node.port)
        if process is not None and process.poll() is None:
            raise ClusterError(f"node {node.port} is still running")
        log.info("restarting node %d from its nodes.conf and AOF", node.port)
        self._launch(node.port)
        self.wait_ready(timeout_s)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _synced(replication: dict[str, Any]) -> bool:
    """From INFO replication: a master, or a replica whose link to its master is up."""
    return replication.get("role") == "master" or replication.get("master_link_status") == "up"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gifting_server.local_cluster",
        description="Run a local Redis Cluster until Ctrl-C.",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data/cluster"))
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--node-timeout-ms", type=int, default=5000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    with LocalCluster(
        args.data_dir,
        masters=args.masters,
        replicas=args.replicas,
        node_timeout_ms=args.node_timeout_ms,
    ) as cluster:
        nodes = cluster.nodes()
        ports = {n.node_id: n.port for n in nodes}
        for node in nodes:
            of = f" of :{ports[node.master_id]}" if node.master_id else ""
            print(f"{node.role}{of} {node.url}", flush=True)
        print(f"GIFTING_REDIS_URL={cluster.urls[0]}  (Ctrl-C stops the cluster)", flush=True)
        stopping.wait()
        log.info("stopping the cluster")


if __name__ == "__main__":
    main()
