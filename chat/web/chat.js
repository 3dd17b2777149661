// The signed-in page: the open conversation (and the list, list.js). Reads and writes go
// through the REST API; what happens live (replies token by token, other tabs' changes)
// arrives as the socket's events.

import { randomKey } from "./api.js";
import { Conversations } from "./list.js";
import * as render from "./render.js";

const PAGE = 50; // messages per page
const NEAR_BOTTOM_PX = 80;
const $ = (id) => document.getElementById(id);

export class Chat {
  constructor(api, ui) {
    this.api = api;
    this.ui = ui; // {error(text), running(bool), title(text), home()}
    this.live = null;
    this.open = null;
    this.oldest = 0; // offset of the oldest message shown
    this.olderLoading = false;
    this.touched = null; // ids shown by the socket while the messages are read
    this.list = new Conversations(api, ui, () => this.open, () => this.showTitle());
  }

  handlers() {
    return {
      state: (state) => this.ui.connection(state),
      event: (frame) => this.event(frame),
      reset: (id) => id === this.open && this.loadLatest(),
      subscribed: (id, resumed) => id === this.open && !resumed && this.loadLatest(),
      notification: (event, conversation) => this.notification(event, conversation),
      refused: () => this.api.me().catch(() => {}), // a 401 signs the user out
      expired: () => this.ui.expired(),
      gone: (id) => id === this.open && this.closeMissing(),
    };
  }

  start(path) {
    this.list.start();
    this.route(path);
  }

  stop() {
    this.list.stop();
    $("message-list").replaceChildren();
    this.open = null;
  }

  notification(event, conversation) {
    if (event === "conversation_deleted") {
      this.list.remove(conversation.id);
      if (conversation.id === this.open) this.closeMissing("This conversation was deleted.");
    } else {
      this.list.upsert(conversation, true);
      if (conversation.id === this.open) this.showTitle();
    }
  }

  showTitle() {
    const item = this.open && this.list.find(this.open);
    const title = item ? item.querySelector(".title").textContent : "Conversation";
    this.ui.title(this.open ? title : null);
  }

  // -- the open conversation -------------------------------------------------------------

  route(path) {
    const match = /^\/c\/([0-9a-fA-F-]{36})$/.exec(path);
    if (match) this.openConversation(match[1].toLowerCase());
    else this.showHome();
  }

  showHome() {
    if (this.open) this.live?.unfollow(this.open);
    this.open = null;
    this.ui.running(false);
    $("message-list").replaceChildren();
    $("messages-start").hidden = true;
    $("messages-empty").hidden = false;
    this.markOpen();
    this.ui.title(null);
  }

  markOpen() {
    this.list.markOpen();
  }

  openConversation(id) {
    if (this.open === id) return;
    if (this.open) this.live?.unfollow(this.open);
    this.open = id;
    this.oldest = 0;
    this.ui.running(false);
    $("message-list").replaceChildren();
    $("messages-empty").hidden = true;
    this.markOpen();
    this.showTitle();
    // Subscribed first, then the stored messages are read (handlers().subscribed), so no
    // event falls between the two. Without a socket the messages are read at once.
    this.subscribed = this.live.follow(id).catch((error) => {
      if (error.code === "not_found") this.closeMissing();
    });
    if (!this.live.open) this.loadLatest();
  }

  closeMissing(message = "That conversation does not exist or is not yours.") {
    this.ui.home();
    this.ui.error(message);
  }

  async loadLatest() {
    const id = this.open;
    // Messages the socket shows while this reads are newer than what it reads: they stay.
    const touched = new Set();
    this.touched = touched;
    try {
      const head = await this.api.messages(id, 0, 1);
      const offset = Math.max(0, head.total - PAGE);
      const page = await this.api.messages(id, offset, PAGE);
      if (id !== this.open || this.touched !== touched) return; // opened elsewhere, or reread
      this.touched = null;
      this.oldest = offset;
      this.showMessages(page.items, touched);
    } catch (error) {
      if (this.touched === touched) this.touched = null;
      if (id !== this.open) return;
      if (error.status === 404) this.closeMissing();
      else this.ui.error(error.message);
    }
  }

  // The stored messages replace what is shown, but for what the socket showed meanwhile
  // (`touched`) and a reply still streaming (not stored yet).
  showMessages(items, touched) {
    const list = $("message-list");
    const stored = new Set(items.map((m) => m.id));
    const newer = Array.from(list.children).filter((item) => {
      const id = item.dataset.messageId;
      return !stored.has(id) && (touched.has(id) || item.dataset.status === "streaming");
    });
    const elements = items.map((message) => {
      const item = this.messageItem(message.id, message.role);
      render.fillMessage(item, message);
      return item;
    });
    list.replaceChildren(...elements, ...newer);
    $("messages-start").hidden = this.oldest > 0;
    $("messages-empty").hidden = list.children.length > 0;
    if (newer.some((item) => item.dataset.status === "streaming")) this.ui.running(true);
    this.scrollToEnd(true);
    this.fillScreen();
  }

