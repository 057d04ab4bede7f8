// The REST client: JSON in and out, errors as ApiError with the server's code and message.

export class ApiError extends Error {
  constructor(status, code, message, details = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** Resolved against the page, so the client also works when served under a path prefix. */
const BASE = new URL("api/v1/", document.baseURI);

export function createApi({ getToken, onUnauthorized }) {
  async function request(method, path, body) {
    const headers = { Accept: "application/json" };
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(new URL(path, BASE), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, "network_error", "Can't reach the server. Check your connection.");
    }
    if (response.status === 204) return null;
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const error = data?.error ?? {};
      const failure = new ApiError(
        response.status,
        error.code ?? `http_${response.status}`,
        error.message ?? `${response.status} ${response.statusText}`,
        error.details ?? null,
      );
      if (response.status === 401 && token) onUnauthorized?.(failure);
      throw failure;
    }
    return data;
  }

  return {
    devConfig: () => request("GET", "dev/config"),
    devToken: (sub, name) => request("POST", "dev/token", name ? { sub, name } : { sub }),
    list({ cursor = null, limit = 20, unread = false } = {}) {
      const query = new URLSearchParams({ limit: String(limit) });
      if (cursor) query.set("cursor", cursor);
      if (unread) query.set("unread", "true");
      return request("GET", `notifications?${query}`);
    },
    unreadCount: () => request("GET", "notifications/unread-count"),
    markRead: (id) => request("POST", `notifications/${encodeURIComponent(id)}/read`),
    markAllRead: () => request("POST", "notifications/read-all"),
    remove: (id) => request("DELETE", `notifications/${encodeURIComponent(id)}`),
    publish: (notification) => request("POST", "notifications", notification),
    getPreferences: () => request("GET", "preferences"),
    putPreferences: (changes) => request("PUT", "preferences", changes),
  };
}

/** One line for a person: the server's message, plus the first field error if there is one. */
export function describeError(error) {
  if (!(error instanceof ApiError)) return error?.message || "Something went wrong.";
  if (error.status === 401) return `Not signed in: ${error.message}.`;
  if (error.status === 403) return `Not allowed: ${error.message}.`;
  const first = Array.isArray(error.details) ? error.details[0] : null;
  if (first?.msg) {
    const where = (first.loc ?? []).filter((part) => part !== "body").join(".");
    return where ? `${error.message}: ${where}: ${first.msg}` : `${error.message}: ${first.msg}`;
  }
  return error.message;
}
