// Building the page's elements. Everything a user or the model wrote goes in as text
// (textContent, text nodes), never as HTML; links only with an http(s) address.

// Below this the local assistant itself offers a ticket (chat/assistant/local.py).
const LOW_CONFIDENCE = 0.35;
const STATUS_TEXT = {
  streaming: "Answering…",
  cancelled: "Stopped",
  failed: "Failed",
};

export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// An http(s) URL, or null: a model could name `javascript:` or `data:` links. Parley's own
// API addresses (a ticket's) are not links either: opened in a tab they carry no token.
export function safeUrl(raw) {
  try {
    const url = new URL(raw, location.href);
    if (url.origin === location.origin && url.pathname.startsWith("/api/")) return null;
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

function time(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// An empty message element; `fillMessage` gives it its content.
export function messageElement(id, role) {
  const item = element("li", `message ${role}`);
  item.dataset.messageId = id;
  item.dataset.role = role;
  const meta = element("div", "meta");
  meta.append(element("span", "author", role === "user" ? "You" : "Assistant"));
  meta.append(element("time", "at"));
  meta.append(element("span", "status"));
  item.append(meta, element("ul", "tools"), element("div", "text"));
  item.append(element("div", "sources"), element("p", "confidence"), element("div", "actions"));
  return item;
}

export function setStatus(item, status, detail) {
  item.dataset.status = status;
  const label = STATUS_TEXT[status] ?? "";
  item.querySelector(".status").textContent = detail ? `${label}: ${detail}` : label;
  const actions = item.querySelector(".actions");
  actions.replaceChildren();
  if (item.dataset.role === "assistant" && (status === "cancelled" || status === "failed")) {
    const retry = element("button", "quiet retry", "Retry");
    retry.type = "button";
    retry.dataset.action = "retry";
    actions.append(retry);
  }
}

// A stored message (MessageResponse) into its element, replacing what streamed in.
export function fillMessage(item, message) {
  item.querySelector(".text").textContent = message.content;
  const at = item.querySelector(".at");
  at.dateTime = message.created_at;
  at.textContent = time(message.created_at);
  const detail = message.status === "failed" ? message.error?.detail : undefined;
  setStatus(item, message.status, detail);
  fillSources(item, message.entity_links ?? [], message.entity_references ?? []);
  const confidence = item.querySelector(".confidence");
  const score = message.confidence_score;
  const low = message.role === "assistant" && typeof score === "number" && score < LOW_CONFIDENCE;
  confidence.textContent = low
    ? `Low confidence (${Math.round(score * 100)}%): this answer may not fit your question.`
    : "";
  confidence.hidden = !low;
}

function fillSources(item, links, references) {
  const sources = item.querySelector(".sources");
  sources.replaceChildren();
  const shown = [];
  for (const link of links) {
    const href = safeUrl(link.url);
    const title = link.title || link.url;
    if (href) {
      const a = element("a", "source", title);
      a.href = href;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      shown.push(a);
    } else {
      shown.push(element("span", "source", title));
    }
  }
  // A ticket the assistant opened (through the support tools) shows even without a link.
  for (const ref of references) {
    if (ref.type === "ticket" && !links.some((l) => l.title === ref.label)) {
      shown.push(element("span", "source ticket", `Ticket ${ref.label ?? ref.id}`));
    }
  }
  if (shown.length) sources.append(element("span", "label", "Sources: "), ...shown);
  sources.hidden = shown.length === 0;
}

export function appendText(item, text) {
  item.querySelector(".text").append(document.createTextNode(text));
}

// A tool the assistant used, as one small line (name only: the arguments may hold data).
export function addTool(item, name) {
  const line = element("li", "tool", `Used tool ${name}`);
  line.dataset.tool = name;
  item.querySelector(".tools").append(line);
}

export function toolResult(item, name, ok) {
  const lines = item.querySelectorAll(`.tool`);
  const line = Array.from(lines).reverse().find((l) => l.dataset.tool === name && !l.dataset.ok);
  if (!line) return;
  line.dataset.ok = ok ? "yes" : "no";
  if (!ok) line.textContent = `Used tool ${name} (it failed)`;
}

export function conversationElement(conversation) {
  const item = element("li", "conversation-item");
  item.dataset.conversationId = conversation.id;
  const link = element("a", "conversation-link");
  link.href = `/c/${encodeURIComponent(conversation.id)}`;
  link.append(element("span", "title"), element("span", "count"));
  item.append(link);
  fillConversation(item, conversation);
  return item;
}

export function fillConversation(item, conversation) {
  item.dataset.updatedAt = conversation.updated_at;
  item.querySelector(".title").textContent = conversation.title;
  const n = conversation.total_messages;
  item.querySelector(".count").textContent = `${n} message${n === 1 ? "" : "s"}`;
}
