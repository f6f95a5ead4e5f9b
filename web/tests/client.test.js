// Unit tests of the client module's logic, under Node's own test runner:
// `node --test web/tests/` (scripts/test.sh runs them).
import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff, ConfabClient, Outbox, SeqTracker, halfLife, refreshDelay, tokenExpiry, tokenIssued } from "../confab-client.js";

test("backoff grows, is capped, keeps its jitter within the upper half, and resets", () => {
  let r = 0;
  const backoff = new Backoff({ base: 100, max: 1000, random: () => r });
  assert.deepEqual([backoff.next(), backoff.next(), backoff.next(), backoff.next(), backoff.next()], [50, 100, 200, 400, 500]);
  r = 1;
  assert.equal(backoff.next(), 1000, "capped, at most the cap");
  backoff.reset();
  assert.equal(backoff.next(), 100);
  const spread = new Set(Array.from({ length: 50 }, () => new Backoff({ base: 1000 }).next()));
  assert.ok(spread.size > 10, "clients cut off together come back at different times");
});

test("the tracker drops what it has seen and names every thread in a sync", () => {
  const tracker = new SeqTracker();
  assert.equal(tracker.observe("t1", 1), true);
  assert.equal(tracker.observe("t1", 2), true);
  assert.equal(tracker.observe("t1", 2), false, "a duplicate");
  assert.equal(tracker.observe("t1", 1), false, "an older one");
  tracker.seen("t2", 7);
  tracker.seen("t2", 3);
  assert.deepEqual(tracker.syncFrame(), { type: "sync", threads: { t1: 2, t2: 7 } });
});

test("the outbox gives each send its own key and a retry the same one", () => {
  const outbox = new Outbox("p");
  const a = outbox.add({ threadId: "t", text: "hello" });
  const b = outbox.add({ recipientId: 5, text: "hi" });
  assert.deepEqual([a.clientMsgId, b.clientMsgId], ["p-1", "p-2"]);
  outbox.failed(a.clientMsgId, "unavailable");
  assert.deepEqual(outbox.frames(), [{ type: "message", text: "hi", client_msg_id: "p-2", recipient_id: 5 }]);
  outbox.retry(a.clientMsgId);
  assert.deepEqual(outbox.frames().map((f) => f.client_msg_id), ["p-1", "p-2"]);
  outbox.acked("p-1");
  assert.deepEqual(outbox.frames().map((f) => f.client_msg_id), ["p-2"]);
});

test("a token is refreshed at 80% of its life, never in a loop, and at once when expired", () => {
  const token = `x.${Buffer.from(JSON.stringify({ exp: 2000, iat: 1100 })).toString("base64url")}.y`;
  assert.equal(tokenExpiry(token), 2000);
  assert.equal(tokenIssued(token), 1100);
  assert.equal(tokenExpiry("garbage"), null);
  assert.equal(refreshDelay(1000 + 900, 1000 * 1000, 1000), 720_000, "15 minutes: refreshed after 12");
  assert.equal(refreshDelay(1000 + 5, 1000 * 1000, 1000), 4000, "a 5-second token: after 4, not at once");
  assert.equal(refreshDelay(1000 + 900, 1000 * 1000 + 800_000, 1000), 0, "past its refresh point: now");
  assert.equal(refreshDelay(1300, 1000 * 1000), 240_000, "without iat: a minute before the expiry");
  assert.equal(refreshDelay(1010, 1000 * 1000), 8000, "without iat, short: a fifth kept in hand");
  assert.equal(refreshDelay(100, 200_000), 0, "expired: now");
  assert.equal(halfLife(token), 450_000, "half of exp - iat, whatever the local clock says");
  assert.equal(halfLife("garbage"), 0);
});

/** A WebSocket stand-in the test drives by hand. */
class FakeSocket {
  /** @type {FakeSocket[]} */
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    /** @type {any[]} */
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
    this.onclose?.({});
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  /** @param {unknown} event */
  receive(event) {
    this.onmessage?.({ data: JSON.stringify(event) });
  }
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));
const message = (thread, seq, extra = {}) => ({ id: `m${seq}`, thread_id: thread, seq, kind: "user", sender: { id: 1 }, text: `m${seq}`, ...extra });

