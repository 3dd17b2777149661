// The page's one WebSocket (/ws/chat, docs/websocket.md): events of the conversations it
// follows and the user's notifications. It reconnects with backoff and resumes each followed
// conversation from the last event it saw (`subscribe` with `since`), so no text is lost or
// shown twice; where the server cannot resume (`reset`), the page reloads the messages.

const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 5000;
const EVENTS = new Set([
  "message", "chunk", "tool_call", "tool_result", "complete", "cancelled", "error",
  "conversation_updated", "conversation_deleted",
]);

export class Live {
  // handlers: state(name), event(frame), reset(id), subscribed(id, resumed),
  // notification(event, conversation), refused() (the handshake failed), expired(),
  // gone(id) (a followed conversation no longer exists).
  constructor(token, handlers) {
    this.token = token;
    this.on = handlers;
    this.socket = null;
    this.positions = new Map(); // conversation id -> {epoch, seq} of the last event seen
    this.followed = new Set();
    this.waiting = new Map(); // request_id -> {resolve, reject}
    this.nextRequest = 1;
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
    this.state = "connecting";
  }

  start() {
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000);
    this.failWaiting("closed");
  }

  get open() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    // The one URL the token may appear in: browsers cannot set headers on a WebSocket.
    const url = `${scheme}//${location.host}/ws/chat?token=${encodeURIComponent(this.token)}`;
    const socket = new WebSocket(url);
    let opened = false;
    this.socket = socket;
    socket.addEventListener("open", () => {
      opened = true;
      this.attempt = 0;
      this.setState("open");
      for (const id of this.followed) {
        this.subscribe(id).catch((error) => {
          if (error.code === "not_found") this.on.gone(id);
        });
      }
    });
    socket.addEventListener("message", (message) => {
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      this.receive(frame);
    });
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.failWaiting("disconnected");
      if (this.stopped) return;
      this.setState("reconnecting");
      // A refused handshake looks like any failed connection: the page asks the API whether
      // the token is still good (an expired one signs the user out).
      if (!opened) this.on.refused();
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
      this.attempt += 1;
      this.timer = setTimeout(() => this.connect(), delay * (0.5 + Math.random() / 2));
    });
  }

  setState(state) {
    this.state = state;
    this.on.state(state);
  }

  failWaiting(reason) {
    for (const { reject } of this.waiting.values()) reject(new Error(reason));
    this.waiting.clear();
  }

  request(frame) {
    if (!this.open) return Promise.reject(new Error("disconnected"));
    const id = String(this.nextRequest++);
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.socket.send(JSON.stringify({ ...frame, request_id: id }));
    });
  }

  // Follow a conversation's events; resolves once subscribed (or at once when disconnected:
  // the subscription is made on the next connection).
  follow(id) {
    this.followed.add(id);
    return this.open ? this.subscribe(id) : Promise.resolve(false);
  }

  unfollow(id) {
    this.followed.delete(id);
    this.positions.delete(id);
    if (this.open) this.request({ type: "unsubscribe", conversation_id: id }).catch(() => {});
  }

  async subscribe(id) {
    const position = this.positions.get(id);
    const frame = { type: "subscribe", conversation_id: id };
    if (position) frame.since = `${position.epoch}:${position.seq}`;
    try {
      await this.request(frame);
    } catch (error) {
      if (error.code === "not_found") this.followed.delete(id);
      throw error;
    }
    // Without a position the events before now are not replayed: the page reads the stored
    // messages instead, after subscribing, so nothing falls in between.
    this.on.subscribed(id, position !== undefined);
    return true;
  }

  receive(frame) {
    const waiter = frame.request_id !== undefined && this.waiting.get(String(frame.request_id));
    if (waiter && (frame.type === "response" || frame.type === "error")) {
      this.waiting.delete(String(frame.request_id));
      if (frame.type === "response") waiter.resolve(frame.data);
      else waiter.reject(Object.assign(new Error(String(frame.error)), { code: frame.code }));
      return;
    }
    if (frame.type === "error" && frame.code === "token_expired") {
      this.on.expired();
      return;
    }
    if (frame.type === "reset") {
      this.positions.delete(frame.conversation_id);
      if (this.followed.has(frame.conversation_id)) this.on.reset(frame.conversation_id);
      return;
    }
    if (frame.type === "notification") {
      this.on.notification(frame.data.event, frame.data.conversation);
      return;
    }
    if (!EVENTS.has(frame.type) || frame.seq === undefined) return;
    const id = frame.conversation_id;
    if (!this.followed.has(id)) return;
    const last = this.positions.get(id);
    // Never apply an event twice (a replay overlapping what arrived live).
    if (last && last.epoch === frame.epoch && frame.seq <= last.seq) return;
    this.positions.set(id, { epoch: frame.epoch, seq: frame.seq });
    this.on.event(frame);
  }
}
