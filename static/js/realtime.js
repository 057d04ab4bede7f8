// The Socket.IO connection: state for people (connected / reconnecting / offline), events for code.

import { io } from "../vendor/socket.io.esm.min.js";

const PATH = new URL("socket.io/", document.baseURI).pathname;
/** The server closes sessions silent for 5 minutes; hidden tabs may run timers once a minute. */
const HEARTBEAT_MS = 30_000;
const ACK_TIMEOUT_MS = 10_000;
const SERVER_EVENTS = [
  "notification",
  "unread_count",
  "notifications_read",
  "notification_deleted",
];
/** Receipts wait this long for others to share one `received` event, at most RECEIPT_BATCH. */
const RECEIPT_DELAY_MS = 200;
const RECEIPT_BATCH = 100; // the server's default RECEIPT_MAX_SEQS
const RECEIPTS_KEPT = 1000; // waiting while offline; the oldest go first (best effort)
const AUTH_FAILURES = /^(missing token|token expired|invalid token)/;

/**
 * Events: "state" (this.state, this.detail, this.attempt), "unauthorized" (detail: reason),
 * "connect", "synced" (detail: a sync's ack, or null when none came), and one CustomEvent per
 * server event (and `recovery`) with the payload as `detail`.
 */
export class Realtime extends EventTarget {
  state = "idle";
  detail = "";
  attempt = 0;
  socket = null;
  #heartbeat = null;
  #retry = null;
  #closedReason = "";
  #syncing = false; // a sync, or the connect's recovery, is running
  #again = false; // another sync was asked for while it ran
  #connection = 0; // a sync of an earlier connection must not touch this one
  #receipts = []; // seqs that arrived and are not acknowledged yet
  #receiptTimer = null;

  constructor({ getToken, getLastSeq }) {
    super();
    this.getToken = getToken;
    this.getLastSeq = getLastSeq;
    window.addEventListener("offline", () => {
      if (this.socket) this.#setState("offline", "This device is offline.");
    });
    window.addEventListener("online", () => {
      if (!this.socket) return;
      if (this.socket.connected) {
        this.#setState("connected");
      } else if (this.state !== "disconnected") {
        // Skip what is left of the backoff delay: the network is back now.
        this.socket.disconnect();
        this.socket.connect();
        this.#setState("reconnecting", "Back online; reconnecting.");
      }
    });
  }

