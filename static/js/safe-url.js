// Only http(s) and same-site paths reach href/src: a notification is data, never script.

export function safeUrl(value) {
  if (typeof value !== "string" || !value) return null;
  try {
    const url = new URL(value, document.baseURI);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

export function isSameOrigin(href) {
  try {
    return new URL(href).origin === window.location.origin;
  } catch {
    return false;
  }
}
