// Approvals: submissions parked for a human, with the evidence to decide on (code, what the
// dry run did, the rules that parked it); approve or reject with a reason.

import { call } from "./api.js";
import {
  announce, badge, block, bytes, clear, facts, h, heading, problem, short, table, timeElement,
} from "./dom.js";

export function render(root, ctx) {
  const cards = new Map();
  const list = h("div", { id: "approval-queue" });
  const note = h("p", { class: "note", id: "approval-count" });
  const message = h("div");
  let disposed = false;
  root.append(heading("Approvals"), h("p", {}, "Each submission below ran once in a throwaway "
    + "sandbox and a policy asks a human before it runs for real. Your answer and reason are "
    + "signed into its receipt."), note, message, list);

  function counted() {
    note.textContent = cards.size
      ? `${cards.size} submission${cards.size === 1 ? "" : "s"} waiting, oldest first.`
      : "Nothing is waiting for approval.";
  }

  async function load() {
    clear(message);
    try {
      const waiting = await call("/v1/approvals?limit=100");
      if (disposed) return;
      for (const request of waiting) {
        if (!cards.has(request.submission.id)) {
          const card = evidence(request, answered);
          cards.set(request.submission.id, card);
          list.append(card);
        }
      }
      counted();
    } catch (error) {
      message.append(problem(error.status === 403
        ? "This key cannot answer approval requests (an approver's or an admin's can)."
        : `Cannot read the approval queue: ${error.message}`));
    }
  }

  function answered(id, text) {
    const card = cards.get(id);
    if (!card) return;
    const next = card.nextElementSibling ?? card.previousElementSibling;
    card.remove();
    cards.delete(id);
    counted();
    announce(text);
    message.replaceChildren(h("p", { role: "status", id: "approval-outcome" }, text));
    (next?.querySelector("textarea") ?? document.getElementById("view-title"))?.focus();
  }

  const stop = ctx.onEvent((event) => {
    if (event.to === "awaiting_approval") load();
    else if (event.from === "awaiting_approval" && cards.has(event.submission_id)
      && !cards.get(event.submission_id).dataset.answering) { // answered elsewhere
      answered(event.submission_id, `Submission ${short(event.submission_id)} left the queue `
        + `(${event.to === "running" ? "approved" : "denied or expired"}).`);
    }
  });
  load();
  return { dispose() { disposed = true; stop(); } };
}

function evidence(request, answered) {
  const view = request.submission;
  const id = view.id;
  const titleId = `approval-${id}`;
  const reasonId = `reason-${id}`;
  const errorId = `answer-error-${id}`;
  const reason = h("textarea", { id: reasonId, name: "reason", rows: "2", maxlength: "2000",
    required: true, "aria-describedby": errorId });
  const error = h("p", { class: "error", id: errorId, role: "alert" });
  const buttons = [
    h("button", { type: "submit", value: "approve", "data-answer": "approve" }, "Approve"),
    h("button", { type: "submit", value: "reject", class: "danger", "data-answer": "reject" },
      "Reject"),
  ];
  const form = h("form", { "aria-label": `Answer for submission ${id}`, novalidate: true },
    h("label", { for: reasonId }, "Reason (signed into the receipt)"), reason, error,
    h("div", { class: "actions" }, buttons));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const approve = event.submitter?.value === "approve";
    const text = reason.value.trim();
    if (!text) {
      error.textContent = "Give a reason: it is recorded with your answer.";
      reason.focus();
      return;
    }
    buttons.forEach((button) => { button.disabled = true; });
    error.textContent = "";
    form.closest("article").dataset.answering = "true"; // this answer says what happened
    try {
      const after = await call(`/v1/submissions/${encodeURIComponent(id)}/approval`,
        { method: "POST", body: { approve, reason: text } });
      answered(id, `${approve ? "Approved" : "Rejected"} submission ${short(id)}: now `
        + `${after.state.replaceAll("_", " ")}.`);
    } catch (failure) {
      error.textContent = `Not recorded: ${failure.message}`;
      buttons.forEach((button) => { button.disabled = false; });
      delete form.closest("article").dataset.answering;
    }
  });

  const diff = request.dry_run_diff;
  return h("article", { class: "card", "aria-labelledby": titleId, "data-submission": id },
    h("h2", { id: titleId }, "Submission ", h("code", {}, short(id, 14)), " by ", view.agent),
    facts([
      ["Id", h("a", { href: `#/submissions/${encodeURIComponent(id)}` }, id)],
      ["State", badge(view.state)],
      ["Workspace", view.workspace], ["Profile", view.profile], ["Language", view.language],
      ["Waiting since", timeElement(view.updated_at)],
      ["Radius digest", view.radius ? h("code", {}, view.radius.sha256) : "—"],
    ], "Submission"),
    h("h3", {}, "Why it waits"),
    h("ul", { class: "rules" }, request.waiting_because.map((rule) => h("li", {},
      h("code", {}, rule.id), rule.reason ? ` — ${rule.reason}` : ""))),
    h("h3", {}, "Code"),
    request.code_truncated ? h("p", { class: "note" }, "Cut: the whole code is on the "
      + "submission's page.") : null,
    block(request.code, `Code of submission ${id}`),
    request.files_count ? h("p", {}, `Files beside it (${request.files_count}): `,
      request.files.map((path, i) => [i ? ", " : "", h("code", {}, path)])) : null,
    h("h3", {}, "What the dry run did"),
    diff ? h("p", {}, `${diff.created} created, ${diff.modified} modified, ${diff.deleted} `
      + `deleted; ${diff.files_after} files, ${bytes(diff.size_after)} after.`) : null,
    request.dry_run_changes.length ? table("The dry run's first changes", ["Path", "Change",
      "Type", "Size"], request.dry_run_changes.map((c) => [h("code", {}, c.path), c.kind,
      c.type, bytes(c.size)])) : h("p", {}, "No workspace changes."),
    view.dry_run ? h("p", {}, `Exit code ${view.dry_run.exit_code ?? "—"}; limits hit: `
      + `${view.dry_run.limits_hit.join(", ") || "none"}.`) : null,
    view.stdout ? [h("h3", {}, "Dry run output (start)"),
      block(view.stdout, `Dry run stdout of ${id}`)] : null,
    form);
}
