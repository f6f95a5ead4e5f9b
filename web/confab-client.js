// @ts-check
/**
 * Confab's JavaScript client: one WebSocket connection with everything a chat UI
 * needs around it (ordering and dedupe by seq, an outbox that retries with the same
 * `client_msg_id`, reconnecting with backoff and jitter, `sync` after every
 * reconnect, token refresh), and the original front end's service calls under
 * their original names. No DOM: it runs in a browser or in Node.
 *
 * ```js
 * import { ConfabClient } from "https://chat.example.com/assets/…/confab-client.js";
 * const client = new ConfabClient({ server: "https://chat.example.com", getToken: () => myToken() });
 * client.addEventListener("message", (e) => show(e.detail.message));
 * client.connect();
 * client.send({ recipientId: 5, text: "Hello!" });
 * ```
 *
 * Events (each a `CustomEvent`, its data in `detail`):
 * - `message` `{message}`: a message of any thread, new to this client (also your
 *   own, sent from another device), in seq order per thread;
 * - `ack` `{clientMsgId, message}`: one of your sends is stored;
 * - `failed` `{clientMsgId, error, detail}`: one of your sends was refused (retry it
 *   with `retry`, which reuses its key);
 * - `error` `{error, detail}`: any other refused frame;
 * - `typing` `{threadId, user}`, `read` `{threadId, userId, upToSeq}`;
 * - `state` `{state}`: `connecting`, `online`, `offline` or `closed`;
 * - `synced`: a `sync` finished: everything missed has been delivered.
 * @module confab-client
 */

/** @typedef {{id: number, username: string, full_name: string, role?: string}} UserRef */
/**
 * @typedef {object} Message
 * @property {string} id
 * @property {string} thread_id
 * @property {number} seq
 * @property {"user" | "system"} kind
 * @property {UserRef | null} sender
 * @property {UserRef | null} recipient
 * @property {string} text
 * @property {Record<string, unknown>} metadata
 * @property {string} timestamp
 * @property {boolean} is_read
 * @property {string | null} client_msg_id
 */
/**
 * @typedef {object} Pending
 * @property {string} clientMsgId
 * @property {string | undefined} threadId
 * @property {number | undefined} recipientId
 * @property {string} text
 * @property {"pending" | "failed"} state
 * @property {string | null} error
 */
/** @typedef {string | null | undefined | Promise<string | null | undefined>} TokenAnswer */

/**
 * Reconnect delays: exponential, capped, with "equal jitter" (half fixed, half
 * random) so that clients cut off together do not all come back together.
 */
export class Backoff {
  /** @param {{base?: number, max?: number, random?: () => number}} [options] */
  constructor({ base = 500, max = 30_000, random = Math.random } = {}) {
    this.base = base;
    this.max = max;
    this.random = random;
    this.attempt = 0;
  }

  /** The delay before the next attempt, in milliseconds. */
  next() {
    const cap = Math.min(this.max, this.base * 2 ** this.attempt);
    this.attempt += 1;
    return Math.round(cap / 2 + (this.random() * cap) / 2);
  }

  reset() {
    this.attempt = 0;
  }
}

/**
 * The last seq shown per thread: drops what was seen already, and names every
 * thread in the `sync` after a reconnect.
 */
export class SeqTracker {
  constructor() {
    /** @type {Map<string, number>} */
    this.last = new Map();
  }

  /**
   * Records a message; false when it was seen already (a duplicate).
   * @param {string} threadId
   * @param {number} seq
   */
  observe(threadId, seq) {
    const last = this.last.get(threadId) ?? 0;
    if (seq <= last) return false;
    this.last.set(threadId, seq);
    return true;
  }

  /**
   * Notes how far a thread is known (from a page of history) without a message.
   * @param {string} threadId
   * @param {number} seq
   */
  seen(threadId, seq) {
    if (seq > (this.last.get(threadId) ?? 0)) this.last.set(threadId, seq);
  }

  /** The `sync` frame that asks for everything after what was seen. */
  syncFrame() {
    return { type: "sync", threads: Object.fromEntries(this.last) };
  }
}

/** Sends waiting for their ack, by key; a failed one keeps its key for a retry. */
export class Outbox {
  /** @param {string} [prefix] keys are `<prefix>-<n>`: unique per page load */
  constructor(prefix = randomId()) {
    this.prefix = prefix;
    this.counter = 0;
    /** @type {Map<string, Pending>} */
    this.pending = new Map();
  }

  /**
   * @param {{threadId?: string, recipientId?: number, text: string}} send
   * @returns {Pending}
   */
  add({ threadId, recipientId, text }) {
    this.counter += 1;
    /** @type {Pending} */
    const entry = { clientMsgId: `${this.prefix}-${this.counter}`, threadId, recipientId, text, state: "pending", error: null };
    this.pending.set(entry.clientMsgId, entry);
    return entry;
  }

