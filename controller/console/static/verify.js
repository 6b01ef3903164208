// Receipts verified in the browser, with WebCrypto's Ed25519, against the keys GET /v1/keys
// lists: no trust in what the controller says about a receipt, only in the keys it serves.
//
// A receipt is a DSSE envelope (payloadType application/vnd.in-toto+json) whose signature
// covers the DSSE v1 pre-authentication encoding (PAE) of its payload type and payload bytes.
// A key's id is the sha256 of its raw 32-byte public key (hex), recomputed here from the PEM.
// The checks follow controller/verify/dsse.py.

export const PAYLOAD_TYPE = "application/vnd.in-toto+json";
export const STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
export const PREDICATE_TYPE = "https://sandgate.dev/receipt/v1";
const TERMINAL_STATES = new Set(["committed", "rolled_back", "quarantined", "denied"]);
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const HEX64 = /^[0-9a-f]{64}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
const ED25519_SPKI_PREFIX = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
const MAX_SEQUENCE = 2 ** 53 - 1;

/** A receipt that does not verify; the message says which check failed. */
export class Refused extends Error {}

const encoder = new TextEncoder();

export function decodeBase64(text) {
  if (typeof text !== "string" || !BASE64.test(text)) return null;
  const binary = atob(text);
  const found = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) found[i] = binary.charCodeAt(i);
  return found;
}

export function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function sha256Hex(data) {
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  return hex(await crypto.subtle.digest("SHA-256", bytes));
}

/** DSSE v1 pre-authentication encoding: "DSSEv1 <len> <type> <len> <payload>" (byte lengths). */
export function pae(payloadType, payload) {
  const type = encoder.encode(payloadType);
  const head = encoder.encode(`DSSEv1 ${type.length} `);
  const middle = encoder.encode(` ${payload.length} `);
  const message = new Uint8Array(head.length + type.length + middle.length + payload.length);
  message.set(head, 0);
  message.set(type, head.length);
  message.set(middle, head.length + type.length);
  message.set(payload, head.length + type.length + middle.length);
  return message;
}

function pemBody(pem) {
  const match = /-----BEGIN PUBLIC KEY-----([A-Za-z0-9+/=\s]+)-----END PUBLIC KEY-----/.exec(pem);
  return match ? decodeBase64(match[1].replace(/\s+/g, "")) : null;
}

/** The keys of GET /v1/keys, imported: Map key id -> {key, status, created, idMatches}.
 * A key whose listed id is not the sha256 of its own bytes is kept out (``rejected``). */
export async function importKeys(listed) {
  const keys = new Map();
  const rejected = [];
  for (const entry of listed) {
    const der = pemBody(String(entry.pem ?? ""));
    const isEd25519 = der && der.length === 44 &&
      ED25519_SPKI_PREFIX.every((byte, i) => der[i] === byte);
    if (!isEd25519) {
      rejected.push({ id: entry.key_id, why: "not an Ed25519 public key in PEM" });
      continue;
    }
    const computed = await sha256Hex(der.slice(12));
    if (computed !== entry.key_id) {
      rejected.push({ id: entry.key_id, why: `listed id is not the key's sha256 (${computed})` });
      continue;
    }
    const key = await crypto.subtle.importKey("spki", der, { name: "Ed25519" }, false,
      ["verify"]);
    keys.set(computed, { key, status: entry.status, created: entry.created, pem: entry.pem });
  }
  return { keys, rejected };
}

/** Check a receipt envelope against ``keys``; the verified statement, its payload digest and
 * the key that signed it, or ``Refused`` saying why not. */
