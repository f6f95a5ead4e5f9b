// Starts the real server (the binary the Rust suite already built) on a free port
// with the demo marketplace, and Debian's Chromium through playwright-core.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const root = resolve(fileURLToPath(import.meta.url), "../../../..");

/** The server binary: `CONFAB_BIN`, or the debug build `cargo test` made. */
const binary = process.env.CONFAB_BIN ?? join(root, "target/debug/confab");

/** @param {string[]} [extra] more flags for `confab serve` */
export async function startServer(extra = []) {
  const dir = mkdtempSync(join(tmpdir(), "confab-e2e-"));
  const child = spawn(binary, ["serve", "--demo", "--listen", "127.0.0.1:0", "--data-dir", dir, "--signin-attempts-per-minute", "10000", ...extra], {
    env: { ...process.env, RUST_LOG: "info", CONFAB_LOG_FORMAT: "text" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const base = await new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error("the server did not say where it listens within 20 s")), 20_000);
    let seen = "";
    const read = (chunk) => {
      if (process.env.CONFAB_E2E_LOG) process.stderr.write(chunk);
      seen += chunk;
      const found = seen.match(/listening on (http:\/\/[0-9.:]+)\//);
      if (found) {
        clearTimeout(timer);
        done(found[1]);
      }
    };
    child.stdout.on("data", read);
    child.stderr.on("data", read);
    child.on("exit", (code) => fail(new Error(`the server exited with ${code}: ${seen}`)));
  });
  return {
    base,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((done) => child.once("exit", done));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function startBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
  });
}

/**
 * A browser context signed in through the sign-in page.
 * @param {import("playwright-core").Browser} browser
 * @param {string} base
 * @param {string} username
 * @param {import("playwright-core").BrowserContextOptions} [options]
 */
export async function signedIn(browser, base, username, options = {}) {
  const context = await browser.newContext({ baseURL: base, ...options });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.errors = errors;
  await page.goto("/signin");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill("testpass123");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL("**/dashboard/inbox");
  return { context, page };
}

/** Saves a screenshot into docs/screenshots when CONFAB_SCREENSHOTS=1. */
export async function screenshot(page, name) {
  if (process.env.CONFAB_SCREENSHOTS === "1") {
    await page.screenshot({ path: join(root, "docs/screenshots", `${name}.png`) });
  }
}
