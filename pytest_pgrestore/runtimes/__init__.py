"""Runtimes serve a restored PGDATA: a local server process, or a container (its own issue)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Runtime", "Server"]


class Server(Protocol):
    host: str
    port: int
    socket_dir: str | None

    def poll(self) -> int | None:
        """The exit code when the server has exited, else None."""

    def stop(self, *, timeout: float = 30.0) -> None: ...


class Runtime(Protocol):
    name: str

    def start(self, *, run_dir, pgdata, config_file, port: int, log_file) -> Server: ...
