"""A private `redis-server` on a free loopback port (the one on 6379 is shared: never flush it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.server import free_port

STARTUP_DEADLINE_S = 10.0


class RedisServer:
    """One redis-server process that can be stopped and started again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)  # not listening yet
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        # Under CI the Redis tests must run, not skip.
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed, and CI=true needs the Redis tests")
        pytest.skip("redis-server is not installed")
    return found


# Settings for instances under test: a lost Redis is noticed, and found again, within a second.
QUICK_REDIS = {"redis_timeout_s": "0.5", "redis_ping_s": "0.5", "redis_reconnect_max_s": "0.3"}


@contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    redis_server_binary()
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
