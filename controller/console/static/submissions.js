// Submissions: the list, newest first, filtered by state, workspace and time (by the API:
// GET /v1/submissions?state=&workspace=&since=), kept live by the feed (a new submission
// appears, a row's state changes as it moves).

import { call } from "./api.js";
import {
  announce, badge, clear, h, heading, problem, short, stateLabel, STATES, TERMINAL,
  timeElement, tableRow,
} from "./dom.js";

const PAGE = 50;
const COLUMNS = ["Submission", "State", "Agent", "Workspace", "Profile", "Created", "Exit",
  "Limits hit", "Receipt"];

export function render(root, ctx) {
  const filters = { state: "", workspace: "", since: "" };
  const rows = new Map();
  let cursor = null;
  let asked = 0; // which listing the rows are of: an answer to an older one is dropped
  let disposed = false;

  const state = h("select", { id: "filter-state", name: "state" },
    h("option", { value: "" }, "Any state"),
    STATES.map((name) => h("option", { value: name }, stateLabel(name))));
  const workspace = h("input", { id: "filter-workspace", name: "workspace", type: "text",
    maxlength: "64", spellcheck: "false" });
  const since = h("input", { id: "filter-since", name: "since", type: "datetime-local" });
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter submissions" },
    h("div", {}, h("label", { for: "filter-state" }, "State"), state),
    h("div", {}, h("label", { for: "filter-workspace" }, "Workspace"), workspace),
    h("div", {}, h("label", { for: "filter-since" }, "Created since (local time)"), since),
    h("div", {}, h("button", { type: "submit" }, "Apply")),
    h("div", {}, h("button", { type: "reset", class: "secondary" }, "Clear")));
  const body = h("tbody", { id: "submission-rows" });
  const count = h("p", { class: "note", id: "submission-count" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  const message = h("div");
  const tableNode = h("div", { class: "scroll", tabindex: "0", role: "region",
    "aria-label": "Submissions" },
  h("table", { id: "submissions" },
    h("caption", {}, "Submissions, newest first; states change live"),
    h("thead", {}, h("tr", {}, COLUMNS.map((name) => h("th", { scope: "col" }, name)))),
    body));
  root.append(heading("Submissions"), form, count, message, tableNode, more);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    Object.assign(filters, { state: state.value, workspace: workspace.value.trim(),
      since: since.value });
    reload();
  });
  form.addEventListener("reset", () => {
    Object.assign(filters, { state: "", workspace: "", since: "" });
    setTimeout(reload, 0);
  });
  more.addEventListener("click", () => load(cursor));

  function sinceIso() {
    if (!filters.since) return null;
    const moment = new Date(filters.since);
    return Number.isNaN(moment.getTime()) ? null : moment.toISOString();
  }

  /** Whether a submission the feed brings in matches the filters the list was asked for. */
  function shown(item) {
    if (filters.workspace && item.workspace !== filters.workspace) return false;
    if (filters.state && item.state !== filters.state) return false;
    const from = sinceIso();
    return !(from && new Date(item.created_at) < new Date(from));
  }

  function line(item) {
    const run = item.bounded_run ?? item.dry_run;
    const exit = item.exit_code !== undefined ? item.exit_code : run?.exit_code;
    const limits = item.limits_hit ?? run?.limits_hit ?? [];
    const row = tableRow([
      h("a", { href: `#/submissions/${encodeURIComponent(item.id)}`,
        "aria-label": `Submission ${item.id}` }, h("code", {}, short(item.id, 14))),
      badge(item.state), item.agent, item.workspace, item.profile, timeElement(item.created_at),
      exit ?? "—", limits.length ? limits.join(", ") : "none",
      item.receipt_seq ? `#${item.receipt_seq}` : "—",
    ], { "data-submission": item.id, "data-state": item.state });
    return row;
  }

  function put(item, { first = false } = {}) {
    const row = line(item);
    const old = rows.get(item.id);
    if (old) old.replaceWith(row);
    else if (first) body.prepend(row);
    else body.append(row);
    rows.set(item.id, row);
  }

  function counted() {
    count.textContent = `${rows.size} submission${rows.size === 1 ? "" : "s"} shown` +
      (filters.workspace ? ` (workspace ${filters.workspace})` : "");
  }

  async function load(after) {
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (filters.state) params.set("state", filters.state);
    if (filters.workspace) params.set("workspace", filters.workspace);
    const from = sinceIso();
    if (from) params.set("since", from);
    if (after) params.set("cursor", after);
    clear(message);
    const listing = asked;
    try {
      const page = await call(`/v1/submissions?${params}`);
      if (disposed || listing !== asked) return;
      for (const item of page.submissions) put(item);
      cursor = page.next_cursor;
      more.hidden = !cursor;
      counted();
    } catch (error) {
      if (disposed || listing !== asked) return;
      message.append(problem(`Cannot list submissions: ${error.message}`));
      counted();
    }
  }

  function reload() {
    asked += 1;
    rows.clear();
    clear(body);
    cursor = null;
    more.hidden = true;
    load(null);
  }

  async function refresh(id, first) {
    try {
      const item = await call(`/v1/submissions/${encodeURIComponent(id)}`);
      if (disposed) return;
      if (shown(item) || rows.has(id)) put(item, { first });
      counted();
    } catch { /* gone from view (not ours): leave the list as it is */ }
  }

  const pending = new Map(); // id -> the newest state seen while its row is fetched

  async function arrive(id, agent) {
    await refresh(id, true);
    const seen = pending.get(id);
    pending.delete(id);
    const row = rows.get(id);
    if (!row) return;
    announce(`New submission ${short(id)} by ${agent}`);
    if (seen && row.dataset.state !== seen) refresh(id, false); // it moved meanwhile
  }

  const stop = ctx.onEvent((event) => {
    const id = event.submission_id;
    const row = rows.get(id);
    if (row) {
      row.dataset.state = event.to;
      row.cells[1].replaceChildren(badge(event.to));
      if (TERMINAL.has(event.to) || event.to === "awaiting_approval") refresh(id, false);
      announce(`Submission ${short(id)}: ${stateLabel(event.to)}`);
    } else if (pending.has(id)) {
      pending.set(id, event.to);
    } else if (event.from === null || event.to === "awaiting_approval") {
      if (filters.workspace && event.workspace !== filters.workspace) return;
      pending.set(id, event.to);
      arrive(id, event.agent);
    }
  });

  load(null);
  return { dispose() { disposed = true; stop(); } };
}
