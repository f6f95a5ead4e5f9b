// @ts-check
/**
 * The web app: a router over the original system's addresses, and its pages.
 * Every page is drawn from the address, so deep links work on a fresh load.
 * @module app
 */

import { ApiError, createProposalChat, hireFreelancer, request } from "./confab-client.js";
import { chatClient, disconnect, h, me, toast } from "./chat.js";
import { currentUser, onChange, signIn, signOut, signUp } from "./session.js";
import "./elements.js";

/** @typedef {import("./confab-client.js").Message} Message */

const shell = /** @type {HTMLElement} */ (document.getElementById("main"));
/** The current page's own container: a page still loading when the address changes
 * draws into its detached view, never into the next page. */
let current = shell;
let pageTitle = "Confab";
let unread = 0;

/** @param {string} title */
function setTitle(title) {
  pageTitle = title;
  document.title = unread > 0 ? `(${unread}) ${title} · Confab` : `${title} · Confab`;
}

/** Goes to an address of the app without reloading. @param {string} path */
export function navigate(path) {
  history.pushState(null, "", path);
  void route();
}

document.addEventListener("click", (event) => {
  const link = /** @type {HTMLElement} */ (event.target).closest?.("a");
  if (!link || link.target || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/api/") || url.pathname.startsWith("/assets/")) return;
  event.preventDefault();
  navigate(url.pathname + url.search);
});
addEventListener("popstate", () => void route());

/** @param {string} href @param {string} text */
const link = (href, text) => h("a", { href }, text);

function drawNav() {
  const nav = /** @type {HTMLElement} */ (document.getElementById("nav"));
  const user = currentUser();
  if (!user) {
    nav.replaceChildren(link("/freelancers", "Freelancers"), link("/jobs", "Jobs"), link("/signin", "Sign in"), link("/signup", "Sign up"));
    return;
  }
  const out = h("button", { type: "button", class: "btn small outline" }, "Sign out");
  out.addEventListener("click", () => {
    signOut();
    navigate("/signin");
  });
  const items = [
    link("/freelancers", "Freelancers"),
    link("/jobs", "Jobs"),
    user.role === "client" ? link("/my-jobs", "My jobs") : null,
    h("a", { href: "/dashboard/inbox", id: "inbox-link" }, "Inbox", h("span", { class: "badge", id: "unread-total", role: "img", hidden: true })),
    h("span", { class: "who-am-i" }, user.full_name),
    out,
  ];
  nav.replaceChildren(...items.filter((item) => item !== null));
  drawUnread();
}

function drawUnread() {
  const badge = document.getElementById("unread-total");
  if (badge) {
    badge.textContent = String(unread);
    badge.hidden = unread === 0;
    badge.setAttribute("aria-label", `${unread} unread`);
  }
  setTitle(pageTitle);
}

/** @type {ReturnType<typeof setTimeout> | null} */
let unreadTimer = null;
/** Re-reads the total unread count soon (events come in bursts). */
function refreshUnread() {
  if (unreadTimer) return;
  unreadTimer = setTimeout(async () => {
    unreadTimer = null;
    if (!currentUser()) return;
    try {
      unread = (await request("/api/messaging/unread/")).total;
      drawUnread();
    } catch {
      // The next event tries again.
    }
  }, 300);
}

function watchConnection() {
  const client = chatClient();
  const label = /** @type {HTMLElement} */ (document.getElementById("connection"));
  const words = /** @type {Record<string, string>} */ ({ online: "Connected", connecting: "Connecting…", offline: "Offline, reconnecting…", closed: "" });
  const draw = () => {
    label.textContent = words[client.state] ?? "";
    label.dataset.state = client.state;
  };
  client.addEventListener("state", draw);
  client.addEventListener("message", refreshUnread);
  client.addEventListener("synced", refreshUnread);
  // Read on another device, or in any view of this page.
  client.addEventListener("read", refreshUnread);
  draw();
  refreshUnread();
}

document.addEventListener("read", refreshUnread);

onChange(() => {
  disconnect();
  unread = 0;
  drawNav();
  if (currentUser()) watchConnection();
});

/** A page that needs a signed-in user; sends others to sign in first. */
function requireUser() {
  const user = currentUser();
  if (!user) {
    navigate(`/signin?next=${encodeURIComponent(location.pathname)}`);
    return null;
  }
  return user;
}

/** @param {unknown} e */
function why(e) {
  return e instanceof Error ? e.message : String(e);
}

/**
 * A labelled form field.
 * @param {string} label
 * @param {HTMLElement} control
 */
function field(label, control) {
  const id = `f-${label.toLowerCase().replace(/[^a-z]+/g, "-")}`;
  control.id = id;
  return h("p", { class: "field" }, h("label", { for: id }, label), control);
}

async function route() {
  if (location.hash === "#/chat-demo") {
    history.replaceState(null, "", "/chat-demo");
  }
  const path = location.pathname.replace(/\/+$/, "") || "/";
  const parts = path.split("/").filter(Boolean);
  current = h("div", { class: "page" });
  shell.replaceChildren(current);
  // The old page's focused control is gone: start from the page, so its change is announced.
  shell.focus({ preventScroll: true });
  try {
    if (path === "/") return home();
    if (path === "/signin") return signInPage();
    if (path === "/signup") return signUpPage();
    if (path === "/freelancers") return await freelancersPage();
    if (parts[0] === "freelancers" && parts.length === 2) return await freelancerPage(Number(parts[1]));
    if (path === "/jobs") return await jobsPage();
    if (parts[0] === "jobs" && parts.length === 2) return await jobPage(Number(parts[1]));
    if (path === "/my-jobs") return await myJobsPage();
    if (path === "/dashboard") return navigate("/dashboard/inbox");
    if (path === "/dashboard/inbox") return await inboxPage(null);
    if (parts[0] === "dashboard" && parts[1] === "inbox" && parts.length === 3) return await inboxPage(parts[2]);
    if (path === "/chat-demo") return await chatDemoPage();
    setTitle("Not found");
    current.append(h("h1", {}, "Not found"), h("p", {}, "There is no page at this address. "), link("/", "Go home"));
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      signOut();
      return navigate(`/signin?next=${encodeURIComponent(location.pathname)}`);
    }
    current.append(h("p", { class: "notice" }, `Something went wrong: ${why(e)}`));
  }
}

