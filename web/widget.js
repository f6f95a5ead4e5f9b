// @ts-check
/**
 * The embedding entry point: `<script type="module" src="https://chat.example.com/widget.js">`
 * defines `<confab-chat-button>` and `<confab-chat-window>` on any page. Calls go to
 * the server this file came from; the token comes from `window.confabToken`, a
 * function the host page defines (it may return a promise), or from a
 * `data-token` attribute on any element with the class `confab-config`.
 * @module widget
 */

import { configure } from "./confab-client.js";

const server = new URL(import.meta.url).origin;

configure({
  server,
  getToken: async () => {
    const host = /** @type {{confabToken?: () => string | null | Promise<string | null>}} */ (/** @type {unknown} */ (globalThis));
    if (typeof host.confabToken === "function") return host.confabToken();
    return document.querySelector(".confab-config")?.getAttribute("data-token") ?? null;
  },
});

const sheet = document.createElement("link");
sheet.rel = "stylesheet";
sheet.href = new URL("chat.css", import.meta.url).href;
document.head.append(sheet);

await import("./elements.js");
