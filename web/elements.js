// @ts-check
/**
 * The reusable chat parts as custom elements, so any page (this app's, or a
 * marketplace's in React, Vue or plain HTML) can use them:
 * - `<confab-conversation thread-id recipient-id recipient-name>`: one thread's
 *   history (older pages load as you scroll up), live messages, optimistic sending
 *   with retry, typing, and "Seen" receipts;
 * - `<confab-chat-window open user-id username full-name>`: that conversation with
 *   one user in a dialog (the original `ChatModal`); fires `close`;
 * - `<confab-chat-button user-id username full-name button-text variant size>`:
 *   opens a chat window (the original `ChatButton`).
 * @module elements
 */

import { ApiError, request } from "./confab-client.js";
import { chatClient, clock, h, me, toast } from "./chat.js";

/** @typedef {import("./confab-client.js").Message} Message */

/** Messages per page of history. */
const PAGE = 30;
/** How long a typing indicator stays without a new `typing` event. */
const TYPING_SHOWN_MS = 4000;
/** At most one `read` frame this often. */
const READ_EVERY_MS = 500;
/** At most one `typing` frame this often. */
const TYPING_EVERY_MS = 2500;

/** Why a send failed, in words. @param {string} code */
function failure(code) {
  const words = /** @type {Record<string, string>} */ ({
    payload_too_large: "too long",
    rate_limited: "sending too fast",
    conflict: "conflicts with an earlier message",
    unavailable: "the server is unavailable",
    not_found: "this conversation is not available",
    validation_failed: "not accepted",
  });
  return words[code] ?? code;
}

export class ConfabConversation extends HTMLElement {
  constructor() {
    super();
    /** @type {Map<number, HTMLElement>} rows of stored messages by seq */
    this.rows = new Map();
    /** @type {Map<string, HTMLElement>} rows of my pending sends by key */
    this.pendingRows = new Map();
    this.oldest = 0;
    this.newest = 0;
    this.hasOlder = false;
    this.loadingOlder = false;
    /** @type {number | null} */
    this.myId = null;
    this.seenUpTo = 0;
    /** The seq this view last reported read. */
    this.readUpTo = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.readTimer = null;
    this.readAgain = false;
    this.lastTypingSent = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.typingTimer = null;
    /** @type {Array<[string, (e: Event) => void]>} */
    this.handlers = [];
  }

  get threadId() {
    return this.getAttribute("thread-id") ?? "";
  }

  get recipientId() {
    const id = Number(this.getAttribute("recipient-id"));
    return Number.isFinite(id) && id > 0 ? id : undefined;
  }

