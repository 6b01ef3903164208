// The console's shell: sign in and out (who a key is: GET /v1/me), the live feed of
// transitions (GET /v1/events), and the views, chosen by the URL's fragment (#/submissions,
// #/submissions/<id>, #/approvals, #/receipts, #/configuration).

import { ApiError, call, events, session } from "./api.js";
import { announce, clear, problem } from "./dom.js";
import { importKeys } from "./verify.js";
import * as submissions from "./submissions.js";
import * as submission from "./submission.js";
import * as approvals from "./approvals.js";
import * as receipts from "./receipts.js";
import * as configuration from "./configuration.js";

const byId = (id) => document.getElementById(id);
const VIEWS = { submissions, approvals, receipts, configuration };

/** What every view may use: the caller (GET /v1/me), the keys, the feed. */
const ctx = {
  principal: null,
  canApprove: false,
  whoPromise: null,
  keysPromise: null,
  listeners: new Set(),
  /** Who the key is: {principal, role, sees}, asked once per sign-in. */
  who() {
    if (!this.whoPromise) {
      const key = session.key;
      this.whoPromise = call("/v1/me", { key }).then((me) => {
        if (session.key === key) identified(me); // not after a sign-out meanwhile
        return me;
      });
    }
    return this.whoPromise;
  },
  keys() {
    this.keysPromise ??= call("/v1/keys").then(importKeys);
    return this.keysPromise;
  },
  onEvent(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  },
};

let feed = null;
let current = null;

/** The feed: one stream per tab, resumed after the last event whenever it ends. */
class Feed {
  constructor() {
    this.controller = new AbortController();
    this.lastId = null;
    this.run();
  }

  stop() {
    this.controller.abort();
  }

  async run() {
    let backoff = 1000;
    while (!this.controller.signal.aborted) {
      try {
        status("Connecting…");
        for await (const event of events("/v1/events", { lastEventId: this.lastId,
          signal: this.controller.signal })) {
          if (event.id !== null) this.lastId = event.id;
          if (event.event === "ready") {
            backoff = 1000;
            live();
          } else if (event.event === "transition") {
            const data = JSON.parse(event.data);
            for (const listener of ctx.listeners) listener(data);
          }
        }
        status("Reconnecting…");
      } catch (error) {
        if (this.controller.signal.aborted) return;
        if (error instanceof ApiError && error.status === 401) {
          signOut("Your API key is no longer accepted (revoked or unknown): sign in again.");
          return;
        }
        if (error instanceof ApiError && error.retryAfter) {
          backoff = Math.max(backoff, error.retryAfter * 1000);
        }
        status(`Live updates paused: ${error.message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, backoff));
      backoff = Math.min(backoff * 2, 30000);
    }
  }
}

function status(text) {
  byId("feed-status").textContent = text;
}

function live() {
  status("Live");
  document.body.dataset.feed = "live";
  if (!ctx.principal) { // asking who the key is failed before: the API is back
    ctx.who().catch(() => { ctx.whoPromise = null; });
  }
}

/** The caller, as GET /v1/me says: named in the header, approvals offered to approvers. */
function identified(me) {
  ctx.principal = me;
  byId("who").textContent = `Signed in as ${me.principal} (${me.role})`;
  ctx.canApprove = me.role === "approver" || me.role === "admin";
  document.querySelector('#nav a[data-view="approvals"]').hidden = !ctx.canApprove;
}

async function signIn(event) {
  event.preventDefault();
  const input = byId("api-key");
  const error = byId("sign-in-error");
  const key = input.value.trim();
  error.textContent = "";
  if (!key) {
    error.textContent = "Paste an API key first.";
    input.focus();
    return;
  }
  let me;
  try {
    me = await call("/v1/me", { key });
  } catch (failure) {
    error.textContent = failure instanceof ApiError && failure.status === 401
      ? `That API key is not accepted: ${failure.message}.`
      : `Cannot sign in: ${failure.message}`;
    input.focus();
    return;
  }
  input.value = "";
  session.set(key);
  ctx.whoPromise = Promise.resolve(me);
  identified(me);
  start();
}

function start() {
  byId("sign-in").hidden = true;
  byId("nav").hidden = false;
  byId("session").hidden = false;
  byId("view").hidden = false;
  ctx.who().catch((error) => { // a reload signs in with the kept key: ask who it is
    if (!session.key) return; // signed out meanwhile
    if (error instanceof ApiError && error.status === 401) {
      signOut("Your API key is no longer accepted (revoked or unknown): sign in again.");
    } else {
      ctx.whoPromise = null; // asked again by the next view that needs it
      byId("who").textContent = `Signed in (cannot tell as whom: ${error.message})`;
    }
  });
  feed = new Feed();
  if (!location.hash || location.hash === "#") location.hash = "#/submissions";
  else route();
}

function signOut(message = "") {
  feed?.stop();
  feed = null;
  current?.dispose?.();
  current = null;
  session.clear();
  Object.assign(ctx, { principal: null, canApprove: false, whoPromise: null,
    keysPromise: null });
  ctx.listeners.clear();
  delete document.body.dataset.feed;
  clear(byId("view")).hidden = true;
  byId("nav").hidden = true;
  byId("session").hidden = true;
  byId("who").textContent = "";
  byId("sign-in").hidden = false;
  byId("sign-in-error").textContent = message;
  history.replaceState(null, "", location.pathname);
  byId("api-key").focus();
  announce(message || "Signed out.");
}

function route() {
  if (!session.key || !location.hash.startsWith("#/")) return; // #main: the skip link
  const [, name = "submissions", id] = location.hash.split("/");
  current?.dispose?.();
  ctx.listeners.clear();
  const root = clear(byId("view"));
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const view = name === "submissions" && id ? submission : VIEWS[name];
  if (!view) {
    root.append(problem(`No view called ${name}.`));
    return;
  }
  current = view.render(root, ctx, id ? decodeURIComponent(id) : undefined) ?? null;
  const title = byId("view-title");
  if (title) title.focus();
}

window.addEventListener("hashchange", route);
// A page leaving (or frozen in the back-forward cache) gives its stream back at once: a
// browser holds six connections to a host, and a stream keeps one.
window.addEventListener("pagehide", () => {
  feed?.stop();
  feed = null;
});
window.addEventListener("pageshow", (event) => {
  if (event.persisted && session.key && !feed) feed = new Feed();
});
window.addEventListener("DOMContentLoaded", () => {
  byId("sign-in-form").addEventListener("submit", signIn);
  byId("sign-out").addEventListener("click", () => signOut());
  document.querySelector(".skip").addEventListener("click", (event) => {
    event.preventDefault(); // the fragment names views: move focus without routing
    byId("main").focus();
  });
  if (session.key) start();
  else byId("api-key").focus();
});
