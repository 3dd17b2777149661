// The user's conversations, newest first (as the API lists them), a page at a time as the
// list scrolls; kept current by the socket's notifications.

import * as render from "./render.js";

const LIST_PAGE = 20;
const $ = (id) => document.getElementById(id);

export class Conversations {
  // `open()` is the open conversation's id; `loaded()` is called after each page.
  constructor(api, ui, open, loaded) {
    this.api = api;
    this.ui = ui;
    this.open = open;
    this.loaded = loaded;
    this.offset = 0;
    this.total = null;
    this.loading = false;
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.more();
    }, { root: $("sidebar") });
  }

  start() {
    this.observer.observe($("conversations-end"));
  }

  stop() {
    this.observer.disconnect();
    $("conversations").replaceChildren();
  }

  async more() {
    if (this.loading || (this.total !== null && this.offset >= this.total)) return;
    this.loading = true;
    try {
      const page = await this.api.conversations(this.offset, LIST_PAGE);
      this.total = page.total;
      this.offset += page.items.length;
      for (const conversation of page.items) this.upsert(conversation, false);
      this.showEmpty();
      this.loaded();
    } catch (error) {
      this.ui.error(error.message);
      return; // the next scroll tries again
    } finally {
      this.loading = false;
    }
    // Still room on screen: the observer only fires on a change, so ask for the next page.
    const end = $("conversations-end").getBoundingClientRect();
    if (end.top < $("sidebar").getBoundingClientRect().bottom) this.more();
  }

  find(id) {
    return $("conversations").querySelector(`[data-conversation-id="${CSS.escape(id)}"]`);
  }

  // In `updated_at` order. A `live` one the list did not have moved to the top of the
  // server's list too, so the next page starts one further on.
  upsert(conversation, live) {
    let item = this.find(conversation.id);
    if (item) {
      render.fillConversation(item, conversation);
      item.remove();
    } else {
      item = render.conversationElement(conversation);
      if (live) this.offset += 1;
    }
    const list = $("conversations");
    const after = Array.from(list.children).find(
      (other) => other.dataset.updatedAt <= conversation.updated_at,
    );
    list.insertBefore(item, after ?? null);
    this.markOpen();
    this.showEmpty();
  }

  remove(id) {
    const item = this.find(id);
    if (item) {
      item.remove();
      this.offset = Math.max(0, this.offset - 1);
    }
    this.showEmpty();
  }

  markOpen() {
    for (const link of $("conversations").querySelectorAll("a")) {
      if (link.parentElement.dataset.conversationId === this.open()) {
        link.setAttribute("aria-current", "page");
      } else {
        link.removeAttribute("aria-current");
      }
    }
  }

  showEmpty() {
    $("conversations-empty").hidden = $("conversations").children.length > 0;
  }
}