  connectedCallback() {
    // A view starts afresh each time it is put in a page.
    this.rows = new Map();
    this.pendingRows = new Map();
    this.oldest = 0;
    this.newest = 0;
    this.seenUpTo = 0;
    this.readUpTo = 0;
    const name = this.getAttribute("recipient-name") ?? "";
    this.list = h("ol", { class: "messages", role: "log", "aria-label": name ? `Conversation with ${name}` : "Conversation", tabindex: "0" });
    this.list.addEventListener("scroll", () => this.maybeLoadOlder());
    this.typingLine = h("p", { class: "typing", "aria-live": "polite" });
    this.box = /** @type {HTMLTextAreaElement} */ (h("textarea", { "aria-label": "Message", placeholder: "Write a message…", rows: "2" }));
    this.box.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      }
    });
    this.box.addEventListener("input", () => this.sendTyping());
    const form = h("form", { class: "composer", "aria-label": "Send a message" }, this.box, h("button", { type: "submit", class: "btn primary" }, "Send"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.replaceChildren(this.list, this.typingLine, form);
    const client = chatClient();
    this.client = client;
    this.listen(client, "message", (e) => this.onMessage(/** @type {CustomEvent} */ (e).detail.message));
    this.listen(client, "ack", (e) => this.onAck(/** @type {CustomEvent} */ (e).detail));
    this.listen(client, "failed", (e) => this.onFailed(/** @type {CustomEvent} */ (e).detail));
    this.listen(client, "typing", (e) => this.onTyping(/** @type {CustomEvent} */ (e).detail));
    this.listen(client, "read", (e) => this.onRead(/** @type {CustomEvent} */ (e).detail));
    this.listen(client, "synced", () => this.markRead());
    document.addEventListener("visibilitychange", this.onVisible);
    this.ready = this.start();
  }

  disconnectedCallback() {
    const client = this.client;
    if (!client) return;
    // What was shown was read, even if the view goes before its read was sent.
    if (this.readTimer) {
      clearTimeout(this.readTimer);
      this.readTimer = null;
      if (this.readAgain && this.threadId && this.newest > this.readUpTo && client.state === "online") {
        client.markRead(this.threadId, this.newest);
      }
    }
    for (const [type, handler] of this.handlers) client.removeEventListener(type, handler);
    this.handlers = [];
    document.removeEventListener("visibilitychange", this.onVisible);
  }

  onVisible = () => {
    if (document.visibilityState === "visible") this.markRead();
  };

  /** @param {EventTarget} target @param {string} type @param {(e: Event) => void} handler */
  listen(target, type, handler) {
    target.addEventListener(type, handler);
    this.handlers.push([type, handler]);
  }

  async start() {
    try {
      this.myId = (await me()).id;
      /** @type {{results: Message[], has_more: boolean}} */
      let page;
      if (this.threadId) {
        page = await request(`/api/chat/threads/${encodeURIComponent(this.threadId)}/messages/?limit=${PAGE}`);
        const thread = await request(`/api/chat/threads/${encodeURIComponent(this.threadId)}/`);
        const other = thread.participants.find((/** @type {{id: number}} */ p) => p.id !== this.myId);
        if (other && !this.recipientId) this.setAttribute("recipient-id", String(other.id));
      } else if (this.recipientId) {
        page = await request(`/api/messaging/messages/?user_id=${this.recipientId}&limit=${PAGE}`);
        const first = page.results[0];
        // The seed route answers the pair's direct thread: that is this view's.
        if (first && !this.threadId) this.setAttribute("thread-id", first.thread_id);
      } else {
        return;
      }
      this.hasOlder = page.has_more;
      for (const message of page.results) this.place(message);
      this.scrollToEnd();
      this.markRead();
    } catch (e) {
      this.list?.append(h("li", { class: "notice" }, `Could not load the conversation: ${e instanceof Error ? e.message : e}`));
    }
  }

  async maybeLoadOlder() {
    if (!this.list || this.list.scrollTop > 40 || !this.hasOlder || this.loadingOlder || !this.threadId) return;
    this.loadingOlder = true;
    try {
      const page = await request(`/api/chat/threads/${encodeURIComponent(this.threadId)}/messages/?before_seq=${this.oldest}&limit=${PAGE}`);
      const before = this.list.scrollHeight;
      for (const message of page.results) this.place(message);
      this.hasOlder = page.has_more;
      this.list.scrollTop += this.list.scrollHeight - before;
    } catch (e) {
      toast(`Could not load older messages: ${e instanceof Error ? e.message : e}`);
    } finally {
      this.loadingOlder = false;
    }
  }

  /** Puts a stored message in its place by seq (never twice). @param {Message} message */
  place(message) {
    if (!this.list || this.rows.has(message.seq)) return;
    chatClient().seen(message.thread_id, message.seq);
    const row = this.row(message);
    this.rows.set(message.seq, row);
    const later = [...this.rows.keys()].filter((s) => s > message.seq).sort((a, b) => a - b)[0];
    const anchor = later === undefined ? this.firstPending() : this.rows.get(later);
    this.list.insertBefore(row, anchor ?? null);
    this.oldest = this.oldest === 0 ? message.seq : Math.min(this.oldest, message.seq);
    this.newest = Math.max(this.newest, message.seq);
    if (message.sender?.id === this.myId && message.is_read) this.showSeen(message.seq);
  }

  firstPending() {
    return this.pendingRows.values().next().value ?? null;
  }

  /** @param {Message} message */
  row(message) {
    if (message.kind === "system") {
      return h("li", { class: "message system", "data-seq": message.seq }, h("p", { class: "text" }, message.text));
    }
    const mine = message.sender?.id === this.myId;
    return h(
      "li",
      { class: `message ${mine ? "mine" : "theirs"}`, "data-seq": message.seq },
      mine ? null : h("span", { class: "who" }, message.sender?.full_name ?? ""),
      h("p", { class: "text" }, message.text),
      h("span", { class: "meta" }, h("time", { datetime: message.timestamp }, clock(message.timestamp)), mine ? h("span", { class: "status" }, "Sent") : null),
    );
  }

  scrollToEnd() {
    if (this.list) this.list.scrollTop = this.list.scrollHeight;
  }

  /** @param {Message} message */
  async belongs(message) {
    await this.ready;
    if (this.threadId) return message.thread_id === this.threadId;
    // A chat window opened before the pair's direct thread existed: a message
    // between the two users may be its first, if its thread is the direct one.
    const other = this.recipientId;
    const ids = [message.sender?.id, message.recipient?.id];
    if (other === undefined || !ids.includes(other) || !ids.includes(this.myId ?? -1)) return false;
    const thread = await request(`/api/chat/threads/${encodeURIComponent(message.thread_id)}/`).catch(() => null);
    if (thread?.kind !== "direct" || this.threadId) return message.thread_id === this.threadId;
    this.setAttribute("thread-id", message.thread_id);
    return true;
  }

  /** @param {Message} message */
  async onMessage(message) {
    if (!(await this.belongs(message))) return;
    // One of my sends that came back from the store before its ack: it replaces its row.
    const pending = message.client_msg_id ? this.pendingRows.get(message.client_msg_id) : undefined;
    if (pending) {
      pending.remove();
      this.pendingRows.delete(/** @type {string} */ (message.client_msg_id));
    }
    const atEnd = this.list ? this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 80 : true;
    this.place(message);
    if (message.sender?.id !== this.myId) this.hideTyping();
    if (atEnd) this.scrollToEnd();
    this.markRead();
  }

  /** @param {{clientMsgId: string, message: Message}} detail */
  async onAck({ clientMsgId, message }) {
    const pending = this.pendingRows.get(clientMsgId);
    if (pending) {
      this.pendingRows.delete(clientMsgId);
      pending.remove();
      // My own send from this view: its thread is this view's (the pair's direct one).
      if (!this.threadId) this.setAttribute("thread-id", message.thread_id);
    } else if (!(await this.belongs(message))) {
      // Another view of this page sent it; show it here too if it is this thread's.
      return;
    }
    this.place(message);
    this.scrollToEnd();
  }

  /** @param {{clientMsgId: string, error: string, detail: string}} detail */
  onFailed({ clientMsgId, error, detail }) {
    const row = this.pendingRows.get(clientMsgId);
    if (!row) return;
    row.classList.add("failed");
    const status = row.querySelector(".status");
    const retry = h("button", { type: "button", class: "btn small", "aria-label": "Retry sending this message" }, "Retry");
    retry.addEventListener("click", () => {
      row.classList.remove("failed");
      status?.replaceChildren("Sending…");
      chatClient().retry(clientMsgId);
    });
    status?.replaceChildren(h("span", { title: detail }, `Not sent: ${failure(error)}. `), retry);
  }

  /** @param {{threadId: string, user: {id: number, full_name: string}}} detail */
  onTyping({ threadId, user }) {
    if (threadId !== this.threadId || user.id === this.myId || !this.typingLine) return;
    this.typingLine.textContent = `${user.full_name} is typing…`;
    if (this.typingTimer) clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => this.hideTyping(), TYPING_SHOWN_MS);
  }

  hideTyping() {
    if (this.typingLine) this.typingLine.textContent = "";
  }

  /** @param {{threadId: string, userId: number, upToSeq: number}} detail */
  onRead({ threadId, userId, upToSeq }) {
    if (threadId === this.threadId && userId !== this.myId) this.showSeen(upToSeq);
  }

  /** "Seen" under my latest message the other person has read. @param {number} upTo */
  showSeen(upTo) {
    if (upTo <= this.seenUpTo) return;
    this.seenUpTo = upTo;
    const mine = [...this.rows.entries()].filter(([seq, row]) => seq <= upTo && row.classList.contains("mine"));
    const latest = mine.sort((a, b) => b[0] - a[0])[0];
    for (const old of this.querySelectorAll(".status.seen")) {
      old.classList.remove("seen");
      old.textContent = "Sent";
    }
    const status = latest?.[1].querySelector(".status");
    if (status) {
      status.classList.add("seen");
      status.textContent = "Seen";
    }
  }

  /** Tells the server: at once, then at most every half second while messages pour
   * in (read frames count against the sender's rate limit). */
  markRead() {
    if (this.readTimer) {
      this.readAgain = true;
      return;
    }
    this.sendRead();
    this.readTimer = setTimeout(() => {
      this.readTimer = null;
      if (this.readAgain) {
        this.readAgain = false;
        this.markRead();
      }
    }, READ_EVERY_MS);
  }

  sendRead() {
    const client = chatClient();
    if (!this.threadId || this.newest <= this.readUpTo || document.visibilityState !== "visible" || !this.isConnected) return;
    // Offline, the frame would be lost: the `synced` after reconnecting comes back here.
    if (client.state !== "online") return;
    this.readUpTo = this.newest;
    client.markRead(this.threadId, this.newest);
    this.dispatchEvent(new CustomEvent("read", { bubbles: true, detail: { threadId: this.threadId } }));
  }

  sendTyping() {
    const now = Date.now();
    if (!this.threadId || now - this.lastTypingSent < TYPING_EVERY_MS) return;
    this.lastTypingSent = now;
    chatClient().typing(this.threadId);
  }

  submit() {
    if (!this.box || !this.list) return;
    const text = this.box.value;
    if (!text.trim()) return;
    const client = chatClient();
    const send = this.threadId ? { threadId: this.threadId, text } : { recipientId: this.recipientId, text };
    const entry = client.send(send);
    const row = h(
      "li",
      { class: "message mine pending", "data-key": entry.clientMsgId },
      h("p", { class: "text" }, text),
      h("span", { class: "meta" }, h("span", { class: "status" }, client.state === "online" ? "Sending…" : "Waiting for connection…")),
    );
    this.pendingRows.set(entry.clientMsgId, row);
    this.list.append(row);
    this.box.value = "";
    this.scrollToEnd();
  }
}

