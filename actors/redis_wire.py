"""How events, their numbering and their history are laid out in Redis (docs/design.md).

Per conversation: a hash `parley:c:<id>` holding its `epoch` (`e`) and last `seq` (`s`), a
Stream `parley:c:<id>:events` of its recent events (entry id `<seq>-0`, so a position is a
range start), and a channel `parley:c:<id>`; per user a channel `parley:u:<id>`. A message on
a channel and an entry in a stream are the same bytes: one header line, then the event's SSE
frame exactly as it was encoded once (`Event.sse`, which holds `Event.data`).
"""

from __future__ import annotations

import time
import uuid

import anyio

from actors.events import Event

PREFIX = "parley:"

# Number, append and publish a batch of one conversation's events, all or nothing, and only if
# the numbering is what the publisher expected (compare-and-set): an instance that numbered
# from a stale view is told the real one and tries again, so ids never repeat or skip.
# KEYS: meta hash, stream. ARGV: expected epoch, first seq, epoch for a new history, maxlen,
# ttl ms, conversation channel, user channel, then the payloads.
# A missing hash is a lost history: a new epoch, and an empty stream.
PUBLISH_SCRIPT = """
local epoch = redis.call('HGET', KEYS[1], 'e')
local seq = 0
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
else
  seq = tonumber(redis.call('HGET', KEYS[1], 's'))
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if epoch ~= ARGV[1] or seq + 1 ~= tonumber(ARGV[2]) then
  return {0, epoch, seq}
end
for i = 8, #ARGV do
  seq = seq + 1
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], seq .. '-0', 'e', ARGV[i])
  redis.call('PUBLISH', ARGV[6], ARGV[i])
  redis.call('PUBLISH', ARGV[7], ARGV[i])
end
redis.call('HSET', KEYS[1], 's', seq)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {1, epoch, seq}
"""


def meta_key(conversation_id: uuid.UUID) -> str:
    return f"{PREFIX}c:{conversation_id}"


def stream_key(conversation_id: uuid.UUID) -> str:
    return f"{PREFIX}c:{conversation_id}:events"


def conversation_channel(conversation_id: uuid.UUID) -> bytes:
    return f"{PREFIX}c:{conversation_id}".encode()


def user_channel(user_id: uuid.UUID) -> bytes:
    return f"{PREFIX}u:{user_id}".encode()


def instance_channel(instance: str) -> bytes:
    """Each instance's own channel: keeps its connection in subscribed mode at all times."""
    return f"{PREFIX}i:{instance}".encode()


def encode(event: Event, origin: str) -> bytes:
    """The bytes an event crosses Redis as: a header line, then its SSE frame unchanged."""
    at_ms = int(time.time() * 1000)
    return b"%s %s %s %s %s %d\n%s" % (
        origin.encode(),
        str(event.conversation_id).encode(),
        str(event.user_id).encode(),
        event.type.encode(),
        (event.message_id or "-").encode(),
        at_ms,
        event.sse,
    )


def decode(payload: bytes) -> tuple[str, int, Event]:
    """The origin instance, the wall-clock time (ms) and the event, without parsing its JSON."""
    head, _, sse = payload.partition(b"\n")
    origin, conversation, user, type, message_id, at_ms = head.decode().split(" ")
    id_end = sse.index(b"\n")
    epoch, _, seq = sse[4:id_end].decode().rpartition(":")
    data = sse[id_end + 7 : -2]  # between "\ndata: " and the blank line
    event = Event(
        uuid.UUID(conversation),
        uuid.UUID(user),
        type,
        epoch,
        int(seq),
        data,
        anyio.current_time(),
        None if message_id == "-" else message_id,
        sse,
    )
    return origin, int(at_ms), event
