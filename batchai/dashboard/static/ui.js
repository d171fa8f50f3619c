// DOM helpers. Every value from the server becomes text (textContent), never markup.

export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const link = (href, text) => h("a", { href }, text);

export function badge(state) {
  const text = state || "unknown";
  return h("span", { class: `badge state-${text.replace(/[^a-z]/gi, "").toLowerCase()}` }, text);
}

// columns: [[title, row -> Node | string]]
export function table(columns, rows, empty = "None.") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", {}, title)))),
      h(
        "tbody",
        {},
        rows.map((row) => h("tr", {}, columns.map(([title, cell]) => h("td", { "data-label": title }, cell(row) ?? "")))),
      ),
    ),
  );
}

export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function when(promise) {
  promise.catch((e) => flash(`Error: ${e.message}`));
}

export function flash(message) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.hidden = !message;
}

export function time(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

// A button that changes something: only drawn for principals who may (the API refuses the others anyway).
export function action(label, run, { confirm: question, danger } = {}) {
  const button = h("button", { type: "button", class: `write${danger ? " danger" : ""}` }, label);
  button.addEventListener("click", async () => {
    if (question && !window.confirm(question)) return;
    button.disabled = true;
    try {
      await run();
      flash("");
    } catch (e) {
      flash(`${label} failed: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}
