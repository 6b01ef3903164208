// One submission: its state and why, the code, every decision (rule ids and reasons), both
// runs (limits hit, effects, output), the blast radius and any divergence, and its receipt,
// verified here against GET /v1/keys.

import { call } from "./api.js";
import {
  announce, badge, block, bytes, clear, download, facts, h, heading, problem, section,
  short, stateLabel, table, TERMINAL, timeElement,
} from "./dom.js";
import { matches, Refused, verifyReceipt } from "./verify.js";

const OUTPUT_SHOWN = 64 * 1024;
const CHANGES_SHOWN = 50;

export function render(root, ctx, id) {
  let disposed = false;
  let timer = null;
  const title = heading(`Submission ${short(id, 14)}`);
  const body = h("div", { "aria-busy": "true" });
  root.append(h("p", {}, h("a", { href: "#/submissions" }, "← All submissions")), title, body);

  async function show() {
    let view;
    try {
      view = await call(`/v1/submissions/${encodeURIComponent(id)}`);
    } catch (error) {
      clear(body).append(problem(error.status === 404
        ? "No such submission, or not one this key may read."
        : `Cannot read the submission: ${error.message}`));
      return;
    }
    // The code first: the receipt is judged against the very bytes shown.
    const shownCode = await code(view);
    const parts = await Promise.all([overview(view), decisions(view), runs(view),
      bounds(view), receipt(view, ctx)]);
    if (disposed) return;
    parts.splice(1, 0, shownCode);
    clear(body).append(...parts);
    body.setAttribute("aria-busy", "false");
  }

  const stop = ctx.onEvent((event) => {
    if (event.submission_id !== id) return;
    announce(`This submission is now ${stateLabel(event.to)}`);
    clearTimeout(timer);
    timer = setTimeout(show, 200); // several moves in a row: one redraw
  });
  show();
  return { dispose() { disposed = true; clearTimeout(timer); stop(); } };
}

function overview(view) {
  return section("Overview", facts([
    ["Id", h("code", { id: "submission-id" }, view.id)],
    ["State", h("span", { id: "submission-state" }, badge(view.state))],
    ["Why", view.reason || "—"],
    ["Agent", view.agent],
    ["Workspace", `${view.workspace} (version ${view.version_before ?? "—"} → ${view.version_after ?? "—"})`],
    ["Profile", view.profile],
    ["Language", view.language],
    ["Created", timeElement(view.created_at)],
    ["Last moved", timeElement(view.updated_at)],
    view.state === "awaiting_approval"
      ? ["Approval", h("a", { href: "#/approvals" }, "Waiting for an approver")] : null,
  ], "Overview"));
}

async function code(view) {
  try {
    const answer = await call(view.links.code, { as: "response" });
    const data = new Uint8Array(await answer.arrayBuffer());
    const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(data);
    view.codeBytes = data;
    return section("Code", h("p", { class: "note" },
      `${view.language}, ${bytes(data.length)}, as submitted`), block(text, "Submitted code"));
  } catch (error) {
    return section("Code", problem(`Cannot read the code: ${error.message}`));
  }
}

function rules(list) {
  if (!list || !list.length) return "none";
  return h("ul", { class: "rules" }, list.map((rule) => h("li", {},
    h("code", {}, rule.id), rule.reason ? ` — ${rule.reason}` : "")));
}

function decisions(view) {
  const rows = view.decisions.map((d) => [
    d.gate, h("strong", {}, d.outcome), rules(d.rules),
    d.bundle_name ? h("span", {}, `${d.bundle_name} ${d.bundle_version ?? ""} `,
      h("code", { title: d.bundle_digest ?? "" }, short(d.bundle_digest ?? "", 19))) : "—",
    d.shadow ? h("span", {}, `${d.shadow.outcome}${d.shadow.disagrees ? " (disagrees)" : ""}`,
      rules(d.shadow.rules)) : "—",
    [d.effect ? `effect: ${d.effect}` : null, ...(d.errors ?? [])].filter(Boolean).join("; ") || "—",
    timeElement(d.decided_at),
  ]);
  return section("Decisions", rows.length
    ? table("Every gate's decision, in order", ["Gate", "Outcome", "Rules and reasons",
      "Policy bundle", "Shadow bundle", "Effect and errors", "When"], rows, { id: "decisions" })
    : h("p", {}, "No decision yet."));
}

