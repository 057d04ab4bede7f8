// The bell, its badge and the inbox panel: a keyed view of the store, keyboard first.

import { icon } from "./icons.js";
import { isSameOrigin, safeUrl } from "./safe-url.js";
import { fullDate, keepFresh, timeAgo } from "./time.js";

const $ = (id) => document.getElementById(id);

export class Panel {
  #nodes = new Map(); // id -> <article>
  #loading = false;

  /** actions: markRead(id), markAllRead(), remove(id), loadMore(), retry() */
  constructor({ store, actions }) {
    this.store = store;
    this.actions = actions;
    this.bell = $("bell");
    this.badge = $("badge");
    this.panel = $("panel");
    this.feed = $("feed");
    this.scroller = $("panel-scroll");
    this.empty = $("empty");
    this.more = $("load-more");
    this.status = $("panel-status");
    this.error = $("panel-error");
    this.markAll = $("mark-all");
    this.summary = $("panel-summary");
    this.note = $("panel-note");

    this.bell.addEventListener("click", () => this.toggle());
    $("panel-close").addEventListener("click", () => this.close());
    this.markAll.addEventListener("click", () => this.actions.markAllRead());
    this.more.addEventListener("click", () => this.actions.loadMore());
    $("panel-retry").addEventListener("click", () => this.actions.retry());
    this.panel.addEventListener("keydown", (event) => this.#onKeydown(event));
    this.feed.addEventListener("click", (event) => this.#onFeedClick(event));
    document.addEventListener("pointerdown", (event) => {
      if (this.isOpen && !this.panel.contains(event.target) && !this.bell.contains(event.target)) {
        this.close({ returnFocus: false });
      }
    });
    // Infinite scroll: the sentinel below the list asks for the next page as it comes near.
    new IntersectionObserver(
      (entries) => {
        if (entries.some((entry) => entry.isIntersecting) && this.isOpen) this.#maybeLoadMore();
      },
      { root: this.scroller, rootMargin: "0px 0px 240px 0px" },
    ).observe($("sentinel"));
    keepFresh(this.feed);
    store.addEventListener("change", () => this.render());
    store.addEventListener("unread", () => this.renderBadge());
    this.render();
    this.renderBadge();
  }

  get isOpen() {
    return !this.panel.hidden;
  }

  open() {
    if (this.isOpen) return;
    this.panel.hidden = false;
    this.bell.setAttribute("aria-expanded", "true");
    this.#refreshTimes();
    const first = this.feed.querySelector("article");
    (first ?? $("panel-title")).focus();
  }

  close({ returnFocus = true } = {}) {
    if (!this.isOpen) return;
    const hadFocus = this.panel.contains(document.activeElement);
    this.panel.hidden = true;
    this.bell.setAttribute("aria-expanded", "false");
    if (returnFocus || hadFocus) this.bell.focus();
  }

  toggle() {
    if (this.isOpen) this.close();
    else this.open();
  }

  setLoading(loading) {
    this.#loading = loading;
    this.feed.setAttribute("aria-busy", String(loading));
    this.render();
  }

  showError(message) {
    this.error.hidden = !message;
    $("panel-error-text").textContent = message || "";
  }

  /** A line under the header while the connection is down; empty to hide it. */
  setNote(text) {
    this.note.hidden = !text;
    this.note.textContent = text || "";
  }

  renderBadge() {
    const count = this.store.unread;
    this.badge.hidden = count === 0;
    this.badge.textContent = count > 99 ? "99+" : String(count);
    this.bell.dataset.unread = String(count);
    this.bell.setAttribute(
      "aria-label",
      count === 0 ? "Notifications, none unread" : `Notifications, ${count} unread`,
    );
    this.summary.textContent = count === 0 ? "All read" : `${count} unread`;
    this.markAll.disabled = count === 0;
    document.title = count ? `(${count > 99 ? "99+" : count}) Notifications` : "Notifications";
    if (count > 0 && !matchMedia("(prefers-reduced-motion: reduce)").matches) {
      this.badge.classList.remove("bump");
      void this.badge.offsetWidth; // restart the animation
      this.badge.classList.add("bump");
    }
  }

  render() {
    const items = this.store.list();
    const keep = new Set(items.map((n) => n.id));
    for (const [id, node] of this.#nodes) {
      if (!keep.has(id)) {
        if (node.contains(document.activeElement)) this.#focusNeighbour(node);
        node.remove();
        this.#nodes.delete(id);
      }
    }
    let previous = null;
    items.forEach((notification, index) => {
      let node = this.#nodes.get(notification.id);
      if (!node) {
        node = this.#build(notification);
        this.#nodes.set(notification.id, node);
      } else {
        this.#update(node, notification);
      }
      node.setAttribute("aria-posinset", String(index + 1));
      node.setAttribute("aria-setsize", this.store.exhausted ? String(items.length) : "-1");
      const expectedNext = previous ? previous.nextElementSibling : this.feed.firstElementChild;
      if (expectedNext !== node) this.feed.insertBefore(node, expectedNext);
      previous = node;
    });
    const isEmpty = this.store.loaded && items.length === 0;
    this.empty.hidden = !isEmpty;
    this.more.hidden = this.store.exhausted || !this.store.loaded || this.#loading;
    this.status.hidden = !this.#loading;
  }

  #maybeLoadMore() {
    if (!this.#loading && this.store.loaded && !this.store.exhausted) this.actions.loadMore();
  }

  #build(notification) {
    const node = document.createElement("article");
    node.className = "item";
    node.tabIndex = 0;
    node.dataset.id = String(notification.id);
    const titleId = `n${notification.id}-title`;
    const bodyId = `n${notification.id}-body`;
    node.setAttribute("aria-labelledby", titleId);
    node.setAttribute("aria-describedby", bodyId);

    const figure = document.createElement("div");
    figure.className = "item-icon";
    const src = safeUrl(notification.icon);
    if (src) {
      const img = document.createElement("img");
      img.src = src;
      img.alt = "";
      img.width = 36;
      img.height = 36;
      img.loading = "lazy";
      img.referrerPolicy = "no-referrer";
      img.addEventListener("error", () => img.replaceWith(icon("bell")));
      figure.append(img);
    } else {
      figure.append(icon("bell"));
    }

    const main = document.createElement("div");
    main.className = "item-main";
    const title = document.createElement("h3");
    title.className = "item-title";
    title.id = titleId;
    const unreadLabel = document.createElement("span");
    unreadLabel.className = "visually-hidden unread-label";
    unreadLabel.textContent = "Unread: ";
    const href = safeUrl(notification.action_url);
    let label;
    if (href) {
      label = document.createElement("a");
      label.href = href;
      label.className = "item-link";
      if (!isSameOrigin(href)) {
        label.target = "_blank";
        label.rel = "noopener noreferrer";
      }
    } else {
      label = document.createElement("span");
    }
    label.classList.add("item-title-text");
    label.textContent = notification.title;
    title.append(unreadLabel, label);
    const body = document.createElement("p");
    body.className = "item-body";
    body.id = bodyId;
    body.textContent = notification.body || "";
    const meta = document.createElement("p");
    meta.className = "item-meta";
    const time = document.createElement("time");
    time.dateTime = notification.created_at;
    time.dataset.relative = "";
    time.title = fullDate(notification.created_at);
    time.textContent = timeAgo(notification.created_at);
    const type = document.createElement("span");
    type.className = "item-type";
    type.textContent = notification.type;
    meta.append(time, type);
    main.append(title, body, meta);

    const tools = document.createElement("div");
    tools.className = "item-actions";
    tools.append(
      this.#button("read", "check", `Mark “${notification.title}” as read`),
      this.#button("delete", "trash", `Delete “${notification.title}”`),
    );
    node.append(figure, main, tools);
    this.#update(node, notification);
    return node;
  }

  #button(action, iconName, label) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "icon-button";
    button.dataset.action = action;
    button.setAttribute("aria-label", label);
    button.title = action === "read" ? "Mark as read" : "Delete";
    button.append(icon(iconName));
    return button;
  }

