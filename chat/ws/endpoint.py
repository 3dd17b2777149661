"""`/ws/chat`: authenticate before accepting, then run the socket on the `chat` protocol."""

from __future__ import annotations

import anyio
from quart import Blueprint, current_app, websocket
from quart_cors import cors_exempt

from chat.credentials import authenticate
from chat.errors import APIError
from chat.services import services
from chat.ws.chat import chat_protocol
from chat.ws.router import Router
from chat.ws.socket import CLOSE_S, POLICY, ChatSocket

blueprint = Blueprint("ws", __name__)
PROTOCOL = "parley.ws.chat"


def _token() -> str:
    token = websocket.args.get("token", "")
    if not token:
        scheme, _, value = websocket.headers.get("Authorization", "").partition(" ")
        token = value if scheme.lower() == "bearer" else ""
    return token.strip()


@blueprint.websocket("/ws/chat")
# With CORS_ORIGINS set, quart-cors would refuse sockets from other origins and clients that
# send no Origin at all; the socket authenticates by its token (no cookies), so any origin may.
@cors_exempt
async def ws_chat() -> None:
    """The chat WebSocket (docs/websocket.md).

    The token is checked before the handshake is accepted: a bad one, or one more socket than
    `WS_MAX_SOCKETS_PER_USER`, is refused with close code 1008 (sent as HTTP 403, since no
    WebSocket exists yet to carry a close frame).
    """
    found = services()
    try:
        token = _token()
        user = await authenticate(found.db, found.tokens, found.users, token)
        _, expires_at = found.tokens.check(token)
    except APIError as refused:
        await websocket.close(POLICY, refused.code)
        return
    if not found.sockets.admit(user.id):
        await websocket.close(POLICY, "too many sockets")
        return
    router: Router = current_app.extensions.get(PROTOCOL) or current_app.extensions.setdefault(
        PROTOCOL, chat_protocol(found)
    )
    socket = ChatSocket(
        found.hub,
        user,
        expires_at,
        websocket._get_current_object(),  # type: ignore[attr-defined]
        found.settings.ws_queue_size,
    )
    found.sockets.add(socket)
    try:
        await websocket.accept()
        await socket.run(router)
        if socket.closing is not None:
            code, reason = socket.closing
            # Bounded: the close frame waits on a client that may not be reading at all.
            with anyio.move_on_after(CLOSE_S):
                await websocket.close(code, reason)
    finally:
        # Cleaned up here, not in `after_websocket`: that is not called on a disconnect
        # (quart #337). Released only now, so a socket still closing counts against the cap.
        found.sockets.discard(socket)
        found.sockets.release(user.id)