function runFacts(run) {
  const flags = [run.oom_killed && "out of memory", run.timed_out && "timed out",
    run.seccomp_killed && "killed by seccomp", run.pids_limit_hit && "pids limit hit"]
    .filter(Boolean);
  const diff = run.diff;
  return facts([
    ["Exit code", run.exit_code ?? "—"],
    ["Signal", run.signal ?? "—"],
    ["Limits hit", run.limits_hit.length ? run.limits_hit.join(", ") : "none"],
    ["Flags", flags.length ? flags.join(", ") : "none"],
    ["Wall time", `${Number(run.wall_time_ms).toFixed(1)} ms`],
    ["Peak memory", bytes(run.peak_memory_bytes)],
    ["Peak processes", run.peak_pids ?? "—"],
    ["Output", `stdout ${bytes(run.stdout.size)}${run.stdout.truncated ? " (cut at the cap)" : ""}, stderr ${bytes(run.stderr.size)}${run.stderr.truncated ? " (cut at the cap)" : ""}`],
    ["Workspace effects", diff ? `${diff.created} created, ${diff.modified} modified, ${diff.deleted} deleted; ${diff.files_after} files, ${bytes(diff.size_after)} after` : "—"],
    diff && (diff.setuid_files || diff.device_nodes || diff.escaping_symlinks)
      ? ["Hazards", `${diff.setuid_files} setuid, ${diff.device_nodes} devices, ${diff.escaping_symlinks} escaping links`] : null,
    ["Image", h("code", {}, short(run.image_id, 19))],
  ], `${run.phase} facts`);
}

async function changes(view, phase) {
  try {
    const page = await call(`${view.links.diff}?phase=${phase}&limit=${CHANGES_SHOWN}`);
    if (!page.changes.length) return h("p", {}, "No workspace changes.");
    return table(`Workspace changes (${page.changes.length}${page.next_cursor ? "+" : ""})`,
      ["Path", "Change", "Type", "Size", "Mode"], page.changes.map((c) => [
        h("code", {}, c.path), c.kind, c.type, bytes(c.size),
        typeof c.mode === "number" ? c.mode.toString(8).padStart(4, "0") : String(c.mode)]));
  } catch (error) {
    return problem(`Cannot read the changes: ${error.message}`);
  }
}

async function output(view, phase, stream) {
  try {
    const answer = await call(`${view.links[stream]}?phase=${phase}&limit=${OUTPUT_SHOWN}`,
      { as: "response" });
    const data = new Uint8Array(await answer.arrayBuffer());
    const size = Number(answer.headers.get("Sandgate-Output-Size") ?? data.length);
    const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(data);
    const label = `${phase === "dry_run" ? "Dry run" : "Real run"} ${stream}`;
    return h("div", {}, h("h4", {}, `${stream} (${bytes(size)}${size > data.length ? `, first ${bytes(data.length)} shown` : ""})`),
      size ? block(text, label) : h("p", { class: "note" }, "empty"));
  } catch (error) {
    return problem(`Cannot read ${stream}: ${error.message}`);
  }
}

async function runs(view) {
  const columns = [];
  for (const [phase, run, name] of [["dry_run", view.dry_run, "Dry run (throwaway)"],
    ["bounded", view.bounded_run, "Real run (bounded)"]]) {
    const parts = run
      ? [runFacts(run), await changes(view, phase), await output(view, phase, "stdout"),
        await output(view, phase, "stderr")]
      : [h("p", {}, "Did not run.")];
    columns.push(h("div", { "data-phase": phase }, h("h3", {}, name), parts));
  }
  return section("Runs: effects, limits and output", h("div", { class: "grid2" }, columns));
}

