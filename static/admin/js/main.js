// The operators' page: sign in with an admin-scope token, then poll the admin routes every few
// seconds while the tab is visible, and draw what they say.

import { ApiError, describeError } from "../../js/api.js";
import { readClaims } from "../../js/auth.js";
import { drawBars, drawLatency, drawPerMinute, drawSparkline, formatCount } from "./charts.js";

const POLL_MS = 3000;
const SPARK_SAMPLES = 40;
const TOKEN_KEY = "notifier.admin-token";
const BASE = new URL("../api/v1/", document.baseURI);
const $ = (id) => document.getElementById(id);

const state = { token: sessionStorage.getItem(TOKEN_KEY), timer: null, inFlight: false, last: null, history: { connections: [], online: [] }, selected: null };

async function request(method, path, { token = state.token } = {}) {
  let response;
  try {
    response = await fetch(new URL(path, BASE), {
      method,
      headers: { Accept: "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "network_error", "Can't reach the server. Check your connection.");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = data?.error ?? {};
    throw new ApiError(response.status, error.code ?? `http_${response.status}`, error.message ?? response.statusText, error.details ?? null);
  }
  return data;
}

function refusal(error) {
  if (error instanceof ApiError && error.status === 403) {
    return "This token is valid but has no notifications:admin scope, so it cannot open the admin page. Sign in with an admin token.";
  }
  if (error instanceof ApiError && error.status === 401) return `This token was refused: ${error.message}.`;
  return describeError(error);
}

// -- sign-in ------------------------------------------------------------------------------

function showSignIn(message = "") {
  stopPolling();
  $("dashboard").hidden = true;
  $("live").hidden = $("sign-out").hidden = $("who").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("signin-error").hidden = !message;
}

async function signIn(token) {
  try {
    await request("GET", "admin/overview", { token });
  } catch (error) {
    showSignIn(refusal(error));
    return;
  }
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("who").textContent = subjectOf(token);
  $("signin").hidden = true;
  $("dashboard").hidden = false;
  $("live").hidden = $("sign-out").hidden = $("who").hidden = false;
  startPolling();
}

function subjectOf(token) {
  try {
    return readClaims(token).sub; // UTF-8, padded: the page's own reader
  } catch {
    return "";
  }
}

function signOut() {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  state.history = { connections: [], online: [] };
  showSignIn();
}

// -- polling ------------------------------------------------------------------------------

function setLive(stateName, label) {
  $("live").dataset.state = stateName;
  $("live-label").textContent = label;
}

function startPolling() {
  stopPolling();
  if (document.hidden || !state.token) {
    setLive("idle", "Paused");
    return;
  }
  poll();
  state.timer = setInterval(poll, POLL_MS);
}

function stopPolling() {
  if (state.timer !== null) clearInterval(state.timer);
  state.timer = null;
}

async function poll() {
  if (state.inFlight || !state.token) return;
  state.inFlight = true;
  try {
    const [stats, overview, failed, activity] = await Promise.all([
      request("GET", "notifications/websocket/stats"),
      request("GET", "admin/overview"),
      request("GET", "admin/email-logs?status=failed&limit=20"),
      request("GET", "admin/activity?limit=25"),
    ]);
    render(stats, overview, failed.email_logs, activity.activity);
    $("dash-error").hidden = true;
    setLive("connected", `Live · ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      signOut();
      showSignIn(refusal(error));
      return;
    }
    $("dash-error").textContent = `Not updating: ${describeError(error)}`;
    $("dash-error").hidden = false;
    setLive("offline", "Not updating");
  } finally {
    state.inFlight = false;
  }
}

document.addEventListener("visibilitychange", () => {
  if (!state.token || $("dashboard").hidden) return;
  if (document.hidden) {
    stopPolling();
    setLive("idle", "Paused");
  } else {
    startPolling();
  }
});

// -- drawing ------------------------------------------------------------------------------

function push(list, value) {
  list.push(value);
  if (list.length > SPARK_SAMPLES) list.shift();
}

function uptime(seconds) {
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${Math.round(seconds / 86400)} days`;
}

function render(stats, overview, failed, activity) {
  state.last = { stats, overview };
  $("stat-connections").textContent = formatCount(stats.connections);
  $("stat-online").textContent = formatCount(stats.online_users);
  $("stat-processes").textContent = String(stats.processes.length || 1);
  $("stat-uptime").textContent = `this one up ${uptime(stats.uptime_seconds)}`;
  $("stat-stored").textContent = formatCount(overview.notifications_stored);
  $("stat-deliveries").textContent = formatCount(overview.deliveries);
  $("stat-coalesced").textContent = formatCount(overview.coalesced);
  push(state.history.connections, stats.connections);
  push(state.history.online, stats.online_users);
  drawSparkline($("spark-connections"), state.history.connections);
  drawSparkline($("spark-online"), state.history.online);

  const perMinute = overview.notifications_per_minute;
  const lastHour = perMinute.counts.reduce((a, b) => a + b, 0);
  $("per-minute-summary").textContent = `${formatCount(lastHour)} in the last 60 minutes · this process`;
  drawPerMinute($("per-minute-chart"), perMinute);
  drawLatency($("latency-emit"), "Commit → emit", overview.commit_to_emit);
  drawLatency($("latency-receipt"), "Commit → receipt", overview.commit_to_receipt);
  drawBars($("recoveries"), overview.recoveries, { too_far: "too far behind" });
  drawBars($("refusals"), overview.refusals, { per_user_cap: "per-user cap", connect_rate: "connect rate" });
  renderEmails(overview.emails, failed);
  renderActivity(activity);
}

const EMAIL_ORDER = ["sent", "queued", "sending", "failed", "skipped"];

function renderEmails(counts, failed) {
  const total = EMAIL_ORDER.reduce((sum, key) => sum + (counts[key] ?? 0), 0);
  const segments = EMAIL_ORDER.map((key) => {
    const span = document.createElement("span");
    span.className = `seg ${key}`;
    span.style.flexGrow = String(counts[key] ?? 0);
    return span;
  });
  $("email-stack").replaceChildren(...segments);
  $("email-stack").classList.toggle("empty", total === 0);
  $("email-legend").replaceChildren(...EMAIL_ORDER.map((key) => {
    const item = document.createElement("li");
    item.dataset.status = key;
    item.innerHTML = `<span class="swatch ${key}"></span><span class="legend-name"></span><strong></strong>`;
    item.querySelector(".legend-name").textContent = key;
    item.querySelector("strong").textContent = formatCount(counts[key] ?? 0);
    return item;
  }));
  if (!failed.length) {
    const none = document.createElement("li");
    none.className = "empty-note";
    none.textContent = "No failed emails.";
    $("failed-emails").replaceChildren(none);
    return;
  }
  $("failed-emails").replaceChildren(...failed.map((log) => {
    const item = document.createElement("li");
    item.className = "failed-item";
    item.dataset.id = String(log.id);
    const text = document.createElement("div");
    text.className = "failed-text";
    const title = document.createElement("strong");
    title.textContent = `#${log.id} ${log.subject ?? ""}`;
    const meta = document.createElement("span");
    meta.className = "hint";
    meta.textContent = `${log.user_id} · ${log.attempts} attempt${log.attempts === 1 ? "" : "s"}`;
    const reason = document.createElement("span");
    reason.className = "reason";
    reason.textContent = log.failed_reason ?? "no reason recorded";
    text.append(title, meta, reason);
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "button small";
    retry.textContent = "Retry";
    retry.setAttribute("aria-label", `Retry email ${log.id}`);
    retry.addEventListener("click", () => retryEmail(log.id, retry));
    item.append(text, retry);
    return item;
  }));
}

async function retryEmail(id, button) {
  button.disabled = true;
  try {
    await request("POST", `admin/email-logs/${id}/retry`);
    $("email-note").textContent = `Email #${id} is queued again.`;
    $("email-note").dataset.kind = "";
  } catch (error) {
    $("email-note").textContent = `Email #${id}: ${describeError(error)}`;
    $("email-note").dataset.kind = "error";
  }
  poll();
}

function timeOf(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function renderActivity(steps) {
  $("activity-empty").hidden = steps.length > 0;
  $("activity").replaceChildren(...steps.map((step) => {
    const row = document.createElement("tr");
    row.tabIndex = 0;
    row.dataset.notification = String(step.notification_id);
    if (state.selected === step.notification_id) row.setAttribute("aria-current", "true");
    const cells = [timeOf(step.at), step.kind, `#${step.notification_id}`, step.user_id, step.type];
    cells.forEach((text, index) => {
      const cell = document.createElement("td");
      if (index === 1) {
        const badge = document.createElement("span");
        badge.className = `kind ${step.kind}`;
        badge.textContent = step.kind.replaceAll("_", " ");
        cell.append(badge);
      } else {
        cell.textContent = text;
      }
      row.append(cell);
    });
    const open = () => openTimeline(step.notification_id);
    row.addEventListener("click", open);
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        open();
      }
    });
    return row;
  }));
}

function describeStep(step) {
  const d = step.detail ?? {};
  switch (step.kind) {
    case "created": return `by ${d.publisher ?? "unknown"}${d.publisher_kind ? ` (${d.publisher_kind})` : ""}`;
    case "pushed": return `to ${d.sessions ?? 0} session${d.sessions === 1 ? "" : "s"}${d.via ? `, ${d.via}` : ""}`;
    case "delivered": return d.via ? `receipt by ${d.via}` : "receipt";
    case "emailed":
    case "email_failed":
    case "email_skipped":
      return [d.email_log_id ? `email #${d.email_log_id}` : "", d.attempts ? `${d.attempts} attempt(s)` : "", d.reason ?? ""].filter(Boolean).join(" · ");
    default: return "";
  }
}

async function openTimeline(id) {
  state.selected = id;
  for (const row of $("activity").querySelectorAll("tr")) {
    row.toggleAttribute("aria-current", row.dataset.notification === String(id));
  }
  $("timeline-summary").textContent = `notification #${id}: loading…`;
  try {
    const { notification, activity } = await request("GET", `admin/notifications/${id}/activity`);
    $("timeline-summary").textContent = `#${notification.id} “${notification.title}” for ${notification.user_id} · ${notification.type}`;
    $("timeline-empty").hidden = true;
    $("timeline").replaceChildren(...activity.map((step) => {
      const item = document.createElement("li");
      item.className = `step ${step.kind}`;
      const when = document.createElement("time");
      when.dateTime = step.at;
      when.textContent = timeOf(step.at);
      const what = document.createElement("strong");
      what.textContent = step.kind.replaceAll("_", " ");
      const detail = document.createElement("span");
      detail.className = "hint";
      detail.textContent = describeStep(step);
      item.append(when, what, detail);
      return item;
    }));
  } catch (error) {
    $("timeline-summary").textContent = `notification #${id}: ${describeError(error)}`;
  }
}

// -- cleanup ------------------------------------------------------------------------------

$("cleanup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const seconds = Number($("cleanup-timeout").value);
  if (!Number.isFinite(seconds) || seconds < 0 || seconds > 604800) {
    $("cleanup-result").textContent = "Choose between 0 and 604800 seconds.";
    $("cleanup-result").dataset.kind = "error";
    return;
  }
  $("confirm-text").textContent = `Every session on every process that sent nothing for more than ${seconds} seconds is disconnected. Its client reconnects by itself if it is still there.`;
  const dialog = $("confirm");
  dialog.returnValue = "";
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "confirm") return;
    try {
      const result = await request("POST", `notifications/websocket/cleanup?timeout_seconds=${seconds}`);
      $("cleanup-result").textContent = `Cleaned ${result.cleaned} stale session${result.cleaned === 1 ? "" : "s"}.`;
      $("cleanup-result").dataset.kind = "";
    } catch (error) {
      $("cleanup-result").textContent = describeError(error);
      $("cleanup-result").dataset.kind = "error";
    }
    poll();
  }, { once: true });
  dialog.showModal();
});

// -- start --------------------------------------------------------------------------------

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (token) signIn(token);
});

$("dev-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const { token } = await (await fetch(new URL("dev/admin-token", BASE), {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ sub: $("dev-sub").value.trim() }),
    })).json();
    await signIn(token);
  } catch (error) {
    showSignIn(describeError(error));
  }
});

$("sign-out").addEventListener("click", signOut);

new ResizeObserver(() => {
  if (state.last) drawPerMinute($("per-minute-chart"), state.last.overview.notifications_per_minute);
}).observe($("per-minute-chart"));

async function start() {
  try {
    const config = await request("GET", "dev/config", { token: null });
    $("dev-form").hidden = !config.dev_sign_in;
  } catch {
    $("dev-form").hidden = true;
  }
  if (state.token) await signIn(state.token);
  else showSignIn();
  document.body.dataset.ready = "true";
}

start();
