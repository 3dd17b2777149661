"""How events, their numbering and their history are laid out in Redis (docs/design.md).

Per conversation: a hash `parley:c:<id>` holding its `epoch` (`e`) and last `seq` (`s`), a
Stream `parley:c:<id>:events` of its recent events (entry id `<seq>-0`, so a position is a
range start), and a channel `parley:c:<id>`; per user a channel `parley:u:<id>`. A message on
a channel and an entry in a stream are the same bytes: one header line, then the event's SSE
frame exactly as it was encoded once (`Event.sse`, which holds `Event.data`).
"""

from __future__ import annotations

import functools
import time
import uuid

import anyio

from actors.events import Event

PREFIX = "parley:"

# Number, append and publish the batches of several conversations in one call (one round trip,
# one script run, four arguments whatever the number of events: redis-py packs each argument in
# Python, about 5 µs apiece, which at one event per conversation cost more than the rest of
# publishing). For each conversation, all or nothing, and only if its numbering is what the
# publisher expected (compare-and-set): an instance that numbered from a stale view is told the
# real one and tries again, so ids never repeat or skip. A missing hash is a lost history: a
# new epoch, and an empty stream.
# ARGV: maxlen, ttl ms, one header line per conversation ("<conversation> <user> <expected
# epoch> <first seq> <epoch for a new history> <count> <mask>", the mask saying with 1/0 which
# events also go to the user's channel), then every event's bytes, each ended by a NUL (they
# never hold one: JSON escapes it). Keys are named from the ids (one Redis server, not a
# Redis Cluster). Returns per conversation: ok (1/0), the epoch, the last seq.
PUBLISH_SCRIPT = (
    """
local out = {}
local blob, pos = ARGV[4], 1
for line in string.gmatch(ARGV[3], '[^\\n]+') do
  local cid, uid, expected, first, fresh, n, mask =
    string.match(line, '(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)')
  first, n = tonumber(first), tonumber(n)
  local meta = 'PREFIXc:' .. cid
  local stream = meta .. ':events'
  local user = 'PREFIXu:' .. uid
  local payloads = {}
  for j = 1, n do
    local stop = string.find(blob, '\\0', pos, true)
    payloads[j] = string.sub(blob, pos, stop - 1)
    pos = stop + 1
  end
  local known = redis.call('HMGET', meta, 'e', 's')
  local epoch, seq = known[1], 0
  if not epoch then
    epoch = fresh
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'e', epoch, 's', 0)
  else
    seq = tonumber(known[2])
  end
  redis.call('PEXPIRE', meta, ARGV[2])
  local ok = 0
  if epoch == expected and seq + 1 == first then
    ok = 1
    for j = 1, n do
      seq = seq + 1
      redis.call('XADD', stream, 'MAXLEN', '~', ARGV[1], seq .. '-0', 'e', payloads[j])
      redis.call('PUBLISH', meta, payloads[j])
      if string.byte(mask, j) == 49 then
        redis.call('PUBLISH', user, payloads[j])
      end
    end
    redis.call('HSET', meta, 's', seq)
    redis.call('PEXPIRE', stream, ARGV[2])
  end
  out[#out + 1] = ok
  out[#out + 1] = epoch
  out[#out + 1] = seq
end
return out
"""
).replace("PREFIX", PREFIX)


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


def encode(event: Event, origin: str, ids: bytes | None = None, at_ms: int | None = None) -> bytes:
    """The bytes an event crosses Redis as: a header line, then its SSE frame unchanged.
    `ids` is `b"<conversation> <user>"` and `at_ms` the wall clock (ms) when the caller has
    them already."""
    if at_ms is None:
        at_ms = int(time.time() * 1000)
    if ids is None:
        ids = b"%s %s" % (str(event.conversation_id).encode(), str(event.user_id).encode())
    return b"%s %s %s %s %d\n%s" % (
        origin.encode(),
        ids,
        event.type.encode(),
        (event.message_id or "-").encode(),
        at_ms,
        event.sse,
    )


def origin_prefix(origin: str) -> bytes:
    """What every event `origin` sent starts with."""
    return origin.encode() + b" "


_CONVERSATION_CHANNEL = f"{PREFIX}c:".encode()


def is_conversation_channel(channel: bytes) -> bool:
    return channel.startswith(_CONVERSATION_CHANNEL)


@functools.lru_cache(maxsize=65_536)
def _uuid(text: str) -> uuid.UUID:
    # Every event names its conversation and user: the same few ids again and again, and
    # parsing one costs more than the rest of decoding.
    return uuid.UUID(text)


def decode(payload: bytes) -> tuple[int, Event]:
    """The wall-clock time (ms) it was sent and the event, without parsing its JSON (the origin
    is not needed: an instance drops its own events by `origin_prefix` before decoding)."""
    head, _, sse = payload.partition(b"\n")
    _, conversation, user, type, message_id, at_ms = head.decode().split(" ")
    id_end = sse.index(b"\n")
    epoch, _, seq = sse[4:id_end].decode().rpartition(":")
    data = sse[id_end + 7 : -2]  # between "\ndata: " and the blank line
    event = Event(
        _uuid(conversation),
        _uuid(user),
        type,
        epoch,
        int(seq),
        data,
        anyio.current_time(),
        None if message_id == "-" else message_id,
        sse,
    )
    return int(at_ms), event