function bounds(view) {
  const r = view.radius;
  const d = view.divergence;
  const found = d?.found;
  return section("Blast radius and divergence",
    r ? facts([
      ["Radius digest", h("code", {}, r.sha256)],
      ["Dry run did", `${r.created} created, ${r.modified} modified, ${r.deleted} deleted${r.hazardous ? ", hazardous" : ""}`],
      ["Totals", Object.entries(r.totals).map(([k, v]) => `${k} ${v}`).join(", ") || "—"],
    ], "Blast radius") : h("p", {}, "No blast radius yet (set when the dry run is assessed)."),
    d ? facts([
      ["Diverged", h("strong", {}, d.diverged ? "yes" : "no")],
      ["Paths outside the radius", d.outside_paths],
      ["Totals over", found.totals_over.length ? found.totals_over.join(", ") : "none"],
      ["New hazard", found.new_hazard ? "yes" : "no"],
      ["Exit changed", found.exit_changed ? "yes" : "no"],
      ["New network use", found.network_new ? "yes" : "no"],
      ["First paths", found.sample.length ? h("ul", {}, found.sample.map((p) => h("li", {}, h("code", {}, p)))) : "none"],
    ], "Divergence") : h("p", {}, "No divergence measured (the real run has not ended)."),
    view.violations.length ? h("div", {}, h("h3", {}, "Violations"),
      h("ul", {}, view.violations.map((v) => h("li", {}, v)))) : null);
}

async function receipt(view, ctx) {
  if (!view.receipt_seq) {
    return section("Receipt", h("p", {}, TERMINAL.has(view.state)
      ? "No receipt found." : "A receipt is sealed when the submission ends."));
  }
  let envelope;
  try {
    envelope = await call(view.links.receipt, { as: "json" });
  } catch (error) {
    return section("Receipt", problem(`Cannot read the receipt: ${error.message}`));
  }
  const verdict = await judge(envelope, ctx, view);
  const save = h("button", { type: "button", class: "secondary", onclick: () =>
    download(`receipt-${view.id}.json`, JSON.stringify(envelope), "application/json") },
  "Download the receipt (JSON)");
  const shown = verdict.statement ?? null;
  return section("Receipt", verdict.node, h("div", { class: "actions" }, save),
    shown?.predicate?.approval ? facts([
      ["Approved by", shown.predicate.approval.approver],
      ["Answer", shown.predicate.approval.approve ? "approved" : "rejected"],
      ["Reason", shown.predicate.approval.reason],
    ], "Approval") : null,
    shown ? h("details", {}, h("summary", {}, "The signed statement"),
      block(JSON.stringify(shown, null, 2), "Signed statement")) : null);
}

/** Verify ``envelope`` (for ``view``'s submission when given): a verdict node, and the
 * statement when it verified. */
export async function judge(envelope, ctx, view = null) {
  try {
    const { keys } = await ctx.keys();
    const verified = await verifyReceipt(envelope, keys);
    const codeShown = view?.codeBytes ?? null;
    const problems = view ? await matches(verified, view.id, codeShown) : [];
    if (problems.length) throw new Refused(problems.join("; "));
    const p = verified.predicate;
    return { statement: verified.statement, node: h("div", {
      class: "verdict ok", role: "status", "data-verdict": "verified" },
    h("strong", {}, "✔ Verified in this browser"),
    h("p", {}, `Ed25519 signature by key ${short(verified.keyId, 16)} (${verified.keyStatus}) over `
      + `the DSSE envelope; sequence ${p.sequence}, state ${stateLabel(p.state)}`
      + (!view ? "."
        : codeShown !== null ? "; names this submission and the sha256 of the code shown."
          : "; names this submission (the code could not be read: its digest was not checked).")),
    h("p", { class: "note" }, `Payload digest ${verified.digest}`)) };
  } catch (error) {
    const why = error instanceof Refused ? error.message : `cannot verify: ${error.message}`;
    return { statement: null, node: h("div", {
      class: "verdict bad", role: "alert", "data-verdict": "refused" },
    h("strong", {}, "✘ Refused"), h("p", { class: "why" }, why)) };
  }
}
