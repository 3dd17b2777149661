// The REST API (docs/api.md): one function per route the page uses. The token goes in the
// Authorization header only, never in a URL.

const BASE = "/api/v1/chat/conversations";

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

// A readable line from the error body's `detail` (a string, or the field errors of a 422).
function describe(detail, status) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail.map((d) => `${(d.loc || []).slice(-1)[0] ?? "input"}: ${d.msg}`).join("; ");
  }
  return `the server answered ${status}`;
}

// A key for Idempotency-Key; getRandomValues works on plain http too (randomUUID does not).
export function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// `token()` gives the current token (or null); `expired()` is called when the API refuses it.
export function makeApi(token, expired) {
  async function call(method, path, { body, headers = {} } = {}) {
    const current = token();
    const sent = { ...headers };
    if (current) sent.Authorization = `Bearer ${current}`;
    if (body !== undefined) sent["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: sent,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, "network", "Parley cannot be reached; check your connection.");
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = new ApiError(
        response.status,
        data?.code ?? "error",
        describe(data?.detail, response.status),
      );
      if (response.status === 401 && current) expired();
      throw error;
    }
    return data;
  }

  const conversation = (id) => `${BASE}/${encodeURIComponent(id)}`;
  return {
    register: (body) => call("POST", "/auth/register", { body }),
    login: (email, password) => call("POST", "/auth/login", { body: { email, password } }),
    me: () => call("GET", "/auth/me"),
    conversations: (offset, limit) => call("GET", `${BASE}?offset=${offset}&limit=${limit}`),
    createConversation: () => call("POST", BASE, { body: {} }),
    messages: (id, offset, limit) =>
      call("GET", `${conversation(id)}/messages?offset=${offset}&limit=${limit}`),
    // 202 with the stored message; the reply follows on the socket's events.
    send: (id, text, key) =>
      call("POST", `${conversation(id)}/messages`, {
        body: { message: text },
        headers: { Prefer: "respond-async", "Idempotency-Key": key },
      }),
    rename: (id, title) => call("PATCH", `${conversation(id)}/title`, { body: { title } }),
    remove: (id) => call("DELETE", conversation(id)),
    cancel: (id) => call("POST", `${conversation(id)}/cancel`),
  };
}
