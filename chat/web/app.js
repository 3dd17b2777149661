// Parley's chat page: signing in and out, and the controls around the conversation.
// The access token lives in sessionStorage (this tab's session only, never localStorage)
// and travels in the Authorization header, and in the WebSocket's query string only.

import { makeApi } from "./api.js";
import { Chat } from "./chat.js";
import { Live } from "./live.js";

const TOKEN_KEY = "parley.token";
const EXPIRED = "Your session has expired. Please sign in again.";
const CONNECTION_TEXT = { connecting: "Connecting…", reconnecting: "Reconnecting…" };
const $ = (id) => document.getElementById(id);

const api = makeApi(() => sessionStorage.getItem(TOKEN_KEY), () => signOut(EXPIRED));
let chat = null;
let live = null;
let running = false;

const ui = {
  connection(state) {
    const box = $("connection");
    box.dataset.state = state;
    box.textContent = CONNECTION_TEXT[state] ?? "";
  },
  error(text) {
    $("chat-error").textContent = text;
    $("chat-error").hidden = !text;
  },
  running(on) {
    running = on;
    $("stop").hidden = !on;
  },
  title(text) {
    $("conversation-title").textContent = text ?? "How can we help?";
    $("rename").hidden = text === null;
    $("delete").hidden = text === null;
  },
  home() {
    history.pushState(null, "", "/");
    chat?.route("/");
  },
  expired() {
    signOut(EXPIRED);
  },
};

// -- signing in and out -------------------------------------------------------------------

function showAuth(message) {
  $("chat-view").hidden = true;
  $("sign-out").hidden = true;
  $("menu").hidden = true;
  $("who").textContent = "";
  $("auth-view").hidden = false;
  $("auth-message").textContent = message ?? "";
  $("auth-message").hidden = !message;
  $("sign-in-email").focus();
}

function authError(text) {
  $("auth-message").textContent = text;
  $("auth-message").hidden = false;
}

async function start() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return showAuth();
  let me;
  try {
    me = await api.me();
  } catch (error) {
    if (error.status !== 401) showAuth(error.message); // a 401 has signed out already
    return;
  }
  $("auth-view").hidden = true;
  $("chat-view").hidden = false;
  $("sign-out").hidden = false;
  $("menu").hidden = false;
  $("who").textContent = me.display_name || me.email;
  ui.error("");
  chat = new Chat(api, ui);
  live = new Live(token, chat.handlers());
  chat.live = live;
  ui.connection("connecting");
  live.start();
  chat.start(location.pathname);
  $("message-input").focus();
}

function signOut(message) {
  live?.stop();
  chat?.stop();
  live = null;
  chat = null;
  ui.running(false);
  ui.connection("closed");
  sessionStorage.removeItem(TOKEN_KEY);
  history.replaceState(null, "", "/");
  showAuth(message);
}

async function signIn(email, password) {
  const token = await api.login(email, password);
  sessionStorage.setItem(TOKEN_KEY, token.access_token);
  $("sign-in-form").reset();
  $("register-form").reset();
  await start();
}

function showForm(register) {
  $("register-form").hidden = !register;
  $("sign-in-form").hidden = register;
  $("auth-title").textContent = register ? "Create an account" : "Sign in";
  $(register ? "register-email" : "sign-in-email").focus();
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    await signIn(form.get("email"), form.get("password"));
  } catch (error) {
    authError(error.status === 401 ? "Wrong email or password." : error.message);
  }
});

$("register-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { email: form.get("email"), password: form.get("password") };
  if (form.get("display_name").trim()) body.display_name = form.get("display_name").trim();
  try {
    await api.register(body);
    await signIn(body.email, body.password);
  } catch (error) {
    authError(error.status === 409 ? "That email already has an account." : error.message);
  }
});

$("show-register").addEventListener("click", () => showForm(true));
$("show-sign-in").addEventListener("click", () => showForm(false));
$("sign-out").addEventListener("click", () => signOut("You have signed out."));

// -- the conversation ---------------------------------------------------------------------

async function attempt(action) {
  ui.error("");
  try {
    await action();
  } catch (error) {
    ui.error(error.message);
  }
}

async function sendComposed() {
  const input = $("message-input");
  const text = input.value;
  if (!text.trim() || !chat || $("send").disabled) return;
  $("send").disabled = true;
  await attempt(async () => {
    await chat.send(text);
    input.value = ""; // kept when sending failed, to try again
  });
  $("send").disabled = false;
  input.focus();
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  sendComposed();
});

$("message-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendComposed();
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && running && chat && !document.querySelector("dialog[open]")) {
    event.preventDefault();
    attempt(() => chat.cancel());
  }
});

$("stop").addEventListener("click", () => attempt(() => chat.cancel()));
$("new-conversation").addEventListener("click", () => {
  ui.home();
  closeMenu();
  $("message-input").focus();
});

$("message-list").addEventListener("click", (event) => {
  const button = event.target.closest("[data-action=retry]");
  if (button && chat) attempt(() => chat.retry(button.closest(".message")));
});

$("messages").addEventListener("scroll", () => {
  if ($("messages").scrollTop < 40) chat?.loadOlder();
});

$("conversations").addEventListener("click", (event) => {
  const link = event.target.closest("a.conversation-link");
  if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  history.pushState(null, "", link.getAttribute("href"));
  ui.error("");
  chat?.route(location.pathname);
  closeMenu();
  $("message-input").focus();
});

window.addEventListener("popstate", () => chat?.route(location.pathname));

// -- the narrow layout's menu, and the dialogs --------------------------------------------

function closeMenu() {
  document.body.classList.remove("menu-open");
  $("menu").setAttribute("aria-expanded", "false");
}

$("menu").addEventListener("click", () => {
  const open = document.body.classList.toggle("menu-open");
  $("menu").setAttribute("aria-expanded", String(open));
  if (open) $("new-conversation").focus();
});

for (const close of document.querySelectorAll("dialog [data-close]")) {
  close.addEventListener("click", () => close.closest("dialog").close());
}

$("rename").addEventListener("click", () => {
  $("rename-input").value = $("conversation-title").textContent;
  $("rename-dialog").showModal();
  $("rename-input").select();
});

$("rename-form").addEventListener("submit", (event) => {
  const title = $("rename-input").value.trim();
  if (title) attempt(() => chat.rename(title));
  else event.preventDefault();
});

$("delete").addEventListener("click", () => $("delete-dialog").showModal());
$("delete-form").addEventListener("submit", () => attempt(() => chat.remove()));

start();