function home() {
  const main = current;
  setTitle("Home");
  const user = currentUser();
  main.append(
    h("h1", {}, "Confab"),
    h("p", {}, "Chat for the marketplace: clients hire freelancers, freelancers propose on jobs, and everyone talks in real time."),
    user
      ? h("p", {}, `Signed in as ${user.full_name}. `, link("/dashboard/inbox", "Open your inbox"), " · ", link(user.role === "client" ? "/freelancers" : "/jobs", user.role === "client" ? "Find a freelancer" : "Find a job"))
      : h("p", {}, link("/signin", "Sign in"), " or ", link("/signup", "create an account"), ". Try the demo accounts testclient and testfreelancer (password testpass123)."),
  );
}

function signInPage() {
  const main = current;
  setTitle("Sign in");
  const username = /** @type {HTMLInputElement} */ (h("input", { name: "username", autocomplete: "username", required: true }));
  const password = /** @type {HTMLInputElement} */ (h("input", { name: "password", type: "password", autocomplete: "current-password", required: true }));
  const submit = /** @type {HTMLButtonElement} */ (h("button", { type: "submit", class: "btn primary" }, "Sign in"));
  const form = h("form", { class: "card narrow", "aria-label": "Sign in" }, h("h1", {}, "Sign in"), field("Username", username), field("Password", password), submit, h("p", {}, "New here? ", link("/signup", "Create an account")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    submit.textContent = "Signing in…";
    try {
      await signIn(username.value.trim(), password.value);
      const next = new URLSearchParams(location.search).get("next");
      navigate(next && next.startsWith("/") && !next.startsWith("//") ? next : "/dashboard/inbox");
    } catch (e) {
      toast(e instanceof ApiError && e.status === 401 ? "Wrong username or password" : `Could not sign in: ${why(e)}`);
      submit.disabled = false;
      submit.textContent = "Sign in";
    }
  });
  main.append(form);
  username.focus();
}