/** A user given by attributes, as the original `ChatButton`'s `user` prop. @param {HTMLElement} el */
function userOf(el) {
  return {
    id: Number(el.getAttribute("user-id")),
    username: el.getAttribute("username") ?? "",
    fullName: el.getAttribute("full-name") ?? el.getAttribute("username") ?? "",
  };
}

export class ConfabChatWindow extends HTMLElement {
  static get observedAttributes() {
    return ["open"];
  }

  connectedCallback() {
    const user = userOf(this);
    const title = `Chat with ${user.fullName}`;
    const titleId = `confab-chat-title-${user.id}`;
    const close = h("button", { type: "button", class: "btn close", "aria-label": "Close chat" }, "×");
    close.addEventListener("click", () => this.close());
    this.dialog = /** @type {HTMLDialogElement} */ (
      h(
        "dialog",
        { class: "chat-window", "aria-labelledby": titleId },
        h("header", {}, h("h2", { id: titleId }, title), close),
        h("confab-conversation", { "recipient-id": user.id, "recipient-name": user.fullName }),
      )
    );
    this.dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      this.close();
    });
    this.replaceChildren(this.dialog);
    this.sync();
  }

  attributeChangedCallback() {
    this.sync();
  }

  sync() {
    if (!this.dialog) return;
    if (this.hasAttribute("open") && !this.dialog.open) {
      this.dialog.showModal();
      this.dialog.querySelector("textarea")?.focus();
    } else if (!this.hasAttribute("open") && this.dialog.open) {
      this.dialog.close();
    }
  }

  close() {
    this.removeAttribute("open");
    this.dispatchEvent(new CustomEvent("close"));
  }
}

