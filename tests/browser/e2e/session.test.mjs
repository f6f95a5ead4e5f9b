// A signed-in session outlives its access token: refreshed before it expires,
// across a reload and into a new tab.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { signedIn, startBrowser, startServer } from "./support.mjs";

let server;
let browser;

before(async () => {
  // Access tokens that live 6 seconds: refreshed after about 5.
  server = await startServer(["--access-token-ttl", "6"]);
  browser = await startBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const access = (page) => page.evaluate(() => JSON.parse(localStorage.getItem("confab.session") ?? "{}").access);

test("the access token is refreshed before it expires, and the session survives a reload and a new tab", async () => {
  const { context, page } = await signedIn(browser, server.base, "testclient");
  const first = await access(page);
  await page.waitForFunction((token) => JSON.parse(localStorage.getItem("confab.session") ?? "{}").access !== token, first, { timeout: 10_000 });
  await new Promise((resolve) => setTimeout(resolve, 5000));
  // Well past the first token's life: pages still load their data.
  await page.getByRole("link", { name: "Freelancers" }).click();
  await page.getByRole("link", { name: "Test Freelancer" }).waitFor();
  await page.reload();
  await page.getByRole("link", { name: "Test Freelancer" }).waitFor();
  await page.getByText("Connected").waitFor();
  const tab = await context.newPage();
  await tab.goto("/dashboard/inbox");
  await tab.getByRole("heading", { name: "Inbox" }).waitFor();
  assert.notEqual(await access(page), first);

  // Both tabs keep refreshing; the first tab's live chat must survive the other's refreshes.
  const token = await access(page);
  const freelancer = await (await fetch(`${server.base}/api/auth/token/`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: "testfreelancer", password: "testpass123" }),
  })).json();
  const hired = await (await fetch(`${server.base}/api/chat/hire-freelancer/`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ freelancer_id: freelancer.user.id }),
  })).json();
  await page.goto(hired.redirect_url);
  await page.getByRole("log").getByText("Client Test Client started a conversation with you").waitFor();
  await new Promise((resolve) => setTimeout(resolve, 8000));
  const sent = await fetch(`${server.base}/api/chat/threads/${hired.thread.id}/messages/`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${freelancer.access}` },
    body: JSON.stringify({ text: "still live after the refreshes" }),
  });
  assert.equal(sent.status, 201);
  await page.getByRole("log").getByText("still live after the refreshes").waitFor({ timeout: 10_000 });
  assert.deepEqual(page.errors, []);
  await context.close();
});