  #update(node, notification) {
    const unread = !notification.read_at;
    node.classList.toggle("unread", unread);
    node.querySelector(".unread-label").hidden = !unread;
    node.querySelector('[data-action="read"]').hidden = !unread;
  }

  #refreshTimes() {
    for (const time of this.feed.querySelectorAll("time[data-relative]")) {
      time.textContent = timeAgo(time.dateTime);
    }
  }

  #onFeedClick(event) {
    const node = event.target.closest("article.item");
    if (!node) return;
    const id = Number(node.dataset.id);
    const button = event.target.closest("button[data-action]");
    if (button?.dataset.action === "delete") {
      this.actions.remove(id);
      return;
    }
    // The read button, the action link, or anywhere else on the item: it has been seen.
    this.actions.markRead(id);
  }

  #onKeydown(event) {
    if (event.key === "Escape") {
      event.preventDefault();
      this.close();
      return;
    }
    const article = event.target.closest?.("article.item");
    if (!article) return;
    const items = [...this.feed.querySelectorAll("article.item")];
    const index = items.indexOf(article);
    let next = null;
    switch (event.key) {
      case "ArrowDown":
      case "PageDown":
        next = items[index + 1];
        if (!next) this.#maybeLoadMore();
        break;
      case "ArrowUp":
      case "PageUp":
        next = items[index - 1];
        break;
      case "Home":
        next = items[0];
        break;
      case "End":
        next = items.at(-1);
        this.#maybeLoadMore();
        break;
      case "Enter":
      case " ":
        if (event.target !== article) return;
        event.preventDefault();
        this.actions.markRead(Number(article.dataset.id));
        if (event.key === "Enter") article.querySelector("a.item-link")?.click();
        return;
      case "Delete":
        if (event.target !== article) return;
        event.preventDefault();
        this.actions.remove(Number(article.dataset.id));
        return;
      default:
        return;
    }
    if (next && event.target === article) {
      event.preventDefault();
      next.focus();
    } else if (next) {
      // From a button inside an item, the arrows move between items too.
      event.preventDefault();
      next.focus();
    }
  }

  #focusNeighbour(node) {
    const target = node.nextElementSibling ?? node.previousElementSibling ?? $("panel-title");
    queueMicrotask(() => target.focus());
  }
}