  /** @param {string} clientMsgId */
  acked(clientMsgId) {
    const entry = this.pending.get(clientMsgId);
    this.pending.delete(clientMsgId);
    return entry;
  }

  /** @param {string} clientMsgId @param {string} error */
  failed(clientMsgId, error) {
    const entry = this.pending.get(clientMsgId);
    if (entry) {
      entry.state = "failed";
      entry.error = error;
    }
    return entry;
  }

  /** @param {string} clientMsgId */
  retry(clientMsgId) {
    const entry = this.pending.get(clientMsgId);
    if (entry) {
      entry.state = "pending";
      entry.error = null;
    }
    return entry;
  }

  /** The frames to (re)send: every pending entry, oldest first, with its own key. */
  frames() {
    return [...this.pending.values()].filter((e) => e.state === "pending").map(frameOf);
  }
}

/** @param {Pending} entry */
export function frameOf(entry) {
  /** @type {Record<string, unknown>} */
  const frame = { type: "message", text: entry.text, client_msg_id: entry.clientMsgId };
  if (entry.threadId) frame.thread_id = entry.threadId;
  else frame.recipient_id = entry.recipientId;
  return frame;
}

/**
 * A JWT's claims (not verified: only the server can), or null.
 * @param {string} token
 * @returns {Record<string, unknown> | null}
 */
function claims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(globalThis.atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, "=")));
  } catch {
    return null;
  }
}

/** The `exp` of a JWT (seconds), or null. @param {string} token */
export function tokenExpiry(token) {
  const exp = claims(token)?.exp;
  return typeof exp === "number" ? exp : null;
}

/** The `iat` of a JWT (seconds), or null. @param {string} token */
export function tokenIssued(token) {
  const iat = claims(token)?.iat;
  return typeof iat === "number" ? iat : null;
}

/**
 * Half of a token's life as the server set it (`exp - iat`, in ms; 0 without
 * `iat`): a wait that no difference between the two clocks can shorten.
 * @param {string} token
 */
export function halfLife(token) {
  const exp = tokenExpiry(token);
  const iat = tokenIssued(token);
  return exp !== null && iat !== null ? Math.max(exp - iat, 0) * 500 : 0;
}

/**
 * How long until a token should be refreshed: at 80% of its life (12 minutes into
 * a 15-minute token), so a refresh never races the expiry, and a short-lived token
 * is not refreshed over and over. Without `issued`, a fifth of what is left before
 * the expiry (at most a minute) is kept in hand.
 * @param {number} exp seconds since the epoch
 * @param {number} now milliseconds since the epoch
 * @param {number | null} [issued] seconds since the epoch
 */
export function refreshDelay(exp, now, issued) {
  if (issued && exp > issued) return Math.max(0, issued * 1000 + (exp - issued) * 800 - now);
  const left = exp * 1000 - now;
  return Math.max(0, left - Math.min(60_000, left * 0.2));
}

function randomId() {
  const c = globalThis.crypto;
  return c && "randomUUID" in c ? c.randomUUID().slice(0, 8) : Math.random().toString(36).slice(2, 10);
}

/**
 * The WebSocket connection and its bookkeeping.
 * @extends EventTarget
 */
