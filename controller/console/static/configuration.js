// Profiles and policies: the active and shadow bundles (digests, how often the shadow
// disagreed), every profile (digest, limits, tripwires, pool state), and for admins and
// auditors what `sandgate profiles lint` finds in the profile files (GET /v1/profiles/lint)
// and the run queue (GET /v1/status, followed live); readiness for everyone.

import { call } from "./api.js";
import { bytes, facts, h, heading, problem, section, short, table } from "./dom.js";

const OVERSEERS_ONLY = "Shown to admins and auditors (it is every tenant's activity).";

export function render(root, ctx) {
  const policies = h("div", { id: "policies" });
  const profiles = h("div", { id: "profiles" });
  const lint = h("div", { id: "profile-lint" });
  const readiness = h("div", { id: "readiness" });
  const queue = h("div", { id: "queue" });
  root.append(heading("Profiles and policies"),
    section("Policy bundles", policies), section("Profiles", profiles),
    section("Profile lint", lint), section("Readiness and the run queue", readiness, queue));
  showPolicies(policies);
  showProfiles(profiles);
  showReadiness(readiness);
  let stop = () => {};
  let disposed = false;
  ctx.who().then((me) => {
    if (disposed) return;
    if (me.sees !== "all") {
      lint.append(h("p", { class: "note" }, OVERSEERS_ONLY));
      queue.append(h("h3", {}, "The run queue"), h("p", { class: "note" }, OVERSEERS_ONLY));
      return;
    }
    showLint(lint);
    stop = followQueue(queue, ctx);
  }, (error) => {
    if (!disposed) queue.append(problem(`Cannot tell who this key is: ${error.message}`));
  });
  return { dispose() { disposed = true; stop(); } };
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
      Object.entries(view.checks).map(([name, result]) => [name, result])));
  } catch (error) {
    node.append(problem(`Cannot read readiness: ${error.message}`));
  }
}

async function showLint(node) {
  try {
    const found = await call("/v1/profiles/lint");
    const all = found.flatMap((file) => file.findings);
    const errors = all.filter((f) => f.level === "error").length;
    const changed = found.filter((file) => !file.loaded).map((file) => file.file);
    const rows = found.flatMap((file) => {
      const about = [h("code", {}, file.file), file.profile ?? "(does not load)",
        file.loaded ? "yes" : "no: new, changed or broken since the last load"];
      if (!file.findings.length) return [[...about, "—", "—", "no findings"]];
      return file.findings.map((f) => [...about,
        f.level === "error" ? h("strong", {}, "error") : f.level, h("code", {}, f.where),
        f.message]);
    });
    node.append(h("p", { id: "lint-summary" }, `${errors} error${errors === 1 ? "" : "s"}, `
      + `${all.length - errors} warning${all.length - errors === 1 ? "" : "s"} in `
      + `${found.length} profile file${found.length === 1 ? "" : "s"} (errors fail `
      + "sandgate profiles lint; warnings do not)."),
    changed.length ? h("p", { class: "note" }, `Not the profile in use: ${changed.join(", ")}`
      + " — a reload would take what is on disk (or, if one file is broken, refuse them all)."
    ) : null,
    table("What sandgate profiles lint finds in the profile files", ["File", "Profile",
      "In use", "Level", "Where", "Finding"], rows, { id: "lint-table" }));
  } catch (error) {
    node.append(problem(`Cannot read the profiles' lint: ${error.message}`));
  }
}

/** The run queue, read now, a second after each transition the feed brings, and every
 * few seconds besides (a worker lets go just after the last transition); the stop function
 * ends the following. */
function followQueue(node, ctx) {
  const shown = h("div", { id: "queue-state" });
  const refresh = h("button", { type: "button", class: "secondary" }, "Refresh");
  node.append(h("h3", {}, "The run queue"), shown, refresh);
  let pending = null;
  let reading = false;
  async function read() {
    clearTimeout(pending);
    pending = null;
    if (reading) { // a read is under way: read again after it
      pending = setTimeout(read, 250);
      return;
    }
    reading = true;
    try {
      const { queue: q, draining } = await call("/v1/status");
      shown.replaceChildren(facts([
        ["Running", [h("span", { id: "queue-running" }, String(q.running)),
          ` of ${q.workers} workers`]],
        ["Waiting", h("span", { id: "queue-waiting" }, String(q.waiting))],
        ["Places taken", `${q.waiting + q.running} of ${q.capacity} (past that, new work is `
          + "refused)"],
        ["Principals holding work", String(q.principals)],
        ["Draining", draining ? "yes: new work is refused" : "no"],
      ], "The run queue"), h("p", { class: "note" },
        `As of ${new Date().toLocaleTimeString()}; read again as submissions move.`));
    } catch (error) {
      shown.replaceChildren(problem(`Cannot read the run queue: ${error.message}`));
    } finally {
      reading = false;
    }
  }
  refresh.addEventListener("click", read);
  const stop = ctx.onEvent(() => { pending ??= setTimeout(read, 1000); });
  const every = setInterval(read, 5000);
  read();
  return () => {
    stop();
    clearInterval(every);
    clearTimeout(pending);
  };
}
