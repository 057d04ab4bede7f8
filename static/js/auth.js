// The token: pasted or from the development sign-in, kept in localStorage so tabs share it.

const KEY = "notifier.token";

function base64UrlDecode(part) {
  const padded = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/**
 * Read a JWT's claims without verifying it (the server verifies; the page only wants the user
 * name, the scopes and the expiry). Throws with a readable message when it is not a JWT.
 */
export function readClaims(token) {
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("That is not a JWT (it needs three parts separated by dots).");
  let claims;
  try {
    claims = JSON.parse(base64UrlDecode(parts[1]));
  } catch {
    throw new Error("That JWT's payload is not readable JSON.");
  }
  if (typeof claims !== "object" || claims === null || typeof claims.sub !== "string") {
    throw new Error("That JWT has no `sub` claim (the user id).");
  }
  return claims;
}

export class Session extends EventTarget {
  token = null;
  claims = null;

  constructor() {
    super();
    // Another tab signed in or out: follow it.
    window.addEventListener("storage", (event) => {
      if (event.key !== KEY) return;
      this.#adopt(event.newValue);
      this.dispatchEvent(new Event("change"));
    });
  }

  restore() {
    this.#adopt(localStorage.getItem(KEY));
    return this.signedIn;
  }

  signIn(token) {
    const claims = readClaims(token.trim());
    this.token = token.trim();
    this.claims = claims;
    localStorage.setItem(KEY, this.token);
    this.dispatchEvent(new Event("change"));
  }

  signOut() {
    this.token = null;
    this.claims = null;
    localStorage.removeItem(KEY);
    this.dispatchEvent(new Event("change"));
  }

  get signedIn() {
    return this.token !== null;
  }

  get userId() {
    return this.claims?.sub ?? null;
  }

  get displayName() {
    return this.claims?.name || this.claims?.sub || "";
  }

  get canPublish() {
    const scopes = String(this.claims?.scope ?? "").split(" ");
    return scopes.includes("notifications:publish");
  }

  /** Milliseconds until `exp`, or Infinity when the token does not say. */
  get expiresIn() {
    const exp = this.claims?.exp;
    return typeof exp === "number" ? exp * 1000 - Date.now() : Infinity;
  }

  #adopt(token) {
    if (!token) {
      this.token = null;
      this.claims = null;
      return;
    }
    try {
      this.claims = readClaims(token);
      this.token = token;
    } catch {
      this.token = null;
      this.claims = null;
      localStorage.removeItem(KEY);
    }
  }
}
