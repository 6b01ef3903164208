// Talking to the controller's API: the API key lives in sessionStorage (this tab only) and
// goes out as a bearer token on /v1 requests, never in a URL.

const KEY = "sandgate.apiKey";

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set(key) { sessionStorage.setItem(KEY, key); },
  clear() { sessionStorage.removeItem(KEY); },
};

/** An answer other than 2xx: the API's stable error code and its message. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function headers(key, extra = {}) {
  const found = { ...extra };
  if (key) found.Authorization = `Bearer ${key}`;
  return found;
}

async function refusal(answer) {
  let code = "http_" + answer.status;
  let message = `the controller answered ${answer.status} ${answer.statusText}`;
  try {
    const body = await answer.json();
    if (body && body.error && typeof body.error.message === "string") {
      code = String(body.error.code);
      message = body.error.message;
    }
  } catch { /* not the API's error body: keep the status line */ }
  const wait = Number(answer.headers.get("Retry-After"));
  return new ApiError(answer.status, code, message, Number.isFinite(wait) ? wait : null);
}

/** GET (or ``method``) ``path`` with the session's key (or ``key``); the parsed answer:
 * JSON, text, or with ``as: "response"`` the Response itself. */
export async function call(path, { method = "GET", body, key = session.key, as = "auto",
  signal } = {}) {
  const init = {
    method, signal, cache: "no-store", credentials: "omit", redirect: "error",
    headers: headers(key, body === undefined ? {} : { "Content-Type": "application/json" }),
  };
  if (body !== undefined) init.body = JSON.stringify(body);
  const answer = await fetch(path, init);
  if (!answer.ok) throw await refusal(answer);
  if (as === "response") return answer;
  const type = answer.headers.get("Content-Type") || "";
  if (as === "json" || (as === "auto" && type.startsWith("application/json"))) {
    return answer.json();
  }
  return answer.text();
}

/** The server-sent events of ``path``, read with fetch (EventSource cannot send the bearer
 * header): yields {id, event, data} until the server ends the stream. */
export async function* events(path, { lastEventId = null, signal } = {}) {
  const extra = { Accept: "text/event-stream" };
  if (lastEventId !== null) extra["Last-Event-ID"] = String(lastEventId);
  const answer = await fetch(path, {
    cache: "no-store", credentials: "omit", redirect: "error", signal,
    headers: headers(session.key, extra),
  });
  if (!answer.ok) throw await refusal(answer);
  const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { id: null, event: "message", data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (event.data.length || event.id !== null) {
            yield { id: event.id, event: event.event, data: event.data.join("\n") };
          }
          event = { id: null, event: "message", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") event.data.push(value);
        else if (field === "event") event.event = value;
        else if (field === "id" && !value.includes("\0")) event.id = value;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