const VARIANTS = ["primary", "secondary", "success", "dark", "outline"];

export class ConfabChatButton extends HTMLElement {
  connectedCallback() {
    const user = userOf(this);
    const variant = VARIANTS.includes(this.getAttribute("variant") ?? "") ? this.getAttribute("variant") : "primary";
    const size = this.getAttribute("size") === "small" || this.getAttribute("size") === "large" ? this.getAttribute("size") : "";
    const text = this.getAttribute("button-text") ?? "Message";
    const button = h("button", { type: "button", class: `btn ${variant} ${size}`, "aria-label": `${text} ${user.fullName}`.trim() }, text);
    button.addEventListener("click", () => this.openChat());
    this.replaceChildren(button);
  }

  async openChat() {
    const user = userOf(this);
    try {
      const self = await me();
      if (self.id === user.id) throw new ApiError(400, "validation_failed", "this is you");
    } catch (e) {
      toast(e instanceof ApiError && e.status === 401 ? "Sign in to send messages" : `Cannot open the chat: ${e instanceof Error ? e.message : e}`);
      return;
    }
    let win = /** @type {ConfabChatWindow | null} */ (document.querySelector(`confab-chat-window[user-id="${user.id}"]`));
    if (!win) {
      win = /** @type {ConfabChatWindow} */ (h("confab-chat-window", { "user-id": user.id, username: user.username, "full-name": user.fullName }));
      win.addEventListener("close", () => win?.remove());
      document.body.append(win);
    }
    win.setAttribute("open", "");
  }
}

customElements.get("confab-conversation") || customElements.define("confab-conversation", ConfabConversation);
customElements.get("confab-chat-window") || customElements.define("confab-chat-window", ConfabChatWindow);
customElements.get("confab-chat-button") || customElements.define("confab-chat-button", ConfabChatButton);
