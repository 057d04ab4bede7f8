// The inbox as the page knows it: one entry per id (so nothing shows twice), newest first,
// and how far it is complete by `seq`.

export class NotificationStore extends EventTarget {
  #items = new Map();
  /**
   * Everything up to this `seq` is here, or reachable by scrolling, or can never come (seqs
   * muted by preferences or deleted leave holes). Sent as `last_seq` on connect and as
   * `after_seq` in a sync, so those bring back exactly what is missing.
   */
  lastSeq = 0;
  /** Seqs received above lastSeq, after a gap that a sync has not closed yet. */
  #ahead = new Set();
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
    const seq = notification.seq ?? 0;
    if (seq > this.lastSeq) {
      this.#ahead.add(seq);
      this.settle(this.lastSeq);
    }
    if (!silent) this.#changed();
    return !known;
  }

  /** True when `seq` would leave a gap after lastSeq: something before it may be missing. */
  isGap(seq) {
    return seq > this.lastSeq + 1;
  }

  /** Everything up to `seq` is accounted for (a sync's ack, a recovery, the newest REST page). */
  settle(seq) {
    this.lastSeq = Math.max(this.lastSeq, Number(seq) || 0);
    while (this.#ahead.has(this.lastSeq + 1)) this.lastSeq += 1;
    for (const s of this.#ahead) if (s <= this.lastSeq) this.#ahead.delete(s);
  }

  addPage(notifications, nextCursor) {
    const newest = !this.loaded; // the first page of a (re)load: the top of the list
    for (const notification of notifications) this.upsert(notification, { silent: true });
    if (newest && notifications.length) {
      this.settle(Math.max(...notifications.map((n) => n.seq ?? 0)));
    }
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
    this.#ahead.clear();
    this.setUnread(0);
  }

  #changed() {
    this.dispatchEvent(new Event("change"));
  }
}
