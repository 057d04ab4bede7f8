// Short, unobtrusive toasts for live notifications, and optional desktop notifications.

import { icon } from "./icons.js";

const MAX_TOASTS = 3;
const TOAST_MS = 6000;
const DESKTOP_KEY = "notifier.desktop";

export class Toasts {
  constructor(region) {
    this.region = region;
  }

  /** { title, body, actionLabel, onAction } */
  show({ title, body = "", actionLabel = "", onAction = null }) {
    while (this.region.children.length >= MAX_TOASTS) this.region.firstElementChild.remove();
    const toast = document.createElement("div");
    toast.className = "toast";
    const text = document.createElement("div");
    text.className = "toast-text";
    const strong = document.createElement("strong");
    strong.textContent = title;
    text.append(strong);
    if (body) {
      const p = document.createElement("span");
      p.textContent = body;
      text.append(p);
    }
    toast.append(text);
    if (actionLabel && onAction) {
      const action = document.createElement("button");
      action.type = "button";
      action.className = "toast-action";
      action.textContent = actionLabel;
      action.addEventListener("click", () => {
        dismiss();
        onAction();
      });
      toast.append(action);
    }
    const close = document.createElement("button");
    close.type = "button";
    close.className = "icon-button toast-close";
    close.setAttribute("aria-label", "Dismiss");
    close.append(icon("close"));
    toast.append(close);

    let timer = null;
    const dismiss = () => {
      clearTimeout(timer);
      toast.remove();
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(dismiss, TOAST_MS);
    };
    close.addEventListener("click", dismiss);
    // Hover or focus keeps it: nobody should have to race a timer to read it.
    toast.addEventListener("pointerenter", () => clearTimeout(timer));
    toast.addEventListener("pointerleave", arm);
    toast.addEventListener("focusin", () => clearTimeout(timer));
    toast.addEventListener("focusout", arm);
    this.region.append(toast);
    arm();
    return toast;
  }
}

/** Desktop notifications: only after the person asks for them, only while the tab is hidden. */
export class DesktopNotifications extends EventTarget {
  get supported() {
    return "Notification" in window;
  }

  get permission() {
    return this.supported ? Notification.permission : "unsupported";
  }

  get enabled() {
    return this.permission === "granted" && localStorage.getItem(DESKTOP_KEY) === "on";
  }

  async enable() {
    if (!this.supported) return false;
    const permission =
      Notification.permission === "default"
        ? await Notification.requestPermission()
        : Notification.permission;
    if (permission === "granted") localStorage.setItem(DESKTOP_KEY, "on");
    this.dispatchEvent(new Event("change"));
    return permission === "granted";
  }

  disable() {
    localStorage.setItem(DESKTOP_KEY, "off");
    this.dispatchEvent(new Event("change"));
  }

  /** The same tag in every tab: two open tabs still make one desktop notification. */
  show(notification, onClick) {
    if (!this.enabled || document.visibilityState === "visible") return;
    try {
      const shown = new Notification(notification.title, {
        body: notification.body || "",
        tag: `notification-${notification.id}`,
        icon: notification.icon || "img/favicon.svg",
      });
      shown.addEventListener("click", () => {
        window.focus();
        shown.close();
        onClick?.();
      });
    } catch {
      // Some platforms allow notifications only from a service worker; the toast still shows.
    }
  }
}
