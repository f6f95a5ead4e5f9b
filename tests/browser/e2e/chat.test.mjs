// End to end in Debian's Chromium: two people, each in a browser context of their
// own, signed in through the UI, against the real server with the demo data.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { screenshot, signedIn, startBrowser, startServer } from "./support.mjs";

let server;
let browser;
let client;
let freelancer;

before(async () => {
  // Room for the history test's burst of sends.
  server = await startServer(["--rate-limit", "200", "--rate-burst", "500"]);
  browser = await startBrowser();
  client = await signedIn(browser, server.base, "testclient");
  freelancer = await signedIn(browser, server.base, "testfreelancer");
});

after(async () => {
  for (const who of [client, freelancer]) assert.deepEqual(who?.page.errors ?? [], [], "no script errors");
  await browser?.close();
  await server?.stop();
});

/** @param {import("playwright-core").Page} page */
const conversation = (page) => page.getByRole("log");

test("the client hires from the profile, both see the system message and chat both ways live", async () => {
  const { page } = client;
  await page.goto("/freelancers");
  await page.getByRole("link", { name: "Test Freelancer" }).click();
  await page.waitForURL(/\/freelancers\/\d+$/);
  const hire = page.getByRole("button", { name: "Hire Me" });
  await hire.click();
  await page.waitForURL(/\/dashboard\/inbox\/[0-9a-f-]+$/);
  const threadUrl = page.url();
  await conversation(page).getByText("Client Test Client started a conversation with you").waitFor();

  // The freelancer sees the new thread in the inbox, live, with its unread badge.
  const other = freelancer.page;
  await other.goto("/dashboard/inbox");
  const row = other.getByRole("link", { name: /Test Client/ });
  await row.waitFor();
  await row.getByLabel("1 unread").waitFor();
  await row.click();
  await conversation(other).getByText("Client Test Client started a conversation with you").waitFor();

  await page.getByRole("textbox", { name: "Message" }).fill("Hello Fred, are you free next week?");
  await page.keyboard.press("Enter");
  await conversation(other).getByText("Hello Fred, are you free next week?").waitFor();
  // The freelancer has the conversation open: the client sees it was seen.
  await conversation(page).getByText("Seen").waitFor();

  // Typing shows on the other side.
  await other.getByRole("textbox", { name: "Message" }).pressSequentially("Yes");
  await page.getByText("Test Freelancer is typing…").waitFor();
  await other.getByRole("textbox", { name: "Message" }).fill("Yes!\nHow many hours?");
  await other.keyboard.press("Shift+Enter");
  await other.getByRole("textbox", { name: "Message" }).press("Enter");
  await conversation(page).getByText("How many hours?").waitFor();
  assert.equal(new URL(threadUrl).pathname, new URL(page.url()).pathname);
  await screenshot(page, "desktop-inbox");
});

test("the page title counts unread messages while the client is on another page", async () => {
  const { page } = client;
  await page.goto("/jobs");
  await freelancer.page.getByRole("textbox", { name: "Message" }).fill("Ping from the freelancer");
  await freelancer.page.keyboard.press("Enter");
  await page.waitForFunction(() => document.title.startsWith("(1) "), null, { timeout: 10_000 });
  await page.getByRole("link", { name: /Inbox/ }).getByLabel("1 unread").waitFor();
});

test("a message with markup in it shows as text, never as HTML", async () => {
  const { page } = freelancer;
  const evil = `<img src=x onerror="document.title='pwned'"> <b>bold</b>`;
  await page.getByRole("textbox", { name: "Message" }).fill(evil);
  await page.keyboard.press("Enter");
  await client.page.goto("/dashboard/inbox");
  await client.page.getByRole("link", { name: /Test Freelancer/ }).click();
  await conversation(client.page).getByText(evil).waitFor();
  assert.equal(await conversation(client.page).locator("img, b").count(), 0);
  assert.ok(!(await client.page.title()).includes("pwned"));
});

test("a client that goes offline while three messages arrive shows all three when it is back, without a reload", async () => {
  const { page, context } = client;
  await conversation(page).getByText("Ping from the freelancer").waitFor();
  const marker = await page.evaluate(() => performance.timeOrigin);
  await context.setOffline(true);
  await page.getByText("Offline, reconnecting…").waitFor();
  for (const n of [1, 2, 3]) {
    await freelancer.page.getByRole("textbox", { name: "Message" }).fill(`While you were away ${n}`);
    await freelancer.page.keyboard.press("Enter");
    await conversation(freelancer.page).getByText(`While you were away ${n}`).waitFor();
  }
  await context.setOffline(false);
  for (const n of [1, 2, 3]) await conversation(page).getByText(`While you were away ${n}`).waitFor({ timeout: 15_000 });
  assert.equal(await page.evaluate(() => performance.timeOrigin), marker, "the page was not reloaded");
  const texts = await conversation(page).locator(".message .text").allTextContents();
  const away = texts.filter((t) => t.startsWith("While you were away"));
  assert.deepEqual(away, ["While you were away 1", "While you were away 2", "While you were away 3"], "each once, in order");
});