  async loadOlder() {
    if (!this.open || this.olderLoading || this.oldest === 0) return;
    const id = this.open;
    this.olderLoading = true;
    try {
      const offset = Math.max(0, this.oldest - PAGE);
      const page = await this.api.messages(id, offset, this.oldest - offset);
      if (id !== this.open) return;
      const box = $("messages");
      const before = box.scrollHeight;
      const list = $("message-list");
      const older = page.items.filter((m) => !this.findMessage(m.id)).map((message) => {
        const item = render.messageElement(message.id, message.role);
        render.fillMessage(item, message);
        return item;
      });
      list.prepend(...older);
      this.oldest = offset;
      $("messages-start").hidden = offset > 0;
      box.scrollTop += box.scrollHeight - before; // keep the reader's place
    } catch (error) {
      this.ui.error(error.message);
      return; // the next scroll tries again
    } finally {
      this.olderLoading = false;
    }
    this.fillScreen();
  }

  // With too few messages to scroll, scrolling up could never ask for the older ones.
  fillScreen() {
    const box = $("messages");
    if (this.oldest > 0 && box.scrollHeight <= box.clientHeight) this.loadOlder();
  }

  findMessage(id) {
    return $("message-list").querySelector(`[data-message-id="${CSS.escape(id)}"]`);
  }

  messageItem(id, role) {
    return this.findMessage(id) ?? render.messageElement(id, role);
  }

  // The element of a message, added at the end when it is new.
  placed(id, role) {
    let item = this.findMessage(id);
    if (!item) {
      item = render.messageElement(id, role);
      $("message-list").append(item);
      $("messages-empty").hidden = true;
    }
    return item;
  }

  showMessage(message) {
    const follow = this.nearBottom();
    this.touched?.add(message.id);
    render.fillMessage(this.placed(message.id, message.role), message);
    this.scrollToEnd(follow);
  }

  event(frame) {
    if (frame.conversation_id !== this.open) return;
    this.touched?.add(frame.message?.id ?? frame.message_id);
    const follow = this.nearBottom();
    switch (frame.type) {
      case "message":
        this.showMessage(frame.message);
        break;
      case "chunk": {
        const item = this.streamingItem(frame.message_id);
        render.appendText(item, frame.content);
        break;
      }
      case "tool_call":
        render.addTool(this.streamingItem(frame.message_id), frame.name);
        break;
      case "tool_result":
        render.toolResult(this.streamingItem(frame.message_id), frame.name, frame.ok);
        break;
      case "complete":
      case "cancelled":
      case "error":
        this.finish(frame);
        break;
      case "conversation_updated":
        this.list.upsert(frame.conversation, true);
        this.showTitle();
        break;
      case "conversation_deleted":
        this.list.remove(frame.conversation_id);
        this.closeMissing("This conversation was deleted.");
        return;
    }
    this.scrollToEnd(follow);
  }

  streamingItem(messageId) {
    const item = this.placed(messageId, "assistant");
    if (!item.dataset.status) render.setStatus(item, "streaming");
    this.ui.running(true);
    return item;
  }

  finish(frame) {
    this.ui.running(false);
    if (frame.message) {
      this.showMessage(frame.message);
      return;
    }
    const item = frame.message_id && this.findMessage(frame.message_id);
    const status = { complete: "complete", cancelled: "cancelled", error: "failed" }[frame.type];
    if (item) render.setStatus(item, status, status === "failed" ? frame.error : undefined);
  }

  nearBottom() {
    const box = $("messages");
    return box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToEnd(follow) {
    if (follow) $("messages").scrollTop = $("messages").scrollHeight;
  }

  // -- what the user does ----------------------------------------------------------------

  async send(text) {
    let id = this.open;
    if (!id) {
      const conversation = await this.api.createConversation();
      this.list.upsert(conversation, true);
      history.pushState(null, "", `/c/${conversation.id}`);
      this.openConversation(conversation.id);
      id = conversation.id;
    }
    // Subscribed before sending, so the reply's first tokens are not missed.
    await this.subscribed;
    // Running from now: the reply's end (its terminal event) may come before the answer.
    this.ui.running(true);
    try {
      const message = await this.api.send(id, text, randomKey());
      if (id === this.open) this.showMessage(message);
    } catch (error) {
      this.ui.running(false);
      throw error;
    }
  }

  async cancel() {
    if (!this.open) return;
    const answer = await this.api.cancel(this.open);
    if (!answer.cancelled) this.ui.running(false);
  }

  // Ask again the question a stopped or failed reply answered.
  async retry(item) {
    let previous = item.previousElementSibling;
    while (previous && previous.dataset.role !== "user") previous = previous.previousElementSibling;
    if (previous) await this.send(previous.querySelector(".text").textContent);
  }

  async rename(title) {
    const conversation = await this.api.rename(this.open, title);
    this.list.upsert(conversation, false);
    this.showTitle();
  }

  async remove() {
    const id = this.open;
    await this.api.remove(id);
    this.list.remove(id);
    this.ui.home();
  }
}
