"""Server-Sent Events: relaying a hub subscription as `id:`/`data:` frames with keep-alives."""

from __future__ import annotations

from collections.abc import AsyncIterator

from quart import Response

from actors.events import FINAL_TYPES, reset_frame
from actors.events import KEEP_ALIVE as KEEP_ALIVE_MARK
from actors.hub import Subscription

HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    # nginx would otherwise buffer the stream.
    "X-Accel-Buffering": "no",
}
OPENED = b": connected\n\n"
KEEP_ALIVE = b": keep-alive\n\n"
# Most frames written at once when a stream has fallen behind.
BATCH = 64


def data_frame(data: bytes) -> bytes:
    return b"data: %s\n\n" % data


async def relay(
    subscription: Subscription, *, until_reply: str | None = None
) -> AsyncIterator[bytes]:
    """The subscription's events as SSE frames, until it ends (or the awaited reply does).

    Every stream also ends when its conversation is deleted: nothing else will ever follow
    (not even the awaited reply's own terminal event, which says only that it was cut off).

    Events that are already waiting go out in one write (still one frame each, in order):
    a server that falls behind then catches up in fewer, larger writes. The caller closes
    the subscription; a client that goes away cancels this generator at its next await, and
    the reply it was watching goes on regardless.
    """
    # Sent at once, so the client sees the response headers without waiting for an event.
    yield OPENED
    if subscription.reset_first is not None:
        yield data_frame(reset_frame(subscription.topic, subscription.reset_first))
    while (first := await subscription.receive()) is not None:
        frames = []
        for event in [first, *subscription.queued(BATCH)]:
            if event is KEEP_ALIVE_MARK:
                frames.append(KEEP_ALIVE)
                continue
            frames.append(event.sse)
            if event.type == "conversation_deleted" or (
                event.type in FINAL_TYPES and event.message_id == until_reply
            ):
                yield b"".join(frames)
                return
        yield b"".join(frames)
    if subscription.cut_off in ("too_slow", "gap"):
        # It missed events (fell behind, or they were lost between instances): resume or reload.
        yield data_frame(reset_frame(subscription.topic, subscription.cut_off))


def sse_response(frames: AsyncIterator[bytes]) -> Response:
    response = Response(frames, status=200, headers=HEADERS)
    # Quart's RESPONSE_TIMEOUT would cut a long stream off.
    response.timeout = None
    return response
