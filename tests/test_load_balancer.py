"""The load balancer docker-compose.yml runs, with its own config file, in front of two instances.

Debian's nginx runs `deploy/nginx.conf.template` (the file compose mounts), its placeholders
filled in as compose's envsubst fills them, in front of two real Parley processes that share
PostgreSQL and a private redis-server. Clients talk to nginx only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect

from tests.accounts import BASE, new_conversation, sign_up
from tests.cluster import QUESTION, cluster_env, new_user_conversation
from tests.redis_server import RedisServer
from tests.server import ROOT, Server, free_port

pytestmark = pytest.mark.anyio
TEMPLATE = ROOT / "deploy" / "nginx.conf.template"
PLACEHOLDERS = ("APP1", "APP2", "LISTEN")
WAIT_S = 15
STARTUP_DEADLINE_S = 10


def render(template: str, values: dict[str, str]) -> str:
    """The template with its placeholders filled in, as `envsubst '$APP1 $APP2 $LISTEN'` does."""
    for name in PLACEHOLDERS:
        template = template.replace("${" + name + "}", values[name])
    return template


def nginx_binary() -> str:
    # Debian puts nginx in /usr/sbin, which is not on every user's PATH.
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        # Under CI the load balancer test must run: .ci/run installs nginx-light.
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is not installed, and CI=true needs the load balancer test")
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    return found


@dataclass
class Nginx:
    url: str
    log: Path
    upstreams: dict[str, str]  # "127.0.0.1:port" -> the instance's name

    def served(self, path: str) -> list[str]:
        """The instances that served `path`, in the order nginx finished the requests."""
        found = re.findall(rf'"GET {re.escape(path)} HTTP/1.1" \d+ .* upstream=(\S+)', self.text())
        return [self.upstreams[address] for address in found]

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_nginx(directory: Path, a: Server, b: Server) -> Iterator[Nginx]:
    """nginx in the foreground on a free port; its pid, logs and temporary files in `directory`."""
    binary = nginx_binary()
    port = free_port()
    addresses = {"APP1": a.url.removeprefix("http://"), "APP2": b.url.removeprefix("http://")}
    config = directory / "nginx.conf"
    config.write_text(render(TEMPLATE.read_text(), addresses | {"LISTEN": f"127.0.0.1:{port}"}))
    log = directory / "nginx.log"
    # -e: errors before the config is read go to stderr too, not to /var/log/nginx.
    prefix = f"{directory}/"
    command = [binary, "-e", "stderr", "-p", prefix, "-c", str(config), "-g", "daemon off;"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    nginx = Nginx(f"http://127.0.0.1:{port}", log, {v: k.lower() for k, v in addresses.items()})
    try:
        wait_listening(process, port, log)
        yield nginx
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "[emerg]" not in nginx.text() and "[alert]" not in nginx.text()


def wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    with httpx.Client(timeout=1) as client:
        for _ in range(STARTUP_DEADLINE_S * 20):
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited early:\n{log.read_text(errors='replace')}")
            try:
                # /healthz of an instance, through nginx: ready end to end.
                if client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)  # not listening yet
    raise RuntimeError(f"nginx not ready in {STARTUP_DEADLINE_S}s:\n{log.read_text()}")


@pytest.fixture(name="env", scope="module")
def fixture_env(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, postgres_url: str
) -> dict[str, str]:
    return cluster_env(
        tmp_path_factory.mktemp("cluster"),
        redis_server,
        database_url=postgres_url,
        assistant_token_delay_ms="20",
    )


@pytest.fixture(name="lb", scope="module")
def fixture_lb(
    tmp_path_factory: pytest.TempPathFactory, servers: tuple[Server, Server]
) -> Iterator[Nginx]:
    with running_nginx(tmp_path_factory.mktemp("nginx"), *servers) as nginx:
        yield nginx


async def wait_for_log(lb: Nginx, path: str, count: int) -> list[str]:
    """The instances that served `path`, once nginx has logged `count` of them."""
    with anyio.fail_after(WAIT_S):
        # nginx writes a request's line when it ends; there is no event to wait on from outside.
        while len(served := lb.served(path)) < count:  # noqa: ASYNC110
            await anyio.sleep(0.05)
    return served


async def test_requests_take_turns_between_the_two_instances(
    http: httpx.AsyncClient, lb: Nginx
) -> None:
    before = len(lb.served("/readyz"))
    for _ in range(4):
        assert (await http.get(lb.url + "/readyz")).status_code == 200
    served = (await wait_for_log(lb, "/readyz", before + 4))[before:]
    # Round-robin, no stickiness: one client's requests alternate between the instances.
    assert served in (["app1", "app2"] * 2, ["app2", "app1"] * 2)


async def test_route_7_streams_the_reply_token_by_token_through_nginx(
    http: httpx.AsyncClient, lb: Nginx
) -> None:
    me, cid = await new_user_conversation(http, lb)
    kinds: list[str] = []
    stored_at_first_chunk: list[dict[str, str]] = []
    with anyio.fail_after(WAIT_S):
        url = f"{lb.url}{BASE}/{cid}/stream"
        async with aconnect_sse(http, "GET", url, params={"message": QUESTION}, headers=me) as s:
            assert s.response.headers["content-type"].startswith("text/event-stream")
            async for sse in s.aiter_sse():
                kinds.append(json.loads(sse.data)["type"])
                if kinds[-1] == "chunk" and not stored_at_first_chunk:
                    # Unbuffered: the first token arrives while the reply is still being made.
                    page = await http.get(f"{lb.url}{BASE}/{cid}/messages", headers=me)
                    stored_at_first_chunk = page.json()["items"]
                if kinds[-1] == "complete":
                    break
    assert kinds[0] == "message" and kinds.count("chunk") > 5
    replies = [m for m in stored_at_first_chunk if m["role"] == "assistant"]
    assert all(m["status"] == "streaming" for m in replies), replies


async def test_a_websocket_through_nginx_pings_and_streams_a_reply(
    http: httpx.AsyncClient, lb: Nginx
) -> None:
    token, me = await sign_up(http, lb)
    cid = await new_conversation(http, lb, me)
    ws_url = lb.url.replace("http://", "ws://") + f"/ws/chat?token={token}"
    frames: list[dict[str, object]] = []
    with anyio.fail_after(WAIT_S):
        async with connect(ws_url, open_timeout=WAIT_S) as ws:
            await ws.send(json.dumps({"type": "ping", "request_id": "p1"}))
            assert json.loads(await ws.recv()) == {"type": "pong", "request_id": "p1"}
            send = {"type": "send_message", "conversation_id": cid, "content": QUESTION}
            await ws.send(json.dumps(send | {"request_id": 2}))
            while not frames or frames[-1]["type"] != "message_response":
                frames.append(json.loads(await ws.recv()))
    kinds = [frame["type"] for frame in frames]
    assert kinds.count("chunk") > 5 and kinds.index("chunk") < kinds.index("complete")
    reply = frames[-1]["data"]
    assert isinstance(reply, dict) and reply["status"] == "complete"


async def test_resume_through_nginx_on_the_other_instance(
    http: httpx.AsyncClient, lb: Nginx
) -> None:
    me, cid = await new_user_conversation(http, lb)
    produced = []
    with anyio.fail_after(WAIT_S):
        url = f"{lb.url}{BASE}/{cid}/stream"
        async with aconnect_sse(http, "GET", url, params={"message": QUESTION}, headers=me) as s:
            async for sse in s.aiter_sse():
                produced.append((sse.id, sse.data))
                if json.loads(sse.data)["type"] == "complete":
                    break
    # Two resumes one after the other: round-robin sends them to different instances, so
    # one of them is not the instance whose actor produced the events.
    resumed = []
    for _ in range(2):
        with anyio.fail_after(WAIT_S):
            headers = me | {"Last-Event-ID": produced[2][0]}
            url = f"{lb.url}{BASE}/{cid}/events"
            async with aconnect_sse(http, "GET", url, headers=headers) as s:
                events = []
                async for sse in s.aiter_sse():
                    events.append((sse.id, sse.data))
                    if json.loads(sse.data)["type"] == "complete":
                        break
        resumed.append(events)
    assert resumed == [produced[3:], produced[3:]]
    events_path = f"{BASE}/{cid}/events"
    assert sorted(await wait_for_log(lb, events_path, 2)) == ["app1", "app2"]
    [producer] = await wait_for_log(lb, f"{BASE}/{cid}/stream", 1)
    assert producer in ("app1", "app2")