function signUpPage() {
  const main = current;
  setTitle("Sign up");
  const username = /** @type {HTMLInputElement} */ (h("input", { name: "username", autocomplete: "username", required: true }));
  const fullName = /** @type {HTMLInputElement} */ (h("input", { name: "full_name", autocomplete: "name", required: true }));
  const password = /** @type {HTMLInputElement} */ (h("input", { name: "password", type: "password", autocomplete: "new-password", required: true, minlength: "8" }));
  const role = /** @type {HTMLSelectElement} */ (h("select", { name: "role" }, h("option", { value: "client" }, "Client: I hire"), h("option", { value: "freelancer" }, "Freelancer: I work")));
  const submit = /** @type {HTMLButtonElement} */ (h("button", { type: "submit", class: "btn primary" }, "Create account"));
  const form = h("form", { class: "card narrow", "aria-label": "Sign up" }, h("h1", {}, "Create an account"), field("Username", username), field("Full name", fullName), field("Password", password), field("I am a", role), submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      await signUp({ username: username.value.trim(), full_name: fullName.value.trim(), password: password.value, role: role.value });
      navigate("/dashboard/inbox");
    } catch (e) {
      toast(`Could not create the account: ${why(e)}`);
      submit.disabled = false;
    }
  });
  main.append(form);
}

/**
 * @typedef {object} Freelancer
 * @property {number} id
 * @property {string} username
 * @property {string} full_name
 * @property {string} headline
 * @property {string[]} skills
 * @property {number | null} hourly_rate
 */

/** @param {Freelancer} f */
function chatButton(f, text = "Message") {
  return h("confab-chat-button", { "user-id": f.id, username: f.username, "full-name": f.full_name, "button-text": text, variant: "outline", size: "small" });
}

async function freelancersPage() {
  const main = current;
  setTitle("Freelancers");
  if (!requireUser()) return;
  const search = /** @type {HTMLInputElement} */ (h("input", { type: "search", placeholder: "Name, skill or headline" }));
  const list = h("ul", { class: "cards", "aria-label": "Freelancers" });
  main.append(h("h1", {}, "Freelancers"), field("Search freelancers", search), list);
  /** @type {Freelancer[]} */
  const all = (await request("/api/freelancers/?limit=200")).results;
  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const shown = all.filter((f) => !q || [f.full_name, f.username, f.headline, ...f.skills].some((s) => s.toLowerCase().includes(q)));
    list.replaceChildren(
      ...shown.map((f) =>
        h(
          "li",
          { class: "card" },
          h("h2", {}, link(`/freelancers/${f.id}`, f.full_name)),
          h("p", {}, f.headline),
          h("p", { class: "skills" }, f.skills.join(" · ")),
          f.hourly_rate !== null ? h("p", {}, `$${f.hourly_rate}/hour`) : null,
          chatButton(f),
        ),
      ),
    );
    if (shown.length === 0) list.append(h("li", { class: "notice" }, "No freelancer matches."));
  };
  search.addEventListener("input", draw);
  draw();
}

