// The dashboard's side of the ARM API: the bearer token (sessionStorage), requests, event streams, roles.
export const API_VERSION = "2018-05-01";
export const PROVIDER = "/providers/Microsoft.BatchAI";
const TOKEN_KEY = "batchai.token";
const SUB_KEY = "batchai.subscription";
export const DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000";
const MAX_PAGES = 20; // lists stop there (MAX_PAGES * page size rows); the page says so

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  subscription: () => sessionStorage.getItem(SUB_KEY) || DEFAULT_SUBSCRIPTION,
  signIn(token, subscription) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(SUB_KEY, subscription || DEFAULT_SUBSCRIPTION);
  },
  signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(SUB_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

function url(path, params) {
  const u = new URL(path, location.origin);
  if (u.origin !== location.origin) throw new ApiError(0, "Refused", "a link to another server");
  if (!u.searchParams.has("api-version")) u.searchParams.set("api-version", API_VERSION);
  for (const [k, v] of Object.entries(params || {})) u.searchParams.set(k, v);
  return u;
}

function headers(extra) {
  return { Authorization: `Bearer ${session.token()}`, ...extra };
}

async function failure(res) {
  let code = "Error";
  let message = `HTTP ${res.status}`;
  try {
    const body = await res.json();
    code = body.error.code;
    message = body.error.message;
  } catch (e) {
    /* not an ARM error body */
  }
  if (res.status === 401) onUnauthorized(message);
  return new ApiError(res.status, code, message);
}

export async function api(method, path, { params, body } = {}) {
  const res = await fetch(url(path, params), {
    method,
    headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  if (!res.ok) throw await failure(res);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

// Every page of a list (nextLink), up to MAX_PAGES: {value, truncated}.
export async function listAll(path, params) {
  let page = await api("GET", path, { params });
  const value = [...page.value];
  for (let n = 1; page.nextLink && n < MAX_PAGES; n++) {
    page = await api("GET", page.nextLink);
    value.push(...page.value);
  }
  return { value, truncated: Boolean(page.nextLink) };
}

// Server-sent events read with fetch (an EventSource cannot send the Authorization header).
// handlers: {eventName(data)}, params() -> query for each (re)connection, error(ApiError).
// The server ends a stream after a while, or with an `end` event; it is reopened after `retry` ms
// unless it ended.
export function subscribe(path, handlers, params = () => ({})) {
  const abort = new AbortController();
  let closed = false;
  let retry = 2000;
  let ended = false;
  const dispatch = (block) => {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const at = line.indexOf(":");
      const field = at < 0 ? line : line.slice(0, at);
      const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
    }
    if (!data.length) return;
    if (name === "end" || name === "gone") ended = true;
    if (handlers[name]) handlers[name](JSON.parse(data.join("\n")));
  };
  (async () => {
    while (!closed && !ended) {
      try {
        const res = await fetch(url(path, params()), { headers: headers({ Accept: "text/event-stream" }), signal: abort.signal, cache: "no-store" });
        if (!res.ok) {
          const err = await failure(res);
          if (handlers.error) handlers.error(err);
          if (res.status === 401 || res.status === 403 || res.status === 404) return;
        } else {
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value.replace(/\r\n?/g, "\n");
            let cut;
            while ((cut = buffer.indexOf("\n\n")) >= 0) {
              dispatch(buffer.slice(0, cut));
              buffer = buffer.slice(cut + 2);
            }
          }
        }
      } catch (e) {
        if (closed) return;
      }
      if (!closed && !ended) await new Promise((r) => setTimeout(r, retry));
    }
  })();
  return {
    close() {
      closed = true;
      abort.abort();
    },
  };
}

// Roles: GET /providers/Microsoft.BatchAI/whoami; a server without it has one token, the service owner's.
const RANKS = { Reader: 0, Contributor: 1, Owner: 2 };
export async function whoami() {
  try {
    return await api("GET", `${PROVIDER}/whoami`);
  } catch (e) {
    if (e.status !== 404) throw e;
    return { principal: { name: "service owner" }, assignments: [{ scope: "/", role: "Owner" }], assumed: true };
  }
}

export function roleAt(who, resourceId) {
  const id = resourceId.toLowerCase();
  let best = -1;
  for (const a of who.assignments || []) {
    const scope = a.scope.toLowerCase().replace(/\/$/, "");
    if (a.scope === "/" || id === scope || id.startsWith(scope + "/")) best = Math.max(best, RANKS[a.role] ?? -1);
  }
  return best;
}

export const canWrite = (who, resourceId) => roleAt(who, resourceId) >= RANKS.Contributor;
export const isOwnerAnywhere = (who) => (who.assignments || []).some((a) => a.role === "Owner");

// Paths
const seg = encodeURIComponent;
export const paths = {
  workspaces: () => `/subscriptions/${seg(session.subscription())}${PROVIDER}/workspaces`,
  workspace: (rg, ws) => `/subscriptions/${seg(session.subscription())}/resourceGroups/${seg(rg)}${PROVIDER}/workspaces/${seg(ws)}`,
  cluster: (rg, ws, c) => `${paths.workspace(rg, ws)}/clusters/${seg(c)}`,
  experiment: (rg, ws, e) => `${paths.workspace(rg, ws)}/experiments/${seg(e)}`,
  job: (rg, ws, e, j) => `${paths.experiment(rg, ws, e)}/jobs/${seg(j)}`,
  sweep: (rg, ws, e, s) => `${paths.experiment(rg, ws, e)}/sweeps/${seg(s)}`,
};

// The parts of an ARM id: {rg, ws, cluster?, exp?, job?}
export function parseId(id) {
  const parts = id.split("/");
  const at = (name) => {
    const i = parts.findIndex((p) => p.toLowerCase() === name.toLowerCase());
    return i >= 0 ? parts[i + 1] : undefined;
  };
  return { rg: at("resourceGroups"), ws: at("workspaces"), cluster: at("clusters"), exp: at("experiments"), job: at("jobs"), sweep: at("sweeps") };
}
