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
//   const stream = openNotificationStream({
//     getToken: async () => myApp.accessToken(),
//     onEvent: (name, data) => console.log(name, data),
//   });
//   // later: stream.close();
function openNotificationStream({ getToken, onEvent, baseUrl = "", maxDelayMs = 10000 }) {
  let source = null;
  let lastSeq = null;
  let delay = 500;
  let stopped = false;
  let timer = null;

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
    };
    source.addEventListener("notification", (event) => {
      lastSeq = event.lastEventId; // the notification's seq
      onEvent("notification", JSON.parse(event.data));
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
      if (source !== null) source.close();
    },
  };
}