export async function verifyReceipt(envelope, keys) {
  if (!envelope || typeof envelope !== "object" || Array.isArray(envelope)) {
    throw new Refused("not a DSSE envelope (a JSON object)");
  }
  if (envelope.payloadType !== PAYLOAD_TYPE) {
    throw new Refused(`payloadType is not ${PAYLOAD_TYPE}`);
  }
  const payload = decodeBase64(envelope.payload);
  if (payload === null) throw new Refused("malformed envelope: payload is not base64");
  const signatures = envelope.signatures;
  if (!Array.isArray(signatures) || !signatures.every((s) => s && typeof s.keyid === "string"
    && typeof s.sig === "string")) {
    throw new Refused("malformed envelope: signatures must be a list of {keyid, sig} strings");
  }
  const message = pae(PAYLOAD_TYPE, payload);
  let signer = null;
  for (const { keyid, sig } of signatures) {
    const known = keys.get(keyid);
    const signature = decodeBase64(sig);
    if (!known || signature === null) continue;
    if (await crypto.subtle.verify({ name: "Ed25519" }, known.key, signature, message)) {
      signer = keyid;
      break;
    }
  }
  if (signer === null) {
    const named = signatures.map((s) => String(s.keyid).slice(0, 12)).join(", ") || "none";
    throw new Refused(`no valid signature by a key of GET /v1/keys (signed by: ${named})`);
  }
  let statement;
  try {
    statement = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(payload));
  } catch (error) {
    throw new Refused(`payload is not JSON: ${error.message}`);
  }
  checkStatement(statement);
  return { statement, predicate: statement.predicate, keyId: signer,
    keyStatus: keys.get(signer).status, digest: `sha256:${await sha256Hex(payload)}` };
}

function checkStatement(statement) {
  if (!statement || typeof statement !== "object" || statement._type !== STATEMENT_TYPE) {
    throw new Refused(`payload is not an in-toto Statement (${STATEMENT_TYPE})`);
  }
  const subjects = statement.subject;
  if (!Array.isArray(subjects) || subjects.length === 0 || !subjects.every((s) => s
    && typeof s.name === "string" && s.digest && HEX64.test(String(s.digest.sha256)))) {
    throw new Refused("subject must be a non-empty list of {name, digest.sha256}");
  }
  if (statement.predicateType !== PREDICATE_TYPE) {
    throw new Refused(`predicateType must be ${PREDICATE_TYPE}`);
  }
  const p = statement.predicate;
  if (!p || typeof p !== "object") throw new Refused("predicate must be an object");
  if (typeof p.submission_id !== "string" || !p.submission_id) {
    throw new Refused("predicate.submission_id is missing");
  }
  if (!TERMINAL_STATES.has(p.state)) {
    throw new Refused(`predicate.state ${JSON.stringify(p.state)} is not terminal`);
  }
  if (!Number.isInteger(p.sequence) || p.sequence < 1 || p.sequence > MAX_SEQUENCE) {
    throw new Refused(`predicate.sequence ${JSON.stringify(p.sequence)} is not a positive integer`);
  }
  if (!("previous_receipt_digest" in p)) {
    throw new Refused("predicate.previous_receipt_digest is missing");
  }
  const previous = p.previous_receipt_digest;
  if (previous !== null && !(typeof previous === "string" && DIGEST.test(previous))) {
    throw new Refused("predicate.previous_receipt_digest is not null or sha256:<64 hex>");
  }
}

/** The code subject's sha256 (``submission/<id>/main.<suffix>``), or null. */
export function codeDigest(statement) {
  const prefix = `submission/${statement.predicate.submission_id}/main.`;
  const subject = statement.subject.find((s) => s.name.startsWith(prefix));
  return subject ? subject.digest.sha256 : null;
}

/** Check a verified receipt for one submission: it names that submission and, given the
 * code as served, that code's sha256 as its subject. Problems as strings. */
export async function matches(verified, submissionId, code) {
  const problems = [];
  if (verified.predicate.submission_id !== submissionId) {
    problems.push(`the receipt is of submission ${verified.predicate.submission_id}, not this one`);
  }
  if (code !== null && code !== undefined) {
    const said = codeDigest(verified.statement);
    const actual = await sha256Hex(code);
    if (said !== actual) {
      problems.push(`the receipt's code digest ${said} is not the sha256 of the code shown (${actual})`);
    }
  }
  return problems;
}

/** The links of a run of verified receipts in sequence order: for each, "first" (the
 * genesis receipt), "ok", "broken" (cites another digest), or "gap" (a receipt between is
 * not in the list, so the link cannot be checked here). */
export function chainLinks(entries) {
  const links = [];
  let before = null;
  for (const entry of entries) {
    const p = entry.predicate;
    if (p.sequence === 1) {
      links.push(p.previous_receipt_digest === null ? "first" : "broken");
    } else if (before === null || before.predicate.sequence !== p.sequence - 1) {
      links.push("gap");
    } else {
      links.push(p.previous_receipt_digest === before.digest ? "ok" : "broken");
    }
    before = entry;
  }
  return links;
}
