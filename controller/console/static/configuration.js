// Profiles and policies: the active and shadow bundles (digests, how often the shadow
// disagreed), every profile (digest, limits, tripwires, pool state) and readiness.

import { call } from "./api.js";
import { bytes, facts, h, heading, problem, section, short, table } from "./dom.js";

export function render(root) {
  const policies = h("div", { id: "policies" });
  const profiles = h("div", { id: "profiles" });
  const readiness = h("div", { id: "readiness" });
  root.append(heading("Profiles and policies"),
    section("Policy bundles", policies), section("Profiles", profiles),
    section("Readiness and the run queue", readiness));
  showPolicies(policies);
  showProfiles(profiles);
  showReadiness(readiness);
}

function bundle(found, label) {
  return facts([
    ["Name", found.name], ["Version", found.version],
    ["Digest", h("code", {}, found.digest)], ["Description", found.description || "—"],
  ], label);
}

async function showPolicies(node) {
  try {
    const view = await call("/v1/policies");
    node.append(h("h3", {}, "Active (decides)"), bundle(view, "Active bundle"),
      h("h3", {}, "Shadow (recorded, never enforced)"),
      view.shadow ? bundle(view.shadow, "Shadow bundle") : h("p", {}, "No shadow bundle."),
      facts([
        ["Shadow decisions", String(view.shadow_decisions)],
        ["Disagreements", h("strong", { id: "shadow-disagreements" },
          String(view.shadow_disagreements))],
      ], "Shadow evaluation"),
      h("p", { class: "note" }, "Each decision's shadow verdict (and whether it disagreed) is "
        + "on the submission's page and in its receipt."));
  } catch (error) {
    node.append(problem(`Cannot read the policies: ${error.message}`));
  }
}

async function showProfiles(node) {
  try {
    const found = await call("/v1/profiles");
    node.append(table("Profiles as loaded", ["Profile", "Digest", "Image", "Network", "Memory",
      "CPUs", "Processes", "Wall time", "Output cap", "Tripwires", "Pool"],
    found.map((p) => [
      h("span", {}, h("strong", {}, p.name), h("br"), h("span", { class: "note" },
        p.description)),
      h("code", { title: p.digest }, short(p.digest, 19)), h("code", {}, p.image),
      p.network ? "allowed" : "none", bytes(p.limits.memory_bytes), String(p.limits.cpus),
      String(p.limits.pids), `${p.limits.wall_time_s} s`, bytes(p.limits.output_bytes),
      p.tripwires.length ? p.tripwires.join(", ") : "none",
      p.pool ? `${p.pool.ready} ready of ${p.pool.target} (min ${p.pool.min}, max `
        + `${p.pool.max}); ${p.pool.hits} hits, ${p.pool.misses} misses, ${p.pool.replaced} `
        + `replaced, ${p.pool.failed_starts} failed starts` : "no pool (or not shown to this key)",
    ]), { id: "profile-table" }));
  } catch (error) {
    node.append(problem(`Cannot read the profiles: ${error.message}`));
  }
}

async function showReadiness(node) {
  try {
    const answer = await fetch("/readyz", { cache: "no-store", credentials: "omit" });
    const view = await answer.json();
    node.append(h("p", {}, h("strong", {}, view.ready ? "Ready" : "Not ready"),
      view.checks.accepting === "ok" ? " — accepting new work." : " — not accepting new work."),
    table("Readiness checks", ["Check", "Result"],
      Object.entries(view.checks).map(([name, result]) => [name, result])),
    h("p", { class: "note" }, "The run queue's depth is not served by the API yet; "
      + "a full queue answers submissions 429 or 503."));
  } catch (error) {
    node.append(problem(`Cannot read readiness: ${error.message}`));
  }
}
