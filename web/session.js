// @ts-check
/**
 * The signed-in session of the web app: tokens in localStorage (so a reload or a
 * new tab stays signed in), refreshed before they expire, one tab at a time.
 * @module session
 */

import { ApiError, configure, refreshDelay, request, tokenExpiry } from "./confab-client.js";

/** @typedef {import("./confab-client.js").UserRef} UserRef */

const KEY = "confab.session";

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

/**
 * An access token that is good for at least half a minute, refreshed if needed;
 * null when signed out.
 * @returns {Promise<string | null>}
 */
export async function getToken() {
  const stored = load();
  if (!stored) return null;
  const exp = tokenExpiry(stored.access);
  if (exp && exp * 1000 - Date.now() > 30_000) return stored.access;
  return refresh();
}

/** Refreshes the pair once, across tabs (a refresh token is spent when used). */
function refresh() {
  refreshing ??= withLock(async () => {
    const stored = load();
    if (!stored) return null;
    const exp = tokenExpiry(stored.access);
    // Another tab may have refreshed while this one waited for the lock.
    if (exp && exp * 1000 - Date.now() > 30_000) return stored.access;
    try {
      const pair = await request("/api/auth/token/refresh/", { method: "POST", body: { refresh: stored.refresh } });
      save({ ...stored, access: pair.access, refresh: pair.refresh });
      schedule();
      return pair.access;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        save(null);
        changed();
      }
      return null;
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
  if (!exp) return;
  timer = setTimeout(() => void refresh(), refreshDelay(exp, Date.now()));
}

/**
 * @param {string} username
 * @param {string} password
 */
export async function signIn(username, password) {
  const answer = await request("/api/auth/token/", { method: "POST", body: { username, password } });
  save({ access: answer.access, refresh: answer.refresh, user: answer.user });
  schedule();
  changed();
  return answer.user;
}

/**
 * @param {{username: string, password: string, full_name: string, role: string}} account
 */
export async function signUp(account) {
  await request("/api/auth/register/", { method: "POST", body: account });
  return signIn(account.username, account.password);
}

export function signOut() {
  save(null);
  if (timer) clearTimeout(timer);
  changed();
}

configure({ getToken });
schedule();
globalThis.addEventListener?.("storage", (event) => {
  if (event.key === KEY) {
    schedule();
    changed();
  }
});
