// @ts-check
/**
 * What every chat view of a page shares: one connection, who "me" is, and the
 * total unread count. Views subscribe to the client's events.
 * @module chat
 */

import { ConfabClient, request, service } from "./confab-client.js";

/** @typedef {import("./confab-client.js").UserRef} UserRef */

/** @type {ConfabClient | null} */
let client = null;
/** @type {Promise<UserRef & {role: string}> | null} */
let self = null;

/** The page's one connection, opened on first use. */
export function chatClient() {
  if (!client) {
    client = new ConfabClient({ server: service.server, getToken: () => service.getToken() });
    client.connect();
  }
  return client;
}

/** Closes the connection (on sign-out). */
export function disconnect() {
  client?.close();
  client = null;
  self = null;
}

/** The signed-in user, as the server knows them. */
export function me() {
  self ??= request("/api/auth/me/").catch((e) => {
    self = null;
    throw e;
  });
  return self;
}

/**
 * Builds an element. Strings become text nodes, never HTML: user text is always
 * shown as typed.
 * @param {string} tag
 * @param {Record<string, string | number | boolean | ((e: Event) => void) | undefined | null>} [attrs]
 * @param {...(Node | string | number | null | undefined | false)} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (typeof value === "function") el.addEventListener(name.replace(/^on/, ""), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
  return el;
}

/**
 * A short message at the corner of the screen.
 * @param {string} text
 * @param {"error" | "info"} [kind]
 */
export function toast(text, kind = "error") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = h("div", { id: "toasts", class: "confab-toasts", role: "status", "aria-live": "assertive" });
    document.body.append(box);
  }
  const item = h("div", { class: `toast ${kind}` }, text);
  box.append(item);
  setTimeout(() => item.remove(), 6000);
}

/** @param {string} timestamp */
export function clock(timestamp) {
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}
