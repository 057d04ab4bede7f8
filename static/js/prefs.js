// The preferences dialog: loaded from and saved to /api/v1/preferences, errors shown in place.

import { describeError } from "./api.js";

const $ = (id) => document.getElementById(id);
const FREQUENCIES = [
  ["immediate", "Immediately"],
  ["hourly", "Hourly digest"],
  ["daily", "Daily digest"],
  ["weekly", "Weekly digest"],
  ["never", "Never"],
];
const TYPE_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;

function option(value, label, selected) {
  const node = document.createElement("option");
  node.value = value;
  node.textContent = label;
  node.selected = selected;
  return node;
}

export class PreferencesDialog {
  /**
   * knownTypes(): the notification types seen in the inbox, offered as rows;
   * onSaved(preferences): after a successful save (what the inbox shows may have changed).
   */
  constructor({ api, knownTypes, onSaved }) {
    this.api = api;
    this.knownTypes = knownTypes;
    this.onSaved = onSaved;
    this.dialog = $("prefs-dialog");
    this.form = $("prefs-form");
    this.status = $("prefs-status");
    this.errors = $("prefs-errors");
    this.rows = $("type-rows");
    this.loaded = null;
    this.removed = new Set();

    const hours = $("pref-digest-hour");
    for (let hour = 0; hour < 24; hour += 1) {
      hours.append(option(String(hour), `${String(hour).padStart(2, "0")}:00`, hour === 9));
    }
    const zones = $("timezones");
    const names = Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : [];
    for (const name of ["UTC", ...names]) zones.append(option(name, name, false));
    for (const [value, label] of FREQUENCIES) {
      $("pref-digest").append(option(value, label, value === "immediate"));
    }

    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save();
    });
    $("prefs-cancel").addEventListener("click", () => this.dialog.close());
    $("type-add").addEventListener("click", () => this.#addTypeFromInput());
    $("type-new").addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        this.#addTypeFromInput();
      }
    });
    $("pref-email").addEventListener("change", () => this.#syncDisabled());
    $("pref-digest").addEventListener("change", () => this.#syncDisabled());
  }

  async open() {
    this.#setStatus("");
    this.#setErrors([]);
    this.removed.clear();
    this.form.setAttribute("aria-busy", "true");
    this.form.inert = true;
    this.dialog.showModal();
    try {
      this.#fill(await this.api.getPreferences());
      this.form.inert = false;
      $("pref-in-app").focus();
    } catch (error) {
      this.form.inert = false;
      this.#setErrors([`Could not load your preferences. ${describeError(error)}`]);
    } finally {
      this.form.removeAttribute("aria-busy");
    }
  }

  async save() {
    this.#setStatus("");
    this.#setErrors([]);
    const body = this.#collect();
    if (!body) return;
    const button = $("prefs-save");
    button.disabled = true;
    this.#setStatus("Saving…");
    try {
      const saved = await this.api.putPreferences(body);
      this.#fill(saved);
      this.#setStatus("Saved.");
      this.onSaved?.(saved);
    } catch (error) {
      this.#setStatus("");
      const lines = [describeError(error)];
      if (Array.isArray(error.details)) {
        for (const detail of error.details.slice(1, 5)) {
          const where = (detail.loc ?? []).filter((p) => p !== "body").join(".");
          lines.push(where ? `${where}: ${detail.msg}` : String(detail.msg));
        }
      }
      this.#setErrors(lines);
      this.#markInvalid(error.details);
    } finally {
      button.disabled = false;
    }
  }

  #fill(preferences) {
    this.loaded = preferences;
    this.removed.clear();
    $("pref-in-app").checked = Boolean(preferences.in_app_notifications);
    $("pref-email").checked = Boolean(preferences.email_notifications);
    $("pref-digest").value = preferences.digest_frequency ?? "immediate";
    $("pref-digest-hour").value = String(preferences.digest_hour ?? 9);
    $("pref-timezone").value = preferences.timezone ?? "UTC";
    $("timezone-hint").textContent = `This browser's time zone: ${Intl.DateTimeFormat().resolvedOptions().timeZone}.`;
    this.rows.replaceChildren();
    const settings = preferences.type_settings ?? {};
    const names = new Set([...Object.keys(settings), ...this.knownTypes()]);
    for (const name of [...names].sort()) this.#addRow(name, settings[name] ?? {});
    this.#syncEmpty();
    this.#syncDisabled();
    for (const node of this.form.querySelectorAll("[aria-invalid]")) {
      node.removeAttribute("aria-invalid");
    }
  }

  #addRow(name, setting) {
    const row = document.createElement("tr");
    row.dataset.type = name;
    const head = document.createElement("th");
    head.scope = "row";
    head.textContent = name;
    const safe = name.replace(/[^A-Za-z0-9_-]/g, "_");

    const inApp = document.createElement("select");
    inApp.id = `type-${safe}-in-app`;
    inApp.dataset.field = "in_app";
    inApp.setAttribute("aria-label", `In-app for ${name}`);
    inApp.append(
      option("", "Default", setting.in_app == null),
      option("on", "Show", setting.in_app === true),
      option("off", "Hide", setting.in_app === false),
    );
    const email = document.createElement("select");
    email.id = `type-${safe}-email`;
    email.dataset.field = "email";
    email.setAttribute("aria-label", `Email for ${name}`);
    email.append(option("", "Default", setting.email == null));
    for (const [value, label] of FREQUENCIES) {
      email.append(option(value, label, setting.email === value));
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "link-button";
    remove.textContent = "Reset";
    remove.setAttribute("aria-label", `Reset the settings for ${name}`);
    remove.addEventListener("click", () => {
      inApp.value = "";
      email.value = "";
    });

    const cells = [head, inApp, email, remove].map((child, index) => {
      if (index === 0) return child;
      const cell = document.createElement("td");
      cell.append(child);
      return cell;
    });
    row.append(...cells);
    this.rows.append(row);
  }

  #addTypeFromInput() {
    const input = $("type-new");
    const name = input.value.trim();
    if (!TYPE_NAME.test(name)) {
      input.setAttribute("aria-invalid", "true");
      this.#setErrors([
        "A type name has 1 to 64 letters, digits, dots, colons, dashes or underscores.",
      ]);
      input.focus();
      return;
    }
    input.removeAttribute("aria-invalid");
    this.#setErrors([]);
    if (!this.rows.querySelector(`tr[data-type="${CSS.escape(name)}"]`)) this.#addRow(name, {});
    input.value = "";
    this.#syncEmpty();
    this.rows.querySelector(`tr[data-type="${CSS.escape(name)}"] select`)?.focus();
  }

  #collect() {
    const type_settings = {};
    const previous = this.loaded?.type_settings ?? {};
    for (const row of this.rows.querySelectorAll("tr[data-type]")) {
      const name = row.dataset.type;
      // Keep what this form does not edit (email_if_unread_after): the server replaces per type.
      const setting = { ...(previous[name] ?? {}) };
      const inApp = row.querySelector('[data-field="in_app"]').value;
      const email = row.querySelector('[data-field="email"]').value;
      if (inApp) setting.in_app = inApp === "on";
      else delete setting.in_app;
      if (email) setting.email = email;
      else delete setting.email;
      const changed = JSON.stringify(setting) !== JSON.stringify(previous[name] ?? {});
      if (changed || name in previous) type_settings[name] = setting;
    }
    return {
      in_app_notifications: $("pref-in-app").checked,
      email_notifications: $("pref-email").checked,
      digest_frequency: $("pref-digest").value,
      digest_hour: Number($("pref-digest-hour").value),
      timezone: $("pref-timezone").value.trim(),
      type_settings,
    };
  }

  #markInvalid(details) {
    if (!Array.isArray(details)) return;
    const fields = {
      timezone: "pref-timezone",
      digest_hour: "pref-digest-hour",
      digest_frequency: "pref-digest",
      email_notifications: "pref-email",
      in_app_notifications: "pref-in-app",
    };
    let first = null;
    for (const detail of details) {
      const loc = (detail.loc ?? []).filter((p) => p !== "body");
      let node = fields[loc[0]] ? $(fields[loc[0]]) : null;
      if (loc[0] === "type_settings" && loc[1]) {
        const row = this.rows.querySelector(`tr[data-type="${CSS.escape(String(loc[1]))}"]`);
        node = row?.querySelector(`[data-field="${loc[2]}"]`) ?? row?.querySelector("select");
      }
      if (node) {
        node.setAttribute("aria-invalid", "true");
        node.setAttribute("aria-describedby", "prefs-errors");
        first ??= node;
      }
    }
    first?.focus();
  }

  #syncEmpty() {
    $("types-empty").hidden = this.rows.children.length > 0;
  }

  #syncDisabled() {
    const emailOn = $("pref-email").checked;
    $("pref-digest").disabled = !emailOn;
    const digest = $("pref-digest").value;
    $("pref-digest-hour").disabled = !emailOn || !["daily", "weekly"].includes(digest);
  }

  #setStatus(text) {
    this.status.textContent = text;
  }

  #setErrors(lines) {
    this.errors.hidden = lines.length === 0;
    this.errors.replaceChildren(
      ...lines.map((line) => {
        const item = document.createElement("li");
        item.textContent = line;
        return item;
      }),
    );
  }
}