  start() {
    this.stop();
    this.#closedReason = "";
    const socket = io({
      path: PATH,
      // A function, so every reconnect sends the newest last_seq (and token).
      auth: (cb) => cb({ token: this.getToken(), last_seq: this.getLastSeq() }),
      reconnectionDelay: 1000,
      reconnectionDelayMax: 15_000,
      randomizationFactor: 0.5,
      timeout: 10_000,
    });
    this.socket = socket;
    this.attempt = 0;
    this.#setState(navigator.onLine ? "connecting" : "offline");

    socket.on("connect", () => {
      // The auth sent last_seq: the server replays what came after it, then sends `recovery`.
      this.#connection += 1;
      this.#syncing = true;
      this.#again = false;
      this.attempt = 0;
      this.#closedReason = "";
      this.#setState("connected");
      this.#startHeartbeat();
      this.dispatchEvent(new Event("connect"));
    });
    socket.on("disconnect", (reason) => {
      this.#stopHeartbeat();
      if (reason === "io client disconnect") return;
      if (reason === "io server disconnect") {
        // The client does not come back by itself after this. A session replaced by newer ones
        // stays down (it would only push another one out); anything else retries shortly.
        if (this.#closedReason) {
          this.#setState("disconnected", this.#closedReason);
          return;
        }
        this.#scheduleConnect(2 + Math.random() * 3);
        return;
      }
      this.#setState(navigator.onLine ? "reconnecting" : "offline", reason);
    });
    socket.on("connect_error", (error) => {
      if (socket.active) {
        // A transport failure: the manager retries with its backoff.
        this.#setState(navigator.onLine ? "reconnecting" : "offline", error.message);
        return;
      }
      // Refused by the server: it will not retry by itself.
      const reason = error.message || "connection refused";
      if (AUTH_FAILURES.test(reason)) {
        this.stop();
        this.dispatchEvent(new CustomEvent("unauthorized", { detail: reason }));
        return;
      }
      const retryAfter = Number(error.data?.retry_after);
      if (retryAfter > 0) {
        this.#scheduleConnect(retryAfter + Math.random());
        this.#setState("reconnecting", reason);
        return;
      }
      this.#setState("disconnected", reason);
    });
    socket.on("session_closed", (data) => {
      this.#closedReason = data?.reason || "closed by the server";
    });
    socket.io.on("reconnect_attempt", (attempt) => {
      this.attempt = attempt;
      this.#setState(navigator.onLine ? "reconnecting" : "offline", this.detail);
    });
    for (const name of SERVER_EVENTS) {
      socket.on(name, (data) => this.dispatchEvent(new CustomEvent(name, { detail: data })));
    }
    // Delivery receipts: the server records delivered_at from the first device's receipt.
    socket.on("notification", (data) => this.#acknowledge(data?.seq));
    socket.on("connect", () => this.#scheduleReceipts());
    socket.on("recovery", (data) => {
      this.#syncing = false;
      this.dispatchEvent(new CustomEvent("recovery", { detail: data }));
      if (this.#again) this.#runSyncs();
    });
  }

  #acknowledge(seq) {
    if (!Number.isInteger(seq)) return;
    this.#receipts.push(seq);
    const excess = this.#receipts.length - RECEIPTS_KEPT;
    if (excess > 0) this.#receipts.splice(0, excess);
    this.#scheduleReceipts();
  }

  #scheduleReceipts() {
    if (this.#receiptTimer || !this.#receipts.length) return;
    this.#receiptTimer = setTimeout(() => {
      this.#receiptTimer = null;
      const socket = this.socket;
      while (socket?.connected && this.#receipts.length) {
        socket.emit("received", { seqs: this.#receipts.splice(0, RECEIPT_BATCH) });
      }
    }, RECEIPT_DELAY_MS);
  }

  stop() {
    this.#stopHeartbeat();
    clearTimeout(this.#retry);
    this.#connection += 1; // a sync still on its way is dropped, not dispatched
    this.#syncing = false;
    this.#again = false;
    if (this.socket) {
      this.socket.removeAllListeners();
      this.socket.io.removeAllListeners();
      this.socket.disconnect();
      this.socket = null;
    }
    this.attempt = 0;
    this.#setState("idle");
  }

  /** Connect again now (the "Reconnect" button). */
  reconnect() {
    if (!this.socket) return this.start();
    clearTimeout(this.#retry);
    this.#closedReason = "";
    this.#setState("connecting");
    this.socket.connect();
  }

  /** True while a sync or the connect's recovery runs: it brings everything stored so far. */
  get syncing() {
    return this.#syncing;
  }

  /**
   * Ask the server for everything after getLastSeq() (after `missed`, or a seq gap). One sync
   * at a time (the server refuses a second one for the session), and one more after it when
   * asked meanwhile; each answer is dispatched as "synced".
   */
  requestSync() {
    this.#again = true;
    if (!this.#syncing && this.socket?.connected) this.#runSyncs();
  }

  async #runSyncs() {
    const connection = this.#connection;
    this.#syncing = true;
    try {
      while (this.#again && connection === this.#connection && this.socket?.connected) {
        this.#again = false;
        let ack = null;
        try {
          ack = await this.socket
            .timeout(ACK_TIMEOUT_MS)
            .emitWithAck("sync", { after_seq: this.getLastSeq() });
        } catch {
          // No answer in time: "synced" with null, and the page refetches over REST.
        }
        if (connection !== this.#connection) return; // reconnected: its recovery took over
        this.dispatchEvent(new CustomEvent("synced", { detail: ack }));
      }
    } finally {
      if (connection === this.#connection) this.#syncing = false;
    }
  }

  #scheduleConnect(seconds) {
    clearTimeout(this.#retry);
    this.#setState("reconnecting", `retrying in ${Math.round(seconds)} s`);
    this.#retry = setTimeout(() => this.socket?.connect(), seconds * 1000);
  }

  #startHeartbeat() {
    this.#stopHeartbeat();
    this.#heartbeat = setInterval(() => {
      if (!this.socket?.connected) return;
      this.socket
        .timeout(ACK_TIMEOUT_MS)
        .emitWithAck("heartbeat")
        .catch(() => {}); // a lost ack is the transport's business; its own ping notices
    }, HEARTBEAT_MS);
  }

  #stopHeartbeat() {
    clearInterval(this.#heartbeat);
    this.#heartbeat = null;
  }

  #setState(state, detail = "") {
    if (state === this.state && detail === this.detail && state !== "reconnecting") return;
    this.state = state;
    this.detail = detail;
    this.dispatchEvent(new Event("state"));
  }
}
