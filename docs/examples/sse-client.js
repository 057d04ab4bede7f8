// Notifications over Server-Sent Events in a browser, with a stream ticket.
//
// EventSource cannot send an Authorization header, and a JWT in a URL ends up in logs; so the
// page trades its token for a single-use ticket (valid 30 s) and opens the stream with it.
// A used ticket cannot open the stream again, so EventSource's own reconnect (to the same URL)
// is replaced by ours: on any error the source is closed, a fresh ticket is fetched, and the
// stream reopens with ?last_event_id=<the last seq seen>, which the server recovers from (every
// missed notification once, in order, then live ones). EventSource would send the same position
// as the Last-Event-ID header, which non-browser clients (curl, server-side SSE clients) use.
//
// Delivery receipts: a written event is not counted as delivered; the page acknowledges what it
// received with POST /api/v1/notifications/received {"seqs": [...]}, batched like the socket
// clients (whatever arrived within 200 ms, at most 100 seqs a request: the server's default
// RECEIPT_MAX_SEQS). A receipt that could not be sent is kept (at most 1000, oldest dropped
// first) and sent with the next one, or when the stream reopens.
//
//   const stream = openNotificationStream({
//     getToken: async () => myApp.accessToken(),
//     onEvent: (name, data) => console.log(name, data),
//   });
//   // later: stream.close();
const RECEIPT_DELAY_MS = 200;
const RECEIPT_BATCH = 100;
const RECEIPTS_KEPT = 1000;

function openNotificationStream({ getToken, onEvent, baseUrl = "", maxDelayMs = 10000 }) {
  let source = null;
  let lastSeq = null;
  let delay = 500;
  let stopped = false;
  let timer = null;
  let receipts = []; // seqs received and not acknowledged yet
  let receiptTimer = null;

  function acknowledge(seq) {
    if (!Number.isInteger(seq)) return;
    receipts.push(seq);
    if (receipts.length > RECEIPTS_KEPT) receipts.splice(0, receipts.length - RECEIPTS_KEPT);
    scheduleReceipts();
  }

  function scheduleReceipts() {
    if (receiptTimer !== null || !receipts.length || stopped) return;
    receiptTimer = setTimeout(sendReceipts, RECEIPT_DELAY_MS);
  }

  async function sendReceipts() {
    while (receipts.length && !stopped) {
      const seqs = receipts.splice(0, RECEIPT_BATCH);
      try {
        const answer = await fetch(`${baseUrl}/api/v1/notifications/received`, {
          method: "POST",
          headers: {
            Authorization: `Bearer ${await getToken()}`,
            "Content-Type": "application/json",
          },
          body: JSON.stringify({ seqs }),
        });
        // 4xx: the server will never take this receipt (e.g. a smaller RECEIPT_MAX_SEQS); drop it
        if (answer.status >= 500) throw new Error(`received: HTTP ${answer.status}`);
      } catch (error) {
        receipts = [...seqs, ...receipts].slice(-RECEIPTS_KEPT); // again with the next one
        break;
      }
    }
    receiptTimer = null;
  }

  async function connect() {
    timer = null;
    if (stopped) return;
    let ticket;
    try {
      const answer = await fetch(`${baseUrl}/api/v1/notifications/stream-ticket`, {
        method: "POST",
        headers: { Authorization: `Bearer ${await getToken()}` },
      });
      if (!answer.ok) throw new Error(`stream-ticket: HTTP ${answer.status}`);
      ({ ticket } = await answer.json());
    } catch (error) {
      retry(); // the server is away (restarting, or the network is): try again later
      return;
    }
    const url = new URL(`${baseUrl}/api/v1/notifications/stream`, location.href);
    url.searchParams.set("ticket", ticket);
    if (lastSeq !== null) url.searchParams.set("last_event_id", lastSeq);
    source = new EventSource(url);
    source.onopen = () => {
      delay = 500;
      onEvent("open", { resumedAfter: lastSeq });
      scheduleReceipts(); // what could not be acknowledged while the server was away
    };
    source.addEventListener("notification", (event) => {
      lastSeq = event.lastEventId; // the notification's seq
      const notification = JSON.parse(event.data);
      onEvent("notification", notification);
      acknowledge(notification.seq);
    });
    for (const name of ["unread_count", "notifications_read", "notification_deleted", "recovery"]) {
      source.addEventListener(name, (event) => onEvent(name, JSON.parse(event.data)));
    }
    source.addEventListener("session_closed", (event) => {
      // Closed because this user opened too many streams: reconnecting would close another.
      stopped = true;
      source.close();
      onEvent("session_closed", JSON.parse(event.data));
    });
    source.onerror = () => {
      source.close(); // its own retry would reuse the spent ticket
      if (!stopped) {
        onEvent("reconnecting", { lastSeq });
        retry();
      }
    };
  }

  function retry() {
    if (stopped || timer !== null) return;
    timer = setTimeout(connect, delay);
    delay = Math.min(delay * 2, maxDelayMs);
  }

  connect();
  return {
    close() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      if (receiptTimer !== null) clearTimeout(receiptTimer);
      if (source !== null) source.close();
    },
  };
}
