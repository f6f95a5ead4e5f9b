// @ts-check
/**
 * The signed-in session of the web app: tokens in localStorage (so a reload or a
 * new tab stays signed in), refreshed before they expire, one tab at a time.
 * @module session
 */

import { ApiError, configure, halfLife, refreshDelay, request, tokenExpiry, tokenIssued } from "./confab-client.js";

/** @typedef {import("./confab-client.js").UserRef} UserRef */

const KEY = "confab.session";
/** How long a refresh keeps the cross-tab lock after saving (see `refresh`). */
const SETTLE_MS = 500;

/**
 * @typedef {object} Stored
 * @property {string} access
 * @property {string} refresh
 * @property {UserRef & {role: string}} user
 */

/** @returns {Stored | null} */
function load() {
  try {
    const raw = localStorage.getItem(KEY);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

/** @param {Stored | null} value */
function save(value) {
  if (value) localStorage.setItem(KEY, JSON.stringify(value));
  else localStorage.removeItem(KEY);
}

/** @type {Promise<string | null> | null} */
let refreshing = null;
/** @type {ReturnType<typeof setTimeout> | null} */
let timer = null;
/** @type {Set<() => void>} */
const listeners = new Set();

/** The signed-in user, or null. */
export function currentUser() {
  return load()?.user ?? null;
}

/** @param {() => void} listener called when the user signs in or out (in any tab) */
export function onChange(listener) {
  listeners.add(listener);
}

function changed() {
  for (const listener of listeners) listener();
}

/** Whether an access token is still short of the point where it is refreshed. @param {string} token */
function fresh(token) {
  const exp = tokenExpiry(token);
  return exp !== null && refreshDelay(exp, Date.now(), tokenIssued(token)) > 0;
}

/** Whether an access token is still good for a request that starts now. @param {string} token */
function usable(token) {
  const exp = tokenExpiry(token);
  return exp !== null && exp * 1000 - Date.now() > 2000;
}

/**
 * An access token good for a request now; null when signed out. Refreshing is the
 * timer's job (at 80% of the token's life): a token that still works is used as it
 * is, so loading a page does not start a refresh that a navigation right after it
 * would cut off (the server spends a refresh token when it answers, and an answer
 * the page never read would leave it presenting a spent one, which signs it out).
 * @returns {Promise<string | null>}
 */
export async function getToken() {
  const stored = load();
  if (!stored) return null;
  if (usable(stored.access)) return stored.access;
  return refresh();
}

/** Refreshes the pair once, across tabs (a refresh token is spent when used). */
function refresh() {
  refreshing ??= withLock(async () => {
    const stored = load();
    if (!stored) return null;
    // Another tab may have refreshed while this one waited for the lock.
    if (fresh(stored.access)) return stored.access;
    try {
      const pair = await request("/api/auth/token/refresh/", { method: "POST", body: { refresh: stored.refresh }, anonymous: true });
      // A server that rotates refresh tokens sends a new one; one that does not, none.
      save({ ...stored, access: pair.access, refresh: pair.refresh ?? stored.refresh });
      schedule();
      // Hold the lock a moment: another tab's localStorage sees this write a little
      // later, and a tab that took the lock at once could read the spent refresh
      // token and present it again, which signs the whole session out.
      await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
      return pair.access;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        save(null);
        changed();
        return null;
      }
      // The server is busy or unreachable: keep the token while it lasts; the next
      // call tries the refresh again.
      return stored.access;
    }
  }).finally(() => {
    refreshing = null;
  });
  return refreshing;
}

/**
 * @template T
 * @param {() => Promise<T>} work
 * @returns {Promise<T>}
 */
function withLock(work) {
  const locks = globalThis.navigator?.locks;
  return locks ? /** @type {Promise<T>} */ (locks.request("confab-refresh", work)) : work();
}

/** Refreshes a little before the access token expires, so nothing waits for it. */
function schedule() {
  if (timer) clearTimeout(timer);
  const stored = load();
  const exp = stored && tokenExpiry(stored.access);
  if (!stored || !exp) return;
  // At least half the token's life: a clock running ahead of the server's makes
  // every token look old, and the timer must not turn that into a loop of refreshes.
  const delay = Math.max(refreshDelay(exp, Date.now(), tokenIssued(stored.access)), halfLife(stored.access));
  timer = setTimeout(() => void refresh(), delay);
}

/**
 * @param {string} username
 * @param {string} password
 */
export async function signIn(username, password) {
  const answer = await request("/api/auth/token/", { method: "POST", body: { username, password }, anonymous: true });
  save({ access: answer.access, refresh: answer.refresh, user: answer.user });
  schedule();
  changed();
  return answer.user;
}

/**
 * @param {{username: string, password: string, full_name: string, role: string}} account
 */
export async function signUp(account) {
  await request("/api/auth/register/", { method: "POST", body: account, anonymous: true });
  return signIn(account.username, account.password);
}

export function signOut() {
  save(null);
  if (timer) clearTimeout(timer);
  changed();
}

configure({ getToken });
schedule();
/** Who was signed in when this tab last looked, to tell a sign-in or sign-out in
 * another tab (which redraws this one) from a refreshed token (which does not). */
let lastUser = currentUser()?.id ?? null;
onChange(() => {
  lastUser = currentUser()?.id ?? null;
});
globalThis.addEventListener?.("storage", (event) => {
  if (event.key !== KEY) return;
  schedule();
  if ((currentUser()?.id ?? null) !== lastUser) changed();
});
