// Wiring: session -> REST + Socket.IO -> store -> views. The only module with side effects.

import { createApi, describeError } from "./api.js";
import { Session } from "./auth.js";
import { hydrateIcons } from "./icons.js";
import { Panel } from "./panel.js";
import { PreferencesDialog } from "./prefs.js";
import { Realtime } from "./realtime.js";
import { NotificationStore } from "./store.js";
import { DesktopNotifications, Toasts } from "./toasts.js";

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 20;
/** How long to wait for the server's `recovery` answer before toasting normally again. */
const RECOVERY_WAIT_MS = 8000;

const session = new Session();
const store = new NotificationStore();
const api = createApi({
  getToken: () => session.token,
  onUnauthorized: (error) => signOut(`The server refused your token: ${error.message}.`),
});
const realtime = new Realtime({ getToken: () => session.token, getLastSeq: () => store.lastSeq });
const toasts = new Toasts($("toasts"));
const desktop = new DesktopNotifications();
const seenTypes = new Set();

const panel = new Panel({
  store,
  actions: { markRead, markAllRead, remove, loadMore, retry: () => reloadInbox() },
});
const preferences = new PreferencesDialog({
  api,
  knownTypes: () => [...seenTypes],
  // In-app switches decide what is listed and counted: show the inbox as it is now.
  onSaved: () => reloadInbox(),
});

let activeUser = null;
let loadingPage = null;
let generation = 0;
let recovering = null; // { count, timer } between a connect and the server's `recovery`
let expiryTimer = null;

// -- session ---------------------------------------------------------------------------------

async function start() {
  hydrateIcons();
  bindControls();
  session.addEventListener("change", onSessionChange);
  session.restore();
  await onSessionChange();
  try {
    const config = await api.devConfig();
    $("dev-form").hidden = !config?.dev_sign_in;
  } catch {
    $("dev-form").hidden = true;
  }
  document.body.dataset.ready = "true";
}

async function onSessionChange() {
  const user = session.signedIn ? session.userId : null;
  if (user === activeUser) return;
  teardown();
  activeUser = user;
  renderSession();
  if (!user) return;
  scheduleExpiry();
  await reloadInbox();
  if (activeUser === user) realtime.start();
}

function teardown() {
  realtime.stop();
  store.clear();
  seenTypes.clear();
  panel.close({ returnFocus: false });
  panel.showError("");
  clearTimeout(expiryTimer);
  endRecovery();
}

function signOut(message = "") {
  session.signOut(); // -> onSessionChange -> teardown
  showSignInMessage(message);
}

function scheduleExpiry() {
  clearTimeout(expiryTimer);
  const left = session.expiresIn;
  if (left <= 0) {
    signOut("Your token has expired. Sign in again.");
  } else if (Number.isFinite(left) && left < 2 ** 31) {
    expiryTimer = setTimeout(() => signOut("Your token has expired. Sign in again."), left);
  }
}

function renderSession() {
  const signedIn = session.signedIn;
  $("signin").hidden = signedIn;
  $("home").hidden = !signedIn;
  $("bell-wrap").hidden = !signedIn;
  $("account").hidden = !signedIn;
  $("connection").hidden = !signedIn;
  if (signedIn) {
    $("who").textContent = session.displayName;
    $("who").title = `User id: ${session.userId}`;
    $("hello-name").textContent = session.displayName;
    $("send-test").disabled = !session.canPublish;
    $("send-test-hint").hidden = session.canPublish;
    $("curl-user").textContent = JSON.stringify(session.userId);
    $("curl-origin").textContent = new URL(".", document.baseURI).href.replace(/\/$/, "");
    showSignInMessage("");
  }
  renderDesktop();
}

function showSignInMessage(message) {
  $("signin-error").textContent = message;
  $("signin-error").hidden = !message;
}

// -- inbox -----------------------------------------------------------------------------------

async function reloadInbox() {
  generation += 1; // a page still on its way belongs to the old list: it is dropped
  loadingPage = null;
  store.reset();
  panel.showError("");
  await Promise.all([loadMore(), refreshCount()]);
}

