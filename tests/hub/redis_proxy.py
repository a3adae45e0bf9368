"""A TCP proxy between a server and the test Redis that can hold or cut what passes.

Races inside the server (a gift between two reads, a frame while a read is under
way, a lost pub/sub connection) become deterministic: the test holds the answer
to one read, or one request, does what must happen meanwhile, then releases it.
Real sockets and a real Redis on both sides; the server only sees a slow network.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable

Match = Callable[[bytes], bool]


class Gate:
    """Holds the first request that matches (or the answer to it) until released."""

    def __init__(self, match: Match, hold_reply: bool) -> None:
        self.match = match
        self.hold_reply = hold_reply
        self.triggered = False
        self.held = threading.Event()
        self.released = threading.Event()

    async def wait_held(self, timeout: float = 5.0) -> None:
        if not await asyncio.to_thread(self.held.wait, timeout):
            raise AssertionError("nothing matching reached the proxy")

    def release(self) -> None:
        self.released.set()


class Link:
    """One connection of the server, and its own connection to Redis."""

    def __init__(self, proxy: RedisProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self.requests: list[bytes] = []
        self.reply_gate: Gate | None = None
        for pump in (self._requests, self._replies):
            threading.Thread(target=pump, daemon=True).start()

    def said(self, match: Match) -> bool:
        return any(match(chunk) for chunk in self.requests)

    def cut(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _requests(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.client.recv(1 << 16):
                self.requests.append(data)
                gate = self.proxy._trigger(data)
                if gate is not None and gate.hold_reply:
                    self.reply_gate = gate
                elif gate is not None:
                    gate.held.set()
                    gate.released.wait()
                self.upstream.sendall(data)
        self.cut()

    def _replies(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.upstream.recv(1 << 16):
                gate = self.reply_gate
                if gate is not None:
                    gate.held.set()  # Redis has answered: the read is done, in Redis
                    gate.released.wait()
                    self.reply_gate = None
                self.client.sendall(data)
        self.cut()


class RedisProxy:
    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.links: list[Link] = []
        self.gates: list[Gate] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def hold_reply(self, match: Match) -> Gate:
        """The next request that matches goes to Redis; its answer waits for release."""
        return self._arm(Gate(match, hold_reply=True))

    def hold_request(self, match: Match) -> Gate:
        """The next request that matches, and what follows it on its connection,
        wait for release before they reach Redis."""
        return self._arm(Gate(match, hold_reply=False))

    def cut(self, match: Match) -> int:
        """Close every connection that sent a request that matches; how many."""
        with self.lock:
            doomed = [link for link in self.links if link.said(match)]
            self.links = [link for link in self.links if link not in doomed]
        for link in doomed:
            link.cut()
        return len(doomed)

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for gate in self.gates:
                gate.release()
            links, self.links = self.links, []
        for link in links:
            link.cut()

    def _arm(self, gate: Gate) -> Gate:
        with self.lock:
            self.gates.append(gate)
        return gate

    def _trigger(self, data: bytes) -> Gate | None:
        with self.lock:
            for gate in self.gates:
                if not gate.triggered and gate.match(data):
                    gate.triggered = True
                    return gate
        return None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.redis_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.links.append(Link(self, client, upstream))


def reads_history(stream_id: str) -> Match:
    """A request of the server's own history reader for the stream (not a script:
    gifts and sweeps name the history key too)."""
    key = b"{s:" + stream_id.encode() + b"}:history"
    return lambda data: key in data and b"EVAL" not in data.upper()


def subscribes(data: bytes) -> bool:
    return b"SUBSCRIBE" in data.upper() and b"UNSUBSCRIBE" not in data.upper()