/** @param {number} id */
async function freelancerPage(id) {
  const main = current;
  setTitle("Freelancer");
  const user = requireUser();
  if (!user) return;
  /** @type {Freelancer} */
  const f = await request(`/api/freelancers/${id}/`);
  setTitle(f.full_name);
  const hire = /** @type {HTMLButtonElement} */ (h("button", { type: "button", class: "btn primary large" }, "Hire Me"));
  hire.addEventListener("click", async () => {
    hire.disabled = true;
    hire.textContent = "Starting Chat…";
    try {
      const answer = await hireFreelancer(f.id);
      navigate(answer.redirect_url);
    } catch (e) {
      toast(`Could not start the chat: ${why(e)}`);
      hire.disabled = false;
      hire.textContent = "Hire Me";
    }
  });
  main.append(
    h(
      "article",
      { class: "card profile" },
      h("h1", {}, f.full_name),
      h("p", { class: "muted" }, `@${f.username}`),
      h("p", {}, f.headline),
      h("p", { class: "skills" }, f.skills.join(" · ")),
      f.hourly_rate !== null ? h("p", {}, `$${f.hourly_rate}/hour`) : null,
      user.role === "client" && user.id !== f.id ? hire : null,
      user.id !== f.id ? chatButton(f, "Message") : null,
    ),
  );
}

/**
 * @typedef {object} Job
 * @property {number} id
 * @property {string} title
 * @property {string} description
 * @property {{id: number, full_name: string}} client
 * @property {string} status
 */

/** @param {Job} job */
function jobCard(job) {
  return h("li", { class: "card" }, h("h2", {}, link(`/jobs/${job.id}`, job.title)), h("p", {}, job.description), h("p", { class: "muted" }, `${job.client.full_name} · ${job.status}`));
}

async function jobsPage() {
  const main = current;
  setTitle("Jobs");
  if (!requireUser()) return;
  /** @type {Job[]} */
  const jobs = (await request("/api/jobs/?limit=200")).results;
  main.append(h("h1", {}, "Jobs"), h("ul", { class: "cards", "aria-label": "Jobs" }, ...jobs.map(jobCard)));
}

/** @param {number} id */
async function jobPage(id) {
  const main = current;
  setTitle("Job");
  const user = requireUser();
  if (!user) return;
  /** @type {Job} */
  const job = await request(`/api/jobs/${id}/`);
  setTitle(job.title);
  const article = h("article", { class: "card" }, h("h1", {}, job.title), h("p", {}, job.description), h("p", { class: "muted" }, `Posted by ${job.client.full_name} · ${job.status}`));
  main.append(article);
  if (user.role !== "freelancer" || job.status !== "open") return;
  const cover = /** @type {HTMLTextAreaElement} */ (h("textarea", { name: "cover_letter", rows: "5", required: true }));
  const bid = /** @type {HTMLInputElement} */ (h("input", { name: "bid_amount", type: "number", min: "1", step: "0.01", required: true }));
  const submit = /** @type {HTMLButtonElement} */ (h("button", { type: "submit", class: "btn primary" }, "Submit proposal"));
  const form = h("form", { class: "card", "aria-label": "Submit a proposal" }, h("h2", {}, "Submit a proposal"), field("Cover letter", cover), field("Bid (USD)", bid), submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    submit.textContent = "Submitting…";
    try {
      const answer = await request(`/api/jobs/${job.id}/proposals/`, { method: "POST", body: { cover_letter: cover.value, bid_amount: Number(bid.value) } });
      navigate(answer.redirect_url);
    } catch (e) {
      if (e instanceof ApiError && e.code === "conflict") {
        // Already proposed: the chat about this job is still there.
        const chat = await createProposalChat(job.id).catch(() => null);
        toast(why(e), "info");
        if (chat) return navigate(chat.redirect_url);
      } else {
        toast(`Could not submit the proposal: ${why(e)}`);
      }
      submit.disabled = false;
      submit.textContent = "Submit proposal";
    }
  });
  main.append(form);
}

