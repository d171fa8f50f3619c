// The audit log page, on its own: GET /providers/Microsoft.BatchAI/auditLog (Owner only).
// A server without the route (404) gets "not available"; one that refuses (403) says why.
import { api, PROVIDER } from "./api.js";
import { h, table, when } from "./ui.js";

const COLUMNS = [
  ["time", "Time"],
  ["principalName", "Principal"],
  ["action", "Action"],
  ["resource", "Resource"],
  ["result", "Result"],
  ["message", "Detail"],
];

// A resource id without what every id here starts with (the full id is its title).
function cell(key, value) {
  const text = value === undefined || value === null ? "" : String(value);
  if (key !== "resource") return text;
  return h("span", { title: text }, text.replace(/^\/subscriptions\/[^/]+\/resourceGroups\/([^/]+)\/providers\/Microsoft\.BatchAI\//i, "$1/"));
}

export function auditPage(view) {
  const status = h("p", { class: "muted" }, "Loading…");
  const rows = h("div");
  const more = h("button", { type: "button", hidden: true }, "More");
  const filters = {};
  const form = h(
    "form",
    { class: "filters" },
    ...["principal", "action", "resource", "result"].map((name) => h("label", {}, name, h("input", { name, autocomplete: "off" }))),
    h("button", { type: "submit" }, "Filter"),
  );
  let next = null;
  let shown = [];

  async function load(reset) {
    try {
      const page = reset ? await api("GET", `${PROVIDER}/auditLog`, { params: filters }) : await api("GET", next);
      shown = reset ? page.value : shown.concat(page.value);
      next = page.nextLink || null;
      more.hidden = !next;
      status.textContent = shown.length ? `${shown.length} entries, oldest first.` : "No entries.";
      rows.replaceChildren(table(COLUMNS.map(([key, title]) => [title, (e) => cell(key, e[key])]), shown));
    } catch (e) {
      form.hidden = true;
      status.textContent =
        e.status === 404 ? "The audit log is not available on this server." : e.status === 403 ? `Not allowed: ${e.message}` : `Error: ${e.message}`;
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    for (const input of form.querySelectorAll("input")) {
      if (input.value) filters[input.name] = input.value;
      else delete filters[input.name];
    }
    load(true);
  });
  more.addEventListener("click", () => load(false));
  view.replaceChildren(h("h1", {}, "Audit log"), form, status, rows, more);
  when(load(true));
  return () => {};
}
