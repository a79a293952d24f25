"""Redis Cluster and Sentinel deployments of real redis-server processes, in a temporary
folder, on free ports: started for a test, stopped after it."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.crc import key_slot

#: Where the free port ranges are looked for (a cluster node's bus port is +10000).
PORT_RANGE = (30000, 39000)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, bus: bool = False) -> list[int]:
    """``count`` consecutive free ports (and their cluster bus ports, with ``bus``)."""
    for base in range(PORT_RANGE[0], PORT_RANGE[1], count):
        ports = list(range(base, base + count))
        if all(_free(p) and (not bus or _free(p + 10000)) for p in ports):
            return ports
    raise RuntimeError(f"no {count} free ports in {PORT_RANGE}")


def wait_until(what: str, predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(what)


class Server:
    """One redis-server process."""

    def __init__(self, port: int, folder: Path, *extra: str) -> None:
        self.port = port
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
             "--save", "", "--appendonly", "no", "--protected-mode", "no", *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def ping(self) -> bool:
        r = self.client()
        try:
            return bool(r.ping())
        finally:
            r.close()

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class Cluster:
    """Three primaries and three replicas (``redis-cli --cluster create --cluster-replicas
    1``), a node timeout of 2 s: a killed primary's replica takes over in a few seconds."""

    def __init__(self, folder: Path) -> None:
        ports = free_ports(6, bus=True)
        self.servers = [
            Server(p, folder / str(p), "--cluster-enabled", "yes", "--cluster-config-file",
                   "nodes.conf", "--cluster-node-timeout", "2000")
            for p in ports
        ]  # fmt: skip
        try:
            for s in self.servers:
                wait_until(f"redis-server on {s.port}", s.ping, 20)
            created = subprocess.run(
                ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                 "--cluster-replicas", "1", "--cluster-yes"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert created.returncode == 0, created.stdout + created.stderr
            wait_until("the cluster to be ok and its replicas in sync", self._settled, 60)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def _info(self, server: Server, section: str) -> dict[str, str]:
        r = server.client()
        try:
            text = r.execute_command("CLUSTER", "INFO") if section == "cluster" else None
            if text is None:
                raw = r.info(section)
                return {k: str(v) for k, v in raw.items()}
            body = text.decode() if isinstance(text, bytes) else str(text)
            return dict(line.split(":", 1) for line in body.strip().splitlines() if ":" in line)
        finally:
            r.close()

    def _settled(self) -> bool:
        alive = [s for s in self.servers if s.proc.poll() is None]
        if any(self._info(s, "cluster").get("cluster_state") != "ok" for s in alive):
            return False
        roles = [self._info(s, "replication") for s in alive]
        return all(r.get("master_link_status") == "up" for r in roles if r.get("role") == "slave")

    def primary_of(self, key: str) -> Server:
        """The server that holds ``key``'s slot now."""
        slot = key_slot(key.encode())
        r = next(s for s in self.servers if s.proc.poll() is None).client()
        try:
            for start, end, primary, *_ in r.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(s for s in self.servers if s.port == port)
        finally:
            r.close()
        raise LookupError(slot)

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


class SentinelSetup:
    """A primary, a replica and one Sentinel watching them as ``main`` (quorum 1: it
    fails over alone, once the primary has not answered for ``down_after_ms``)."""

    def __init__(self, folder: Path, *, down_after_ms: int = 5000) -> None:
        primary, replica, sentinel = free_ports(3)
        self.primary = Server(primary, folder / "primary")
        self.replica = Server(replica, folder / "replica", "--replicaof", "127.0.0.1", str(primary))
        conf = folder / "sentinel.conf"
        conf.write_text(
            f"port {sentinel}\nbind 127.0.0.1\nprotected-mode no\ndir {folder}\n"
            f"sentinel monitor main 127.0.0.1 {primary} 1\n"
            f"sentinel down-after-milliseconds main {down_after_ms}\n"
            "sentinel failover-timeout main 10000\n"
        )
        self.sentinel = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.sentinel_port = sentinel
        try:
            for s in (self.primary, self.replica):
                wait_until(f"redis-server on {s.port}", s.ping, 20)
            wait_until("the replica to be in sync", self._in_sync, 30)
            wait_until("the sentinel to see the replica", self._watching, 30)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/main/0"

    def primary_port(self) -> int:
        """The port of the server Sentinel calls the primary now."""
        r = redis.Redis(host="127.0.0.1", port=self.sentinel_port, socket_timeout=5)
        try:
            _, port = r.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "main")
            return int(port)
        finally:
            r.close()

    def _in_sync(self) -> bool:
        r = self.replica.client()
        try:
            return r.info("replication").get("master_link_status") == "up"
        finally:
            r.close()

    def _watching(self) -> bool:
        r = redis.Redis(host="127.0.0.1", port=self.sentinel_port, socket_timeout=5)
        try:
            return bool(r.execute_command("SENTINEL", "REPLICAS", "main"))
        finally:
            r.close()

    def stop(self) -> None:
        if self.sentinel.poll() is None:
            self.sentinel.terminate()
            self.sentinel.wait(timeout=10)
        self.primary.stop()
        self.replica.stop()
