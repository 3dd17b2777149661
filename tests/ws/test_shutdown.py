"""SIGTERM with a socket open mid-reply: the reply is stored first, then the socket closes
with 1001 and the server exits 0."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.server import running_server
from tests.ws.conftest import BASE, QUESTION, is_event, open_socket, serving, sign_up, ws_env

pytestmark = pytest.mark.anyio


async def test_sigterm_mid_reply_stores_it_then_closes_with_1001(tmp_path: Path) -> None:
    env = ws_env(tmp_path, assistant_token_delay_ms="20")
    with serving(env, tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            user = await sign_up(http)
            cid = (await http.post(BASE, json={}, headers=user.headers)).json()["id"]
        async with open_socket(server, user.token) as socket:
            await socket.send("send_message", conversation_id=cid, content=QUESTION)
            await socket.until(lambda f: f["type"] == "chunk")
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await socket.receive()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        events = [f for f in socket.frames if is_event(f, cid)]
        assert "complete" in [e["type"] for e in events], [e["type"] for e in events]
        streamed = next(e for e in events if e["type"] == "complete")["message"]
        with anyio.fail_after(20):
            code = await anyio.to_thread.run_sync(server.process.wait)
        assert code == 0
    # After a restart, the reply is there, whole.
    with running_server(env, tmp_path / "server2.log") as again:
        async with httpx.AsyncClient(base_url=again.url, timeout=20) as http:
            stored = (await http.get(f"{BASE}/{cid}/messages", headers=user.headers)).json()
        assert again.stop() == 0
    assert stored["items"][-1] == streamed and streamed["status"] == "complete"
