// The inbox as the page knows it: one entry per id (so nothing shows twice), newest first.

export class NotificationStore extends EventTarget {
  #items = new Map();
  /** The highest `seq` seen; sent as `last_seq` so a reconnect brings back what was missed. */
  lastSeq = 0;
  unread = 0;
  nextCursor = null;
  /** False until the first page arrived; true once the cursor API has nothing more. */
  loaded = false;
  exhausted = false;

  get size() {
    return this.#items.size;
  }

  get(id) {
    return this.#items.get(id);
  }

  /** Newest first: `seq` follows commit order for one user. */
  list() {
    return [...this.#items.values()].sort((a, b) => b.seq - a.seq || b.id - a.id);
  }

  /** Adds or refreshes one notification; returns true when it was not known before. */
  upsert(notification, { silent = false } = {}) {
    const known = this.#items.get(notification.id);
    this.#items.set(notification.id, known ? { ...known, ...notification } : notification);
    this.lastSeq = Math.max(this.lastSeq, notification.seq ?? 0);
    if (!silent) this.#changed();
    return !known;
  }

  addPage(notifications, nextCursor) {
    for (const notification of notifications) this.upsert(notification, { silent: true });
    this.nextCursor = nextCursor;
    this.exhausted = !nextCursor;
    this.loaded = true;
    this.#changed();
  }

  /** Returns the ids that were unread here and are read now. */
  markRead(ids, readAt = new Date().toISOString()) {
    const changed = [];
    for (const id of ids) {
      const item = this.#items.get(id);
      if (item && !item.read_at) {
        this.#items.set(id, { ...item, read_at: readAt });
        changed.push(id);
      }
    }
    if (changed.length) this.#changed();
    return changed;
  }

  markUnread(ids) {
    for (const id of ids) {
      const item = this.#items.get(id);
      if (item) this.#items.set(id, { ...item, read_at: null });
    }
    this.#changed();
  }

  markAllRead(readAt = new Date().toISOString()) {
    const changed = [];
    for (const [id, item] of this.#items) {
      if (!item.read_at) {
        this.#items.set(id, { ...item, read_at: readAt });
        changed.push(id);
      }
    }
    if (changed.length) this.#changed();
    return changed;
  }

  remove(id) {
    const item = this.#items.get(id);
    if (item && this.#items.delete(id)) this.#changed();
    return item ?? null;
  }

  setUnread(count) {
    const next = Math.max(0, Number(count) || 0);
    if (next === this.unread) return;
    this.unread = next;
    this.dispatchEvent(new Event("unread"));
  }

  /** Forget the list (not lastSeq: it only ever grows) before refetching it from page one. */
  reset() {
    this.#items.clear();
    this.nextCursor = null;
    this.loaded = false;
    this.exhausted = false;
    this.#changed();
  }

  clear() {
    this.reset();
    this.lastSeq = 0;
    this.setUnread(0);
  }

  #changed() {
    this.dispatchEvent(new Event("change"));
  }
}