async function loadMore() {
  if (loadingPage) return loadingPage;
  if (store.exhausted) return null;
  const user = activeUser;
  const mine = generation;
  const current = () => user === activeUser && mine === generation;
  panel.setLoading(true);
  const request = (async () => {
    try {
      const page = await api.list({ cursor: store.nextCursor, limit: PAGE_SIZE });
      if (!current()) return;
      for (const n of page.notifications) seenTypes.add(n.type);
      store.addPage(page.notifications, page.next_cursor);
      panel.showError("");
    } catch (error) {
      if (current()) panel.showError(`Could not load notifications. ${describeError(error)}`);
    } finally {
      if (loadingPage === request) {
        loadingPage = null;
        panel.setLoading(false);
      }
    }
  })();
  loadingPage = request;
  return request;
}

/**
 * The badge has two sources: the socket's unread_count (in order, after each commit) and REST.
 * A REST answer is only used if nothing newer came in while it was on its way.
 */
let countEpoch = 0;

function setUnread(count) {
  countEpoch += 1;
  store.setUnread(count);
}

async function refreshCount() {
  const epoch = ++countEpoch;
  try {
    const { count } = await api.unreadCount();
    if (epoch === countEpoch) store.setUnread(count);
  } catch {
    // The socket's unread_count will correct it.
  }
}

async function markRead(id) {
  const changed = store.markRead([id]);
  if (!changed.length) return;
  setUnread(store.unread - 1);
  try {
    await api.markRead(id);
  } catch (error) {
    store.markUnread(changed);
    await refreshCount();
    panel.showError(`Could not mark it read. ${describeError(error)}`);
  }
}

async function markAllRead() {
  const changed = store.markAllRead();
  const before = store.unread;
  setUnread(0);
  try {
    await api.markAllRead();
  } catch (error) {
    store.markUnread(changed);
    setUnread(before);
    panel.showError(`Could not mark all read. ${describeError(error)}`);
  }
}

async function remove(id) {
  const removed = store.remove(id);
  if (!removed) return;
  if (!removed.read_at) setUnread(store.unread - 1);
  try {
    await api.remove(id);
  } catch (error) {
    if (error.status !== 404) {
      store.upsert(removed);
      await refreshCount();
      panel.showError(`Could not delete it. ${describeError(error)}`);
    }
  }
}

// -- realtime --------------------------------------------------------------------------------

realtime.addEventListener("connect", () => {
  endRecovery();
  const timer = setTimeout(() => endRecovery(), RECOVERY_WAIT_MS);
  recovering = { count: 0, latest: null, timer };
  if (!store.loaded) reloadInbox();
});

realtime.addEventListener("recovery", async ({ detail }) => {
  const missed = recovering;
  endRecovery();
  if (detail?.retry) {
    // The database was away: the server closes this transport and the client reconnects with
    // the same last_seq, so recovery runs again; the position is kept, nothing is refetched.
    return;
  }
  if (detail?.recovered === false) {
    await reloadInbox(); // too far behind: the list comes from REST instead
    return;
  }
  store.settle(detail?.last_seq);
  await refreshCount();
  if (missed?.count === 1) announce(missed.latest);
  else if (missed?.count > 1) {
    toasts.show({
      title: `${missed.count} new notifications`,
      body: "They arrived while you were away.",
      actionLabel: "View",
      onAction: () => panel.open(),
    });
  }
});

realtime.addEventListener("notification", ({ detail: notification }) => {
  if (!notification || typeof notification.id !== "number") return;
  seenTypes.add(notification.type);
  const gap = store.isGap(notification.seq);
  const isNew = store.upsert(notification);
  // Something before it may have been dropped by the outbound limit. A running sync (or the
  // connect's recovery) brings everything stored so far; otherwise ask for one. A hole no sync
  // can fill (muted, deleted) costs that one sync: its ack moves lastSeq past it.
  if (isNew && gap && !realtime.syncing) realtime.requestSync();
  if (!isNew || notification.read_at) return;
  if (recovering) {
    recovering.count += 1;
    recovering.latest = notification;
  } else {
    announce(notification);
  }
});

realtime.addEventListener("unread_count", ({ detail }) => {
  if (typeof detail?.count === "number") setUnread(detail.count);
  // The server dropped part of a burst for this tab (outbound limit): fetch what it held back.
  if (detail?.missed) realtime.requestSync();
});

realtime.addEventListener("synced", ({ detail: ack }) => {
  if (ack?.ok && ack.recovered !== false) store.settle(ack.last_seq);
  else reloadInbox(); // too far behind, refused or unanswered: the list comes from REST
});