async function myJobsPage() {
  const main = current;
  setTitle("My jobs");
  const user = requireUser();
  if (!user) return;
  const title = /** @type {HTMLInputElement} */ (h("input", { name: "title", required: true }));
  const description = /** @type {HTMLTextAreaElement} */ (h("textarea", { name: "description", rows: "4", required: true }));
  const submit = /** @type {HTMLButtonElement} */ (h("button", { type: "submit", class: "btn primary" }, "Post job"));
  const list = h("ul", { class: "cards", "aria-label": "My jobs" });
  const draw = async () => {
    /** @type {Job[]} */
    const jobs = (await request("/api/jobs/?limit=200")).results.filter((/** @type {Job} */ j) => j.client.id === user.id);
    list.replaceChildren(...jobs.map(jobCard));
    if (jobs.length === 0) list.append(h("li", { class: "notice" }, "You have not posted a job yet."));
  };
  const form = h("form", { class: "card", "aria-label": "Post a job" }, h("h2", {}, "Post a job"), field("Title", title), field("Description", description), submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      await request("/api/jobs/", { method: "POST", body: { title: title.value, description: description.value } });
      title.value = "";
      description.value = "";
      toast("Job posted", "info");
      await draw();
    } catch (e) {
      toast(`Could not post the job: ${why(e)}`);
    } finally {
      submit.disabled = false;
    }
  });
  main.append(h("h1", {}, "My jobs"), user.role === "client" ? form : h("p", {}, "Only clients post jobs."), list);
  await draw();
}

/**
 * @typedef {object} Thread
 * @property {string} id
 * @property {string} kind
 * @property {{id: number, title: string} | null} job
 * @property {Array<{id: number, username: string, full_name: string}>} participants
 * @property {Message | null} last_message
 * @property {number} unread_count
 */

/** @param {string | null} openId */
async function inboxPage(openId) {
  const main = current;
  setTitle("Inbox");
  const user = requireUser();
  if (!user) return;
  const self = await me();
  const list = h("ul", { class: "threads", "aria-label": "Conversations" });
  const more = /** @type {HTMLButtonElement} */ (h("button", { type: "button", class: "btn outline small", hidden: true }, "Load more conversations"));
  const side = h("nav", { class: "thread-list", "aria-label": "Inbox" }, h("h1", {}, "Inbox"), list, more);
  const pane = h("section", { class: "conversation-pane", "aria-label": "Conversation" });
  const layout = h("div", { class: `inbox ${openId ? "has-open" : ""}` }, side, pane);
  main.append(layout);
  /** @type {Map<string, {thread: Thread, row: HTMLElement}>} */
  const shown = new Map();
  /** @type {string | null} */
  let next = null;

  /** @param {Thread} t */
  const other = (t) => t.participants.find((p) => p.id !== self.id) ?? t.participants[0];
  /** @param {Thread} t */
  const rowOf = (t) => {
    const person = other(t);
    const badge = t.unread_count > 0 ? h("span", { class: "badge", role: "img", "aria-label": `${t.unread_count} unread` }, String(t.unread_count)) : null;
    const last = t.last_message ? (t.last_message.kind === "system" ? t.last_message.text : `${t.last_message.sender?.id === self.id ? "You: " : ""}${t.last_message.text}`) : "No messages yet";
    return h(
      "li",
      { class: `thread ${t.id === openId ? "open" : ""}`, "data-thread": t.id },
      h("a", { href: `/dashboard/inbox/${t.id}`, "aria-current": t.id === openId ? "page" : undefined }, h("span", { class: "name" }, person?.full_name ?? "Conversation"), badge, t.job ? h("span", { class: "job" }, t.job.title) : null, h("span", { class: "last" }, last)),
    );
  };
  /** @param {Thread} t @param {"top" | "end" | "here"} where */
  const show = (t, where) => {
    const row = rowOf(t);
    const old = shown.get(t.id);
    shown.set(t.id, { thread: t, row });
    if (old && where === "here") old.row.replaceWith(row);
    else {
      old?.row.remove();
      if (where === "top") list.prepend(row);
      else list.append(row);
    }
    if (t.last_message) chatClient().seen(t.id, t.last_message.seq);
  };
  const load = async () => {
    const page = await request(`/api/chat/threads/?limit=30${next ? `&cursor=${encodeURIComponent(next)}` : ""}`);
    for (const t of page.results) if (!shown.has(t.id)) show(t, "end");
    next = page.next;
    more.hidden = !next;
    if (shown.size === 0) list.append(h("li", { class: "notice" }, "No conversations yet. Press Hire Me on a freelancer, or propose on a job."));
  };
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      await load();
    } catch (e) {
      toast(`Could not load more conversations: ${why(e)}`);
    } finally {
      more.disabled = false;
    }
  });
  await load();

  const client = chatClient();
  /** @param {Event} e */
  const onMessage = async (e) => {
    if (!main.contains(layout)) return client.removeEventListener("message", onMessage);
    /** @type {Message} */
    const message = /** @type {CustomEvent} */ (e).detail.message;
    const known = shown.get(message.thread_id);
    if (known) {
      const mineOrOpen = message.sender?.id === self.id || message.thread_id === openId;
      show({ ...known.thread, last_message: message, unread_count: mineOrOpen ? 0 : known.thread.unread_count + 1 }, "top");
    } else {
      const thread = await request(`/api/chat/threads/${message.thread_id}/`).catch(() => null);
      if (thread) show(thread, "top");
    }
  };
  client.addEventListener("message", onMessage);
  /** @param {Event} e */
  const onAck = (e) => {
    if (!main.contains(layout)) return client.removeEventListener("ack", onAck);
    /** @type {Message} */
    const message = /** @type {CustomEvent} */ (e).detail.message;
    const known = shown.get(message.thread_id);
    if (known) show({ ...known.thread, last_message: message }, "top");
  };
  client.addEventListener("ack", onAck);

  if (!openId) {
    pane.append(h("p", { class: "notice" }, "Choose a conversation."));
    return;
  }
  const thread = await request(`/api/chat/threads/${encodeURIComponent(openId)}/`);
  const person = other(thread);
  setTitle(person ? `Chat with ${person.full_name}` : "Conversation");
  pane.append(
    h("header", { class: "pane-head" }, h("a", { href: "/dashboard/inbox", class: "back" }, "← All conversations"), h("h2", {}, person?.full_name ?? "Conversation"), thread.job ? h("p", { class: "job" }, `About: ${thread.job.title}`) : null),
    h("confab-conversation", { "thread-id": thread.id, "recipient-id": person?.id, "recipient-name": person?.full_name ?? "" }),
  );
  pane.addEventListener("read", () => {
    const known = shown.get(thread.id);
    if (known && known.thread.unread_count > 0) show({ ...known.thread, unread_count: 0 }, "here");
    refreshUnread();
  });
  pane.querySelector("textarea")?.focus();
}

