// The service's HTTP API as the playground uses it: every image endpoint answers
// {"data": [{"b64_json" | "url", "seed"}]}; every error carries error.message. With PAELLA_API_KEYS set,
// every call carries the key typed in the page (kept for this tab only).

const KEY = "paella-api-key";

export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function key() {
  return sessionStorage.getItem(KEY) ?? "";
}

function authorised(headers = {}) {
  return key() ? { ...headers, Authorization: `Bearer ${key()}` } : headers;
}

export class ApiError extends Error {
  constructor(status, message, ms) {
    super(message);
    this.status = status;
    this.ms = ms;
  }
}

// The served model's card: its name, native canvas and size_multiple.
export async function model() {
  const response = await fetch("/v1/models", { headers: authorised() });
  const body = await response.json();
  if (!response.ok) throw new ApiError(response.status, messageOf(body, response));
  return body.data[0];
}

// POST an image request (a plain object goes as JSON, a FormData as multipart) and return
// {images: [{src, seed}], ms}, ms being the request's latency as the browser saw it.
export async function images(path, body) {
  const init = body instanceof FormData
    ? { method: "POST", headers: authorised(), body }
    : { method: "POST", headers: authorised({ "Content-Type": "application/json" }), body: JSON.stringify(body) };
  const started = performance.now();
  let response;
  let text;
  try {
    response = await fetch(path, init);
    text = await response.text();
  } catch (e) {
    throw new ApiError(0, `the service did not answer (${e.message})`, performance.now() - started);
  }
  const ms = performance.now() - started;
  let parsed = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  if (!response.ok || parsed === null) throw new ApiError(response.status, messageOf(parsed, response, text), ms);
  return { images: parsed.data.map((d) => ({ src: d.b64_json ? `data:image/png;base64,${d.b64_json}` : d.url, seed: d.seed })), ms };
}

function messageOf(body, response, text = "") {
  return body?.error?.message || text.trim() || `${response.status} ${response.statusText}`;
}
