// Building the page from data. Every value from the API or a sandbox (code, output, paths,
// reasons, names) becomes a text node: nothing here ever parses a string as markup, and the
// page's Content-Security-Policy enforces Trusted Types, so an HTML sink would throw.

// Characters that reorder or hide text (Trojan Source, CVE-2021-42574: code that reads one
// way and runs another): every one in data shown becomes a visible marker, ⟨U+2067⟩.
const HIDDEN = /[\u061C\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u2069\uFEFF]/gu;

/** ``text`` with each direction or invisible control character shown as ⟨U+XXXX⟩. */
export function visible(text) {
  return String(text).replace(HIDDEN, (c) =>
    `⟨U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}⟩`);
}

/** An element: h("a", {href: "#/x", class: "c"}, "text", child, [more]). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      node.className = value;
    } else if (name === "text") {
      node.textContent = visible(value);
    } else if (name === "value" && "value" in node) {
      node.value = value;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

/** Append children: strings and numbers as text, nodes as they are, arrays flattened. */
export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(visible(child)));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

let announcing = [];
let flush = null;

/** Say something to screen readers (the polite live region), a few messages at a time. */
export function announce(text) {
  announcing.push(text);
  if (flush) return;
  flush = setTimeout(() => {
    const region = document.getElementById("live");
    const said = announcing.slice(-3);
    announcing = [];
    flush = null;
    if (region) region.replaceChildren(...said.map((line) => h("p", {}, line)));
  }, 250);
}

export function when(iso) {
  if (!iso) return "—";
  const moment = new Date(iso);
  return Number.isNaN(moment.getTime()) ? String(iso) : moment.toLocaleString();
}

export function timeElement(iso) {
  return iso ? h("time", { datetime: iso }, when(iso)) : "—";
}

export function short(id, length = 12) {
  const text = String(id ?? "");
  return text.length > length ? `${text.slice(0, length)}…` : text;
}

export function bytes(count) {
  if (count === null || count === undefined) return "—";
  const value = Number(count);
  if (!Number.isFinite(value)) return String(count);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let size = value;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) { size /= 1024; unit += 1; }
  return unit === 0 ? `${value} B` : `${size.toFixed(1)} ${units[unit]}`;
}

export const STATES = ["received", "dry_run", "assessing", "awaiting_approval", "running",
  "validating", "committing", "committed", "rolled_back", "quarantined", "denied"];
export const TERMINAL = new Set(["committed", "rolled_back", "quarantined", "denied"]);

export function stateLabel(state) {
  return String(state).replaceAll("_", " ");
}

export function badge(state) {
  const known = STATES.includes(state) ? state : "unknown";
  return h("span", { class: `state state-${known}`, "data-state": state }, stateLabel(state));
}

/** A definition list of [term, value] pairs (value: text or nodes; null pairs skipped). */
export function facts(pairs, label) {
  const list = h("dl", { class: "facts", "aria-label": label });
  for (const pair of pairs) {
    if (!pair) continue;
    const [term, value] = pair;
    list.append(h("dt", {}, term), h("dd", {}, value ?? "—"));
  }
  return list;
}

/** A table with a caption, column headers and rows of cells (text or nodes). */
export function table(caption, headers, rows, attrs = {}) {
  const body = h("tbody");
  for (const row of rows) body.append(tableRow(row));
  const found = h("table", attrs, h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))), body);
  return h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": caption },
    found);
}

export function tableRow(cells, attrs = {}) {
  return h("tr", attrs, cells.map((cell) => h("td", {}, cell ?? "—")));
}

/** Preformatted text (hostile content: shown as text, scrollable, labelled). */
export function block(text, label) {
  const shown = String(text ?? "");
  const hidden = visible(shown) !== shown;
  return h("pre", { class: hidden ? "block hidden-controls" : "block", tabindex: "0",
    "aria-label": hidden ? `${label} (holds direction or invisible control characters, `
      + "shown as ⟨U+…⟩)" : label }, shown);
}

/** A section with a heading, labelled by it. */
let sections = 0;
export function section(title, ...children) {
  sections += 1;
  const id = `section-${sections}`;
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

/** Offer ``text`` as a file download (a Blob URL, revoked after use). */
export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** A paragraph saying what went wrong, read out at once. */
export function problem(text) {
  return h("p", { class: "error", role: "alert" }, text);
}

/** The view's heading, focused so keyboard and screen reader users land on the new view. */
export function heading(text) {
  return h("h1", { tabindex: "-1", id: "view-title" }, text);
}
