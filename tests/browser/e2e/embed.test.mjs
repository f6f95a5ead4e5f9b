// A marketplace's own page, on another origin, adds the widget with two lines of
// HTML (docs/embedding.md) and chats through it.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";

import { signedIn, startBrowser, startServer } from "./support.mjs";

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
  server = await startServer(["--allowed-origins", hostOrigin]);
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
  const context = await browser.newContext();
  const market = await context.newPage();
  const errors = [];
  market.on("pageerror", (e) => errors.push(e.message));
  await market.goto(`${hostOrigin}/`);
  await market.getByRole("button", { name: "Chat with Fred Test Freelancer" }).click();
  const dialog = market.getByRole("dialog", { name: "Chat with Test Freelancer" });
  await dialog.getByRole("textbox", { name: "Message" }).fill("Hello from the market's own page");
  await dialog.getByRole("textbox", { name: "Message" }).press("Enter");
  await dialog.getByText("Sent", { exact: true }).waitFor();
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