realtime.addEventListener("notifications_read", ({ detail }) => {
  if (Array.isArray(detail?.ids)) store.markRead(detail.ids);
});

realtime.addEventListener("notification_deleted", ({ detail }) => {
  if (detail?.id != null) store.remove(detail.id);
});

realtime.addEventListener("unauthorized", ({ detail }) => {
  signOut(`The server refused your token: ${detail}. Sign in again.`);
});

realtime.addEventListener("state", renderConnection);

function endRecovery() {
  if (recovering) clearTimeout(recovering.timer);
  recovering = null;
}

function announce(notification) {
  if (!panel.isOpen) {
    toasts.show({
      title: notification.title,
      body: notification.body,
      actionLabel: "View",
      onAction: () => panel.open(),
    });
  }
  desktop.show(notification, () => panel.open());
}

const STATES = {
  idle: ["Signed out", ""],
  connecting: ["Connecting…", "Connecting to the server."],
  connected: ["Live", ""],
  reconnecting: ["Reconnecting…", "The connection dropped; new notifications will arrive when it is back."],
  offline: ["Offline", "You are offline; new notifications will arrive when you are back online."],
  disconnected: ["Disconnected", "Not receiving live notifications."],
};

function renderConnection() {
  const { state, detail, attempt } = realtime;
  const [label, note] = STATES[state] ?? [state, ""];
  const pill = $("connection");
  pill.dataset.state = state;
  $("connection-label").textContent = label;
  $("connection-attempt").textContent = state === "reconnecting" && attempt ? ` (try ${attempt})` : "";
  pill.title = detail ? `${label} ${detail}` : label;
  $("reconnect").hidden = state !== "disconnected";
  panel.setNote(
    state === "disconnected" && detail ? `${note} Reason: ${detail}` : note,
  );
}

// -- controls --------------------------------------------------------------------------------

function bindControls() {
  $("dev-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const sub = form.elements.sub.value.trim();
    const name = form.elements.name.value.trim();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    showSignInMessage("");
    try {
      const { token } = await api.devToken(sub, name || undefined);
      session.signIn(token);
    } catch (error) {
      showSignInMessage(`Sign-in failed. ${describeError(error)}`);
    } finally {
      button.disabled = false;
    }
  });

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("token-input");
    try {
      session.signIn(input.value);
      input.value = "";
    } catch (error) {
      showSignInMessage(error.message);
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  });
  $("token-input").addEventListener("input", (event) => event.target.removeAttribute("aria-invalid"));

  $("sign-out").addEventListener("click", () => signOut(""));
  $("reconnect").addEventListener("click", () => realtime.reconnect());

  $("send-test").addEventListener("click", async () => {
    const status = $("send-status");
    const button = $("send-test");
    button.disabled = true;
    status.textContent = "Sending…";
    status.dataset.kind = "";
    try {
      await api.publish({
        user_ids: [session.userId],
        type: "test",
        title: "Test notification",
        body: `Sent from this page at ${new Date().toLocaleTimeString()}.`,
        data: { source: "browser" },
      });
      status.textContent = "Sent. Watch the bell.";
    } catch (error) {
      status.textContent = `Not sent. ${describeError(error)}`;
      status.dataset.kind = "error";
    } finally {
      button.disabled = !session.canPublish;
    }
  });

  for (const id of ["open-prefs", "open-prefs-home"]) {
    $(id).addEventListener("click", () => {
      panel.close({ returnFocus: false });
      preferences.open();
    });
  }

  $("desktop-toggle").addEventListener("change", async (event) => {
    if (event.target.checked) await desktop.enable();
    else desktop.disable();
  });
  desktop.addEventListener("change", renderDesktop);

  $("copy-token").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(session.token ?? "");
      $("copy-status").textContent = "Token copied.";
    } catch {
      $("copy-status").textContent = "Copying is not allowed here; select the token in the developer tools instead.";
    }
  });
}

function renderDesktop() {
  const toggle = $("desktop-toggle");
  const hint = $("desktop-hint");
  toggle.checked = desktop.enabled;
  toggle.disabled = !desktop.supported || desktop.permission === "denied";
  hint.textContent = !desktop.supported
    ? "This browser does not support desktop notifications."
    : desktop.permission === "denied"
      ? "Blocked in this browser's site settings."
      : "Shown only while this tab is in the background.";
}

start();
