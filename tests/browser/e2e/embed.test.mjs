// A marketplace's own page, on another origin, adds the widget with two lines of
// HTML (docs/embedding.md) and chats through it.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { createServer } from "node:http";
import { after, before, test } from "node:test";

import { signedIn, startBrowser, startServer } from "./support.mjs";

// The marketplace's own keys (docs/integration.md).
const HOST_SECRET = "e2e-host-secret-e2e-host-secret-0000000";
const SERVER_KEY = "e2e-server-key-e2e-server-key-000000000";

let host;
let hostOrigin;
let server;
let browser;
let page = "";

before(async () => {
  host = createServer((_, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(page);
  });
  await new Promise((done) => host.listen(0, "127.0.0.1", done));
  // localhost and 127.0.0.1 are different origins to a browser.
  hostOrigin = `http://localhost:${host.address().port}`;
  server = await startServer([
    "--allowed-origins", hostOrigin,
    "--host-jwt-secret", HOST_SECRET, "--host-jwt-issuer", hostOrigin, "--server-api-key", SERVER_KEY,
  ]);
  browser = await startBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  host?.close();
});

/** @param {string} username */
async function signIn(username) {
  const res = await fetch(`${server.base}/api/auth/token/`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password: "testpass123" }),
  });
  assert.equal(res.status, 200);
  return res.json();
}

/** The market's page (`page`) in a browser context of its own, with its page errors. */
async function openMarket() {
  const context = await browser.newContext();
  const market = await context.newPage();
  const errors = [];
  market.on("pageerror", (e) => errors.push(e.message));
  await market.goto(`${hostOrigin}/`);
  return { context, market, errors };
}

/** Sends `text` from the widget's chat window and waits until it is stored. */
async function send(dialog, text) {
  await dialog.getByRole("textbox", { name: "Message" }).fill(text);
  await dialog.getByRole("textbox", { name: "Message" }).press("Enter");
  await dialog.getByText("Sent", { exact: true }).waitFor();
}

test("a page on another origin embeds the chat button with two lines and chats through it", async () => {
  const client = await signIn("testclient");
  const fred = (await signIn("testfreelancer")).user;
  // The host's backend hands its page a token; the page tells the widget how to get it.
  page = `<!doctype html><html><head><title>Acme market</title>
<script>window.confabToken = () => ${JSON.stringify(client.access)};</script>
<script type="module" src="${server.base}/widget.js"></script>
</head><body><h1>Acme market</h1><p>Fred builds bakeries' websites.</p>
<confab-chat-button user-id="${fred.id}" username="${fred.username}" full-name="${fred.full_name}" button-text="Chat with Fred" variant="success" size="large"></confab-chat-button>
</body></html>`;
  const { context, market, errors } = await openMarket();
  await market.getByRole("button", { name: "Chat with Fred Test Freelancer" }).click();
  const dialog = market.getByRole("dialog", { name: "Chat with Test Freelancer" });
  await send(dialog, "Hello from the market's own page");
  assert.equal(await market.getByRole("heading", { name: "Acme market" }).isVisible(), true, "the host page keeps its own look");

  const other = await signedIn(browser, server.base, "testfreelancer");
  await other.page.getByRole("link", { name: /Test Client/ }).first().click();
  await other.page.getByRole("log").getByText("Hello from the market's own page").waitFor();
  await other.page.getByRole("textbox", { name: "Message" }).fill("Hi! Happy to help.");
  await other.page.keyboard.press("Enter");
  await dialog.getByText("Hi! Happy to help.").waitFor();
  assert.deepEqual(errors, []);
  await context.close();
  await other.context.close();
});

/** A token the marketplace's backend signs for one of its users (HS256). */
function hostToken(sub, name, role) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const claims = { sub, name, role, iss: hostOrigin, exp: Math.floor(Date.now() / 1000) + 900 };
  const signed = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${signed}.${createHmac("sha256", HOST_SECRET).update(signed).digest("base64url")}`;
}

/** The marketplace backend's call to Confab's server API. */
async function putUser(externalId, body) {
  const res = await fetch(`${server.base}/api/server/users/${externalId}/`, {
    method: "PUT",
    headers: { authorization: `Bearer ${SERVER_KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 201);
  return (await res.json()).user;
}

test("a marketplace's own users chat through the widget with tokens its backend signs", async () => {
  await putUser("acme-7", { full_name: "Ada Buyer", role: "client" });
  const seller = await putUser("acme-8", { full_name: "Sam Seller", role: "freelancer", username: "sam" });
  page = `<!doctype html><html><head><title>Acme market</title>
<script>window.confabToken = () => ${JSON.stringify(hostToken("acme-7", "Ada Buyer", "client"))};</script>
<script type="module" src="${server.base}/widget.js"></script>
</head><body><h1>Acme market</h1>
<confab-chat-button user-id="${seller.id}" username="sam" full-name="Sam Seller" button-text="Ask Sam"></confab-chat-button>
</body></html>`;
  const { context, market, errors } = await openMarket();
  await market.getByRole("button", { name: "Ask Sam Sam Seller" }).click();
  const dialog = market.getByRole("dialog", { name: "Chat with Sam Seller" });
  await send(dialog, "Is the bike still for sale?");
  // The seller, signed in by the marketplace too, sees it and answers over REST.
  const sam = { authorization: `Bearer ${hostToken("acme-8", "Sam Seller", "freelancer")}`, "content-type": "application/json" };
  const inbox = await (await fetch(`${server.base}/api/chat/threads/`, { headers: sam })).json();
  const thread = inbox.results[0];
  assert.equal(thread.last_message.text, "Is the bike still for sale?");
  assert.deepEqual(thread.participants.map((p) => p.external_id).sort(), ["acme-7", "acme-8"]);
  const reply = await fetch(`${server.base}/api/chat/threads/${thread.id}/messages/`, {
    method: "POST", headers: sam, body: JSON.stringify({ text: "Yes, it is!" }),
  });
  assert.equal(reply.status, 201);
  await dialog.getByText("Yes, it is!").waitFor();
  assert.deepEqual(errors, []);
  await context.close();
});
