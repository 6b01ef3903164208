// Receipts: the signed log, each receipt verified here (Ed25519 against GET /v1/keys), the
// hash chain between consecutive receipts checked, exported as JSON lines (what
// sandgate-verify reads); and a pasted receipt verified the same way.

import { call } from "./api.js";
import {
  badge, clear, download, h, heading, problem, section, short, tableRow,
} from "./dom.js";
import { chainLinks, Refused, verifyReceipt } from "./verify.js";
import { judge } from "./submission.js";

const PAGE = 100;
const LINKS = {
  first: "first receipt",
  ok: "✔ cites the one before",
  broken: "✘ chain broken",
  gap: "not checked: a receipt before it is not listed",
};

export function render(root, ctx) {
  const entries = []; // {seq, envelope, verified | null, why}
  let next = 0;
  let disposed = false;
  const summary = h("div", { id: "receipt-summary", role: "status" });
  const body = h("tbody", { id: "receipt-rows" });
  const message = h("div");
  const more = h("button", { type: "button", class: "secondary", hidden: true },
    "Load more");
  const exportLog = h("button", { type: "button", class: "secondary" },
    "Export the receipts (JSON lines)");
  const exportKeys = h("button", { type: "button", class: "secondary" },
    "Export the public keys (PEM)");
  const pasted = h("textarea", { id: "pasted-receipt", rows: "6", spellcheck: "false",
    "aria-describedby": "pasted-help" });
  const verdict = h("div", { id: "pasted-verdict" });
  const check = h("form", { "aria-label": "Verify a receipt" },
    h("label", { for: "pasted-receipt" }, "A receipt (a DSSE envelope as JSON)"),
    h("p", { class: "note", id: "pasted-help" }, "Checked in this browser against the keys "
      + "this controller publishes: the signature, the envelope and the statement's shape."),
    pasted, h("div", { class: "actions" }, h("button", { type: "submit" }, "Verify")),
    verdict);

  root.append(heading("Receipts"), summary,
    h("div", { class: "actions" }, exportLog, exportKeys), message,
    h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": "Receipt log" },
      h("table", { id: "receipts" }, h("caption", {}, "The receipt log, in sequence order"),
        h("thead", {}, h("tr", {}, ["Seq", "Submission", "State", "Agent", "Signed by",
          "Signature", "Chain"].map((name) => h("th", { scope: "col" }, name)))), body)),
    more, section("Verify a receipt", check));

  more.addEventListener("click", () => load());
  exportLog.addEventListener("click", () => download("sandgate-receipts.jsonl",
    entries.map((e) => JSON.stringify(e.envelope)).join("\n") + "\n", "application/jsonl"));
  exportKeys.addEventListener("click", async () => {
    const listed = await call("/v1/keys");
    download("sandgate-keys.pem", listed.map((k) => k.pem.trim()).join("\n") + "\n",
      "application/x-pem-file");
  });
  check.addEventListener("submit", async (event) => {
    event.preventDefault();
    let envelope;
    try {
      envelope = JSON.parse(pasted.value);
    } catch (error) {
      verdict.replaceChildren(h("div", { class: "verdict bad", role: "alert",
        "data-verdict": "refused" }, h("strong", {}, "✘ Refused"),
      h("p", { class: "why" }, `not JSON: ${error.message}`)));
      return;
    }
    verdict.replaceChildren((await judge(envelope, ctx)).node);
  });

  async function load() {
    clear(message);
    let page;
    let keys;
    try {
      [page, { keys }] = await Promise.all([
        call(`/v1/receipts?since_seq=${next}&limit=${PAGE}`), ctx.keys()]);
    } catch (error) {
      message.append(problem(`Cannot read the receipts: ${error.message}`));
      return;
    }
    for (const envelope of page.receipts) {
      let verified = null;
      let why = "";
      try {
        verified = await verifyReceipt(envelope, keys);
      } catch (error) {
        why = error instanceof Refused ? error.message : String(error.message);
      }
      entries.push({ envelope, verified, why });
    }
    if (disposed) return;
    next = page.next_since_seq ?? (entries.at(-1)?.verified?.predicate.sequence ?? next);
    more.hidden = page.next_since_seq === null;
    draw();
  }

  function draw() {
    const good = entries.filter((e) => e.verified);
    const links = chainLinks(good.map((e) => e.verified));
    const linkOf = new Map(good.map((e, i) => [e, links[i]]));
    clear(body);
    for (const entry of entries) {
      const p = entry.verified?.predicate;
      const link = linkOf.get(entry);
      body.append(tableRow([
        p ? String(p.sequence) : "?",
        p ? h("a", { href: `#/submissions/${encodeURIComponent(p.submission_id)}` },
          h("code", {}, short(p.submission_id, 14))) : "—",
        p ? badge(p.state) : "—", p?.agent ?? "—",
        entry.verified ? h("code", { title: entry.verified.keyId }, short(entry.verified.keyId, 12)) : "—",
        entry.verified ? "✔ verified" : `✘ refused: ${entry.why}`,
        link ? LINKS[link] : "—",
      ], { "data-seq": p ? String(p.sequence) : "", "data-link": link ?? "none" }));
    }
    const refused = entries.length - good.length;
    const broken = links.filter((l) => l === "broken").length;
    const gaps = links.filter((l) => l === "gap").length;
    const checked = links.filter((l) => l === "ok").length;
    const everything = ctx.principal?.sees === "all";
    summary.replaceChildren(
      h("p", { "data-chain": broken ? "broken" : "intact" }, `${entries.length} receipts `
        + `loaded: ${good.length} verified, ${refused} refused. Chain: ${checked} links `
        + `checked, ${broken} broken, ${gaps} not checkable here.`),
      gaps && !everything ? h("p", { class: "note" }, "This key sees its own receipts only, "
        + "so links to other tenants' receipts cannot be checked here; an auditor's key "
        + "sees the whole log.") : null);
  }

  load();
  return { dispose() { disposed = true; } };
}