export class ConfabClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.server] the Confab server's origin (default: this page's)
   * @param {string} [options.token] an access token
   * @param {() => TokenAnswer} [options.getToken] called before every (re)connect
   * @param {typeof WebSocket} [options.WebSocket] for tests
   * @param {typeof fetch} [options.fetch] for tests
   * @param {Backoff} [options.backoff]
   */
  constructor({ server, token, getToken, WebSocket: Socket, fetch: fetcher, backoff } = {}) {
    super();
    this.fetch = fetcher ?? ((/** @type {RequestInfo} */ input, /** @type {RequestInit} */ init) => globalThis.fetch(input, init));
    this.server = (server ?? globalThis.location?.origin ?? "").replace(/\/$/, "");
    this.getToken = getToken ?? (() => token);
    this.Socket = Socket ?? globalThis.WebSocket;
    this.backoff = backoff ?? new Backoff();
    this.tracker = new SeqTracker();
    this.outbox = new Outbox();
    /** @type {WebSocket | null} */
    this.socket = null;
    this.state = "closed";
    this.wanted = false;
    this.everConnected = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
    /** @type {ReturnType<typeof setInterval> | null} */
    this.pinger = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.authTimer = null;
    this.onOnline = () => this.wanted && this.reconnectNow();
    this.onOffline = () => this.socket?.close();
  }

  /** Opens the connection (and keeps it open until `close`). */
  connect() {
    this.wanted = true;
    globalThis.addEventListener?.("online", this.onOnline);
    globalThis.addEventListener?.("offline", this.onOffline);
    if (!this.socket) void this.open();
  }

  /** Closes the connection for good. */
  close() {
    this.wanted = false;
    globalThis.removeEventListener?.("online", this.onOnline);
    globalThis.removeEventListener?.("offline", this.onOffline);
    if (this.timer) clearTimeout(this.timer);
    this.socket?.close(1000);
    this.setState("closed");
  }

  /**
   * Sends a message; it shows as pending until its `ack` (or `failed`).
   * @param {{threadId?: string, recipientId?: number, text: string}} send
   * @returns {Pending}
   */
  send(send) {
    const entry = this.outbox.add(send);
    this.write(frameOf(entry));
    return entry;
  }

  /** Sends a failed message again, under the same key (so it is never stored twice). @param {string} clientMsgId */
  retry(clientMsgId) {
    const entry = this.outbox.retry(clientMsgId);
    if (entry) this.write(frameOf(entry));
    return entry;
  }

  /** Asks for every message after what this client has seen. */
  sync() {
    this.write(this.tracker.syncFrame());
  }

  /** @param {string} threadId @param {number} [upToSeq] */
  markRead(threadId, upToSeq) {
    this.write(upToSeq === undefined ? { type: "read", thread_id: threadId } : { type: "read", thread_id: threadId, up_to_seq: upToSeq });
  }

  /** @param {string} threadId */
  typing(threadId) {
    this.write({ type: "typing", thread_id: threadId });
  }

  /** Notes a thread's messages loaded some other way (REST history). @param {string} threadId @param {number} seq */
  seen(threadId, seq) {
    this.tracker.seen(threadId, seq);
  }

  /** @param {Record<string, unknown>} frame */
  write(frame) {
    if (this.socket && this.socket.readyState === 1) this.socket.send(JSON.stringify(frame));
  }

  /** @param {string} state */
  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.emit("state", { state });
  }

  /** @param {string} type @param {unknown} [detail] */
  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  reconnectNow() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.backoff.reset();
    if (!this.socket) void this.open();
  }

  async open() {
    this.setState("connecting");
    let token;
    try {
      token = await this.getToken();
    } catch {
      token = null;
    }
    if (!this.wanted || this.socket) return;
    if (!token) return this.retryLater();
    const url = `${this.server.replace(/^http/, "ws")}/ws/chat/?token=${encodeURIComponent(token)}`;
    const socket = new this.Socket(url);
    this.socket = socket;
    let openedAt = 0;
    socket.onopen = async () => {
      openedAt = Date.now();
      // Threads this client never showed are known from their heads, so the sync
      // after a reconnect does not replay their whole history.
      if (this.everConnected) await this.seedUnknown(token);
      if (this.socket !== socket) return;
      this.setState("online");
      // Everything missed while away, then whatever is still waiting for its ack.
      if (this.everConnected || this.tracker.last.size > 0) this.sync();
      this.everConnected = true;
      for (const frame of this.outbox.frames()) this.write(frame);
      this.pinger = setInterval(() => this.write({ type: "ping" }), 25_000);
      this.renewBefore(token, socket);
    };
    socket.onmessage = (event) => this.receive(String(event.data));
    socket.onclose = (event) => {
      if (this.pinger) clearInterval(this.pinger);
      if (this.authTimer) clearTimeout(this.authTimer);
      this.socket = null;
      // Only a connection that held counts as a success: one closed at once (a bad
      // token, a full server) keeps backing off. One closed because its token ran
      // out (4401, a renewal that came too late) reconnects at once with a fresh one.
      if ((openedAt && Date.now() - openedAt > 5000) || event?.code === 4401) this.backoff.reset();
      if (this.wanted) this.retryLater();
    };
  }

  /**
   * The server closes a socket (4401) when its token expires: at the token's
   * refresh point, a fresh one is sent as `auth`, so the socket lives on without a
   * reconnect. A provider that has no fresher token yet is asked again shortly.
   * @param {string} token the one the socket lives on
   * @param {WebSocket} socket
   * @param {boolean} [again] after a renewal: wait at least half the token's life,
   *   so a clock that runs ahead of the server's (every token looking old) cannot
   *   make a loop
   */
  renewBefore(token, socket, again = false) {
    if (this.authTimer) clearTimeout(this.authTimer);
    const exp = tokenExpiry(token);
    if (exp === null) return;
    const delay = Math.max(refreshDelay(exp, Date.now(), tokenIssued(token)), again ? halfLife(token) : 0);
    this.authTimer = setTimeout(async () => {
      let fresh = null;
      try {
        fresh = await this.getToken();
      } catch {
        fresh = null;
      }
      if (this.socket !== socket) return;
      if (fresh && fresh !== token) {
        this.write({ type: "auth", token: fresh });
        this.renewBefore(fresh, socket, true);
      } else if (exp * 1000 > Date.now()) {
        this.authTimer = setTimeout(() => this.renewBefore(token, socket), 5000);
      }
    }, Math.max(delay, 0));
  }

  /**
   * Notes the head of each recent thread the client has not seen (one page of the
   * inbox): only its new messages matter to it.
   * @param {string} token
   */
  async seedUnknown(token) {
    try {
      const res = await this.fetch(`${this.server}/api/chat/threads/?limit=200`, {
        headers: { authorization: `Bearer ${token}` },
        signal: AbortSignal.timeout(5000),
      });
      if (!res.ok) return;
      const page = await res.json();
      for (const thread of page.results ?? []) {
        if (thread.last_message && !this.tracker.last.has(thread.id)) this.tracker.seen(thread.id, thread.last_message.seq);
      }
    } catch {
      // Without it the sync replays more, which is slower but loses nothing.
    }
  }

  retryLater() {
    this.setState("offline");
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.wanted && !this.socket) void this.open();
    }, this.backoff.next());
  }

  /** @param {string} text */
  receive(text) {
    let event;
    try {
      event = JSON.parse(text);
    } catch {
      return;
    }
    switch (event.type) {
      case "new_message":
      case "message_ack": {
        /** @type {Message} */
        const message = event.message;
        const fresh = this.tracker.observe(message.thread_id, message.seq);
        // One of this client's sends that reached it from the store (a sync after a
        // lost ack): it is that send's ack. Keys are unique to this page.
        const key = event.type === "message_ack" ? event.client_msg_id : message.client_msg_id;
        const pending = Boolean(key) && this.outbox.pending.has(key);
        // An ack for a send already answered (its copy came from the store first).
        if (event.type === "message_ack" && key && !pending && !fresh) break;
        if (key && (event.type === "message_ack" || pending)) {
          this.outbox.acked(key);
          this.emit("ack", { clientMsgId: key, message });
        } else if (fresh) {
          this.emit("message", { message });
        }
        break;
      }
      case "error":
        if (event.client_msg_id && this.outbox.pending.has(event.client_msg_id)) {
          this.outbox.failed(event.client_msg_id, event.error);
          this.emit("failed", { clientMsgId: event.client_msg_id, error: event.error, detail: event.detail });
        } else {
          this.emit("error", { error: event.error, detail: event.detail });
        }
        break;
      case "typing":
        this.emit("typing", { threadId: event.thread_id, user: event.user });
        break;
      case "read":
        this.emit("read", { threadId: event.thread_id, userId: event.user_id, upToSeq: event.up_to_seq });
        break;
      case "synced":
        this.emit("synced");
        break;
      default:
    }
  }
}

