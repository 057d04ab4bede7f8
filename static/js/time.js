// Relative times ("2 minutes ago") that stay fresh while the page is open.

const UNITS = [
  ["year", 365 * 24 * 3600],
  ["month", 30 * 24 * 3600],
  ["week", 7 * 24 * 3600],
  ["day", 24 * 3600],
  ["hour", 3600],
  ["minute", 60],
];

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "long" });
const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** "just now", "2 minutes ago", "yesterday"; the server's clock may run slightly ahead. */
export function timeAgo(iso, now = Date.now()) {
  const seconds = Math.round((now - Date.parse(iso)) / 1000);
  if (Number.isNaN(seconds)) return "";
  if (seconds < 45) return "just now";
  for (const [unit, size] of UNITS) {
    if (seconds >= size) return relative.format(-Math.floor(seconds / size), unit);
  }
  return relative.format(-1, "minute");
}

export function fullDate(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : absolute.format(date);
}

/** Re-render every <time data-relative> under `root` on an interval; returns a stop function. */
export function keepFresh(root, intervalMs = 30_000) {
  const tick = () => {
    for (const node of root.querySelectorAll("time[data-relative]")) {
      node.textContent = timeAgo(node.dateTime);
    }
  };
  const timer = setInterval(tick, intervalMs);
  return () => clearInterval(timer);
}