async function chatDemoPage() {
  const main = current;
  setTitle("Chat demo");
  if (!requireUser()) return;
  /** @type {Freelancer[]} */
  const people = (await request("/api/freelancers/?limit=200")).results;
  const self = await me();
  const others = people.filter((p) => p.id !== self.id);
  const someone = others[0];
  const variants = ["primary", "secondary", "success", "dark", "outline"];
  const sizes = ["small", "", "large"];
  main.append(
    h("h1", {}, "Chat demo"),
    h("p", {}, "Every chat button variant and size. Each opens a chat window with that person over your direct thread."),
    someone
      ? h(
          "table",
          { class: "demo" },
          h("caption", {}, `Buttons that message ${someone.full_name}`),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "variant"), ...sizes.map((s) => h("th", { scope: "col" }, s || "default")))),
          h("tbody", {}, ...variants.map((v) => h("tr", {}, h("th", { scope: "row" }, v), ...sizes.map((s) => h("td", {}, h("confab-chat-button", { "user-id": someone.id, username: someone.username, "full-name": someone.full_name, "button-text": "Message", variant: v, size: s || undefined })))))),
        )
      : h("p", { class: "notice" }, "No one to message yet."),
    h("h2", {}, "Everyone"),
    h("ul", { class: "cards" }, ...others.map((p) => h("li", { class: "card" }, h("h3", {}, p.full_name), chatButton(p, `Message ${p.full_name.split(" ")[0]}`)))),
  );
}

drawNav();
if (currentUser()) watchConnection();
void route();