/**
 * Where the service calls go and how they authenticate; set once by the page.
 * @type {{server: string, getToken: () => TokenAnswer}}
 */
export const service = { server: globalThis.location?.origin ?? "", getToken: () => null };

/** @param {{server?: string, getToken?: () => TokenAnswer}} options */
export function configure({ server, getToken }) {
  if (server !== undefined) service.server = server.replace(/\/$/, "");
  if (getToken) service.getToken = getToken;
}

/** A REST error with the contract's code. */
export class ApiError extends Error {
  /** @param {number} status @param {string} code @param {string} detail */
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

/**
 * Calls the REST API as the signed-in user (`anonymous`: without a token, for the
 * calls that get one: waiting for a token there would wait for itself).
 * @param {string} path
 * @param {{method?: string, body?: unknown, anonymous?: boolean}} [options]
 */
export async function request(path, { method = "GET", body, anonymous = false } = {}) {
  const token = anonymous ? null : await service.getToken();
  /** @type {Record<string, string>} */
  const headers = { accept: "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(`${service.server}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, data?.error ?? "unavailable", data?.detail ?? `the server answered ${response.status}`);
  }
  return data;
}

/** Hire Me (the original `hireFreelancer`): the direct thread with a freelancer. @param {number} freelancerId */
export function hireFreelancer(freelancerId) {
  return request("/api/chat/hire-freelancer/", { method: "POST", body: { freelancer_id: freelancerId } });
}

/** The original `createProposalChat`: the job thread with the job's client. @param {number} jobId */
export function createProposalChat(jobId) {
  return request("/api/chat/proposal-chat/", { method: "POST", body: { job_id: jobId } });
}

/** The original `getMessages`: the direct conversation with a user, oldest first. @param {number} userId */
export function getMessages(userId) {
  return request(`/api/messaging/messages/?user_id=${encodeURIComponent(userId)}`);
}

/** The original `getUnreadMessagesCount`: messages from that user not yet read. @param {number} userId */
export function getUnreadMessagesCount(userId) {
  return request(`/api/messaging/messages/user/${encodeURIComponent(userId)}/unread/`);
}