test("a client posts a job, a freelancer proposes, and both see the job thread with its system message", async () => {
  const title = "Landing page for a bakery";
  await client.page.goto("/my-jobs");
  await client.page.getByLabel("Title").fill(title);
  await client.page.getByLabel("Description").fill("One page, mobile first, by Friday.");
  await client.page.getByRole("button", { name: "Post job" }).click();
  await client.page.getByRole("list", { name: "My jobs" }).getByRole("link", { name: title }).waitFor();

  const { page } = freelancer;
  await page.goto("/jobs");
  await page.getByRole("list", { name: "Jobs" }).getByRole("link", { name: title }).click();
  await page.getByLabel("Cover letter").fill("I have baked and built before; see my profile.");
  await page.getByLabel("Bid (USD)").fill("450");
  await page.getByRole("button", { name: "Submit proposal" }).click();
  await page.waitForURL(/\/dashboard\/inbox\/[0-9a-f-]+$/);
  const text = `Freelancer Test Freelancer has submitted a proposal for job: ${title}`;
  await conversation(page).getByText(text).waitFor();
  await page.getByText(`About: ${title}`).waitFor();
  const jobThread = new URL(page.url()).pathname;

  await client.page.goto("/dashboard/inbox");
  const row = client.page.getByRole("link", { name: new RegExp(title) });
  await row.waitFor();
  await row.click();
  assert.equal(new URL(client.page.url()).pathname, jobThread, "the same thread, not the pair's direct one");
  await conversation(client.page).getByText(text).waitFor();
});

test("the chat button on /chat-demo opens a chat window whose message the other user receives", async () => {
  const { page } = client;
  await page.goto("/#/chat-demo");
  await page.waitForURL("**/chat-demo");
  const buttons = page.getByRole("table").getByRole("button", { name: "Message Test Freelancer" });
  await buttons.nth(14).waitFor();
  assert.equal(await buttons.count(), 15, "every variant (5) in every size (3)");
  await buttons.first().click();
  const dialog = page.getByRole("dialog", { name: "Chat with Test Freelancer" });
  await dialog.waitFor();
  await dialog.getByRole("textbox", { name: "Message" }).fill("Sent from the chat window");
  await dialog.getByRole("textbox", { name: "Message" }).press("Enter");
  await dialog.getByText("Sent", { exact: true }).waitFor();
  await freelancer.page.goto("/dashboard/inbox");
  await freelancer.page.getByRole("link", { name: /Test Client/ }).first().click();
  await conversation(freelancer.page).getByText("Sent from the chat window").waitFor();
  await dialog.getByRole("button", { name: "Close chat" }).click();
  await dialog.waitFor({ state: "detached" });
});

test("a send the server refuses says why and offers a retry; older history loads on scrolling up", async () => {
  const { page } = client;
  await page.goto("/dashboard/inbox");
  await page.getByRole("link", { name: /Test Freelancer/ }).first().click();
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill("x".repeat(4001));
  await box.press("Enter");
  await conversation(page).getByText("Not sent: too long.").waitFor();
  await conversation(page).getByRole("button", { name: "Retry sending this message" }).waitFor();

  // Forty more messages from the freelancer: the page holds the newest 30, then more as it scrolls up.
  const token = await freelancer.page.evaluate(() => JSON.parse(localStorage.getItem("confab.session") ?? "{}").access);
  const thread = new URL(page.url()).pathname.split("/").pop();
  for (let n = 1; n <= 40; n++) {
    const res = await fetch(`${server.base}/api/chat/threads/${thread}/messages/`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ text: `history ${n}` }),
    });
    assert.equal(res.status, 201);
  }
  await page.reload();
  await conversation(page).getByText("history 40").waitFor();
  const before = await conversation(page).locator(".message").count();
  assert.equal(before, 30, "only the newest page is in the page");
  await conversation(page).evaluate((list) => (list.scrollTop = 0));
  await page.waitForFunction(() => document.querySelectorAll("[role=log] .message").length > 30);
  await conversation(page).getByText("history 1", { exact: true }).waitFor({ state: "attached" });
});

test("on a phone-sized screen the inbox is one column and a conversation opens without sideways scrolling", async () => {
  const phone = await signedIn(browser, server.base, "testclient", { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const { page } = phone;
  await page.getByRole("link", { name: /Test Freelancer/ }).first().click();
  await conversation(page).getByText("history 40").waitFor();
  assert.equal(await page.getByRole("navigation", { name: "Inbox" }).isVisible(), false, "the list gives way to the conversation");
  await page.getByRole("link", { name: "← All conversations" }).waitFor();
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `no sideways scrolling (page is ${width}px wide)`);
  await screenshot(page, "phone-conversation");
  await page.getByRole("link", { name: "← All conversations" }).click();
  await page.getByRole("navigation", { name: "Inbox" }).waitFor();
  await screenshot(page, "phone-inbox");
  assert.deepEqual(page.errors, []);
  await phone.context.close();
});