test("the client delivers each message once, retries with the same key, and syncs after a reconnect", async () => {
  FakeSocket.all = [];
  // The inbox the client reads after a reconnect: thread u, never shown, is at seq 9.
  const fetch = async () => ({ ok: true, json: async () => ({ results: [{ id: "u", last_message: { seq: 9 } }, { id: "t", last_message: { seq: 1 } }] }) });
  const client = new ConfabClient({ server: "http://chat.test", getToken: () => "tok", WebSocket: /** @type {any} */ (FakeSocket), fetch: /** @type {any} */ (fetch), backoff: new Backoff({ base: 1, max: 2 }) });
  const seen = [];
  const acks = [];
  const failures = [];
  const states = [];
  client.addEventListener("message", (e) => seen.push(e.detail.message.seq));
  client.addEventListener("ack", (e) => acks.push(e.detail.clientMsgId));
  client.addEventListener("failed", (e) => failures.push(e.detail));
  client.addEventListener("state", (e) => states.push(e.detail.state));
  client.connect();
  await tick();
  const first = FakeSocket.all[0];
  assert.equal(first.url, "ws://chat.test/ws/chat/?token=tok");
  first.open();
  assert.deepEqual(first.sent, [], "a first connection with nothing seen asks for no sync");

  first.receive({ type: "new_message", message: message("t", 1) });
  first.receive({ type: "new_message", message: message("t", 2) });
  first.receive({ type: "new_message", message: message("t", 2) });
  assert.deepEqual(seen, [1, 2], "the repeat was dropped");

  const sent = client.send({ threadId: "t", text: "mine" });
  assert.equal(first.sent.at(-1).client_msg_id, sent.clientMsgId);
  first.receive({ type: "error", error: "unavailable", detail: "down", client_msg_id: sent.clientMsgId });
  assert.equal(failures[0].error, "unavailable");
  client.retry(sent.clientMsgId);
  assert.equal(first.sent.at(-1).client_msg_id, sent.clientMsgId, "a retry reuses its key");

  // The connection drops before the ack; the client comes back by itself.
  first.close();
  assert.equal(client.state, "offline");
  await tick();
  const second = FakeSocket.all[1];
  assert.ok(second, "reconnected after its backoff");
  second.open();
  await tick();
  assert.deepEqual(second.sent[0], { type: "sync", threads: { t: 2, u: 9 } }, "after what it saw, and from the head of a thread it never showed");
  assert.equal(second.sent[1].client_msg_id, sent.clientMsgId, "and sends what still waits for its ack, same key");
  second.receive({ type: "new_message", message: message("t", 3) });
  // The retried send was stored before the drop: the replay brings it, as its ack.
  second.receive({ type: "new_message", message: message("t", 4, { client_msg_id: sent.clientMsgId }) });
  second.receive({ type: "message_ack", client_msg_id: sent.clientMsgId, message: message("t", 4) });
  second.receive({ type: "synced" });
  assert.deepEqual(seen, [1, 2, 3]);
  assert.deepEqual(acks, [sent.clientMsgId], "the replayed copy was the ack; the late one is dropped");
  assert.equal(client.outbox.frames().length, 0, "nothing left to send");
  assert.deepEqual(states, ["connecting", "online", "offline", "connecting", "online"]);
  client.close();
  assert.equal(client.state, "closed");
});

test("a client without a token waits and tries again instead of connecting", async () => {
  FakeSocket.all = [];
  let token = null;
  const client = new ConfabClient({ getToken: () => token, WebSocket: /** @type {any} */ (FakeSocket), backoff: new Backoff({ base: 1, max: 2 }), server: "https://chat.test" });
  client.connect();
  await tick();
  assert.equal(FakeSocket.all.length, 0);
  token = "later";
  await tick();
  await tick();
  assert.equal(FakeSocket.all[0]?.url, "wss://chat.test/ws/chat/?token=later");
  client.close();
});

test("before its token expires, the connection is renewed with an auth frame, not a reconnect", async () => {
  FakeSocket.all = [];
  const jwt = (/** @type {number} */ ttl, /** @type {string} */ name) => {
    const now = Math.floor(Date.now() / 1000);
    return `x.${Buffer.from(JSON.stringify({ exp: now + ttl, iat: now, name })).toString("base64url")}.y`;
  };
  const first = jwt(1, "first");
  const fresh = jwt(600, "fresh");
  let calls = 0;
  const client = new ConfabClient({ server: "http://chat.test", getToken: () => (++calls === 1 ? first : fresh), WebSocket: /** @type {any} */ (FakeSocket), backoff: new Backoff({ base: 1, max: 2 }) });
  client.connect();
  await tick();
  FakeSocket.all[0].open();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.deepEqual(FakeSocket.all[0].sent.filter((f) => f.type === "auth"), [{ type: "auth", token: fresh }]);
  assert.equal(FakeSocket.all.length, 1, "no reconnect");
  client.close();
});
