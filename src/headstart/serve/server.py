"""Running the app under uvicorn so that idle or slow clients cannot use up the server.

* Connections are capped (``max_connections``, at most the file-descriptor limit less a reserve);
  when a new client arrives at the cap, an idle connection (no request in progress) is closed to
  make room: the oldest of those that never completed a request (silent, or still dribbling their
  headers) first, then the oldest keep-alive connection between requests.
  Busy connections beyond the cap get 503 (uvicorn's ``limit_concurrency``).
* A connection must send complete request headers within ``header_timeout_s`` of connecting or
  of its previous response, else it is closed (uvicorn itself never times out a silent client).
* SIGTERM (and Ctrl+C) shut down gracefully within ``graceful_s``: requests in progress get that
  long, then are cancelled, and the process returns normally (exit code 0 from the CLI).
"""

from __future__ import annotations

import errno
import resource
import signal
import socket
from collections import OrderedDict
from typing import Any

FD_RESERVE = 128  # descriptors kept for model files, logs, the thread pool and the listening socket
OVERFLOW = 64  # busy connections beyond the cap that still get a 503 rather than a closed socket


def raise_fd_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 16 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(requested: int, fd_limit: int) -> int:
    """The connections this process can hold open: ``requested``, or fewer where descriptors are short."""
    return max(1, min(requested, fd_limit - FD_RESERVE - OVERFLOW))


def guarded_protocol(max_connections: int, header_timeout_s: float) -> type:
    """uvicorn's h11 protocol with a connection cap that evicts idle connections, and a header timeout."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    # Idle connections of this server, oldest first: those that never completed a request, and
    # keep-alive connections between requests (evicted only when there are none of the first kind).
    fresh: OrderedDict[Any, None] = OrderedDict()
    kept: OrderedDict[Any, None] = OrderedDict()

    class GuardedH11Protocol(H11Protocol):  # type: ignore[misc]
        _idle_timer: Any = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._mark_idle(fresh)
            if len(self.connections) > max_connections:
                victim = next((c for c in fresh if c is not self), None) or next(iter(kept), None)
                if victim is not None:
                    victim._close_idle()
                elif len(self.connections) > max_connections + OVERFLOW:
                    self._close_idle()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:  # a request is in progress
                self._unmark_idle()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._mark_idle(kept)

        def connection_lost(self, exc: Exception | None) -> None:
            self._unmark_idle()
            super().connection_lost(exc)

        def _mark_idle(self, idle: OrderedDict[Any, None]) -> None:
            self._unmark_idle()
            idle[self] = None
            cycle = self.cycle
            self._idle_timer = self.loop.call_later(header_timeout_s, self._header_timeout, cycle)

        def _unmark_idle(self) -> None:
            fresh.pop(self, None)
            kept.pop(self, None)
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None

        def _header_timeout(self, cycle: Any) -> None:
            if self.cycle is cycle:  # no new request since the timer was set
                self._close_idle()

        def _close_idle(self) -> None:
            self._unmark_idle()
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


def check_port(host: str, port: int) -> None:
    """Fail before anything is created when the address cannot be listened on: uvicorn would say so
    only after the app has started, with an errno and exit status 3."""
    from ..errors import ConfigError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ConfigError(f"Cannot listen on host '{host}': {err.strerror}.",
                          fix="give an address of this machine, e.g. --host 127.0.0.1 or --host 0.0.0.0.") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ConfigError(f"Port {port} on {host} is already in use (another server, or an earlier one "
                                  "still running).", fix=f"choose another with --port (e.g. --port "
                                  f"{port + 1 if port < 65535 else 8080}), or stop the other server.") from None
            if err.errno == errno.EACCES:
                raise ConfigError(f"Not allowed to listen on port {port} (ports below 1024 need root).",
                                  fix="choose a port from 1024 up with --port, e.g. --port 8080.") from None
            raise ConfigError(f"Cannot listen on {host}:{port}: {err.strerror}.",
                              fix="check --host and --port.") from None


def run(app: Any, host: str = "127.0.0.1", port: int = 8000, *, max_connections: int = 1000,
        header_timeout_s: float = 10.0, keep_alive_s: int = 5, graceful_s: int = 5,
        on_started: Any = None) -> None:
    """Serve ``app`` until SIGTERM or Ctrl+C; return normally after a graceful shutdown on SIGTERM."""
    import uvicorn

    cap = connection_cap(max_connections, raise_fd_limit())
    config = uvicorn.Config(app, host=host, port=port, http=guarded_protocol(cap, header_timeout_s),
                            limit_concurrency=cap + 1, timeout_keep_alive=keep_alive_s,
                            timeout_graceful_shutdown=graceful_s, h11_max_incomplete_event_size=16 * 1024,
                            access_log=False, log_level="warning", lifespan="on")

    class Server(uvicorn.Server):  # type: ignore[misc]
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_started is not None:
                on_started(cap)

    server = Server(config)
    # uvicorn re-raises the signal it caught once it has shut down; with the default SIGTERM action
    # that would kill the process (exit 143) after a clean shutdown. A no-op handler lets run() return.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run()
    except SystemExit:
        if server.started:
            raise
        # the port was free at check_port but taken before uvicorn bound it: say so, not errno 98
        from ..errors import ConfigError

        raise ConfigError(f"Could not listen on {host}:{port}: the port was taken as the server started.",
                          fix="choose another with --port, or stop the other server.") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
