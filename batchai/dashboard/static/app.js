// The dashboard: a hash router over pages that read the ARM API with the signed-in principal's token.
import { api, canWrite, isOwnerAnywhere, listAll, parseId, paths, session, subscribe, whenUnauthorized, whoami } from "./api.js";
import { auditPage } from "./audit.js";
import { objectivePlot } from "./plot.js";
import { action, badge, facts, flash, h, link, table, time, when } from "./ui.js";

const view = document.getElementById("view");
const who = { current: null };
let cleanup = () => {};

const e = encodeURIComponent;
const href = {
  workspace: (rg, ws) => `#/w/${e(rg)}/${e(ws)}`,
  cluster: (rg, ws, c) => `#/c/${e(rg)}/${e(ws)}/${e(c)}`,
  experiment: (rg, ws, x) => `#/e/${e(rg)}/${e(ws)}/${e(x)}`,
  job: (rg, ws, x, j) => `#/j/${e(rg)}/${e(ws)}/${e(x)}/${e(j)}`,
  sweep: (rg, ws, x, s) => `#/s/${e(rg)}/${e(ws)}/${e(x)}/${e(s)}`,
};
function jobLink(id, text) {
  const p = parseId(id);
  return link(href.job(p.rg, p.ws, p.exp, p.job), text || p.job);
}
const writable = (id) => who.current && canWrite(who.current, id);

// -- sign-in ------------------------------------------------------------------------------------
async function exchange(code) {
  const res = await fetch("/dashboard/signin", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ code }) });
  const body = await res.json();
  if (!res.ok) throw new Error(body.error ? body.error.message : `HTTP ${res.status}`);
  return body.token;
}

function signInPage(message) {
  const token = h("input", { name: "token", type: "password", autocomplete: "off", required: true, id: "token" });
  const subscription = h("input", { name: "subscription", value: session.subscription(), id: "subscription" });
  const note = h("p", { class: "muted", id: "signin-note" }, message || "");
  const form = h(
    "form",
    { class: "signin", id: "signin" },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste a bearer token (the server's, or one made with batchai token create), or open the link batchai dashboard prints."),
    h("label", { for: "token" }, "Token"),
    token,
    h("label", { for: "subscription" }, "Subscription"),
    subscription,
    h("button", { type: "submit" }, "Sign in"),
    note,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    session.signIn(token.value.trim(), subscription.value.trim());
    try {
      who.current = await whoami();
      await api("GET", paths.workspaces());
      location.hash = "#/";
      route();
    } catch (err) {
      session.signOut();
      note.textContent = `Not signed in: ${err.message}`;
    }
  });
  view.replaceChildren(form);
  header();
  return () => {};
}

whenUnauthorized((message) => {
  session.signOut();
  who.current = null;
  cleanup();
  cleanup = signInPage(`Signed out: ${message}`);
});

function header() {
  const box = document.getElementById("principal");
  if (!session.token() || !who.current) {
    box.replaceChildren();
    return;
  }
  const roles = (who.current.assignments || []).map((a) => `${a.role} at ${a.scope === "/" ? "the service" : parseId(a.scope).ws || a.scope}`);
  const out = h("button", { type: "button", id: "signout" }, "Sign out");
  out.addEventListener("click", () => {
    session.signOut();
    who.current = null;
    location.hash = "#/signin";
  });
  box.replaceChildren(h("span", { id: "who", title: roles.join(", ") }, `${who.current.principal.name || who.current.principal.id} · ${roles.join(", ")}`), out);
}

// -- pages ----------------------------------------------------------------------------------------
function workspacesPage() {
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const load = async () => {
    const { value, truncated } = await listAll(paths.workspaces());
    list.replaceChildren(
      table(
        [
          ["Workspace", (w) => link(href.workspace(parseId(w.id).rg, w.name), w.name)],
          ["Resource group", (w) => parseId(w.id).rg],
          ["Location", (w) => w.location],
          ["State", (w) => badge(w.properties.provisioningState)],
          ["Created", (w) => time(w.properties.creationTime)],
          ["", (w) => (writable(w.id) ? action("Delete", () => api("DELETE", w.id).then(load), { confirm: `Delete workspace ${w.name} and everything in it?`, danger: true }) : "")],
        ],
        value,
        "No workspace you may read.",
      ),
      truncated ? h("p", { class: "muted" }, "Only the first pages are shown.") : "",
    );
  };
  const parts = [h("h1", {}, "Workspaces"), list];
  if (writable("/")) {
    const name = h("input", { name: "name", placeholder: "name", required: true, pattern: "[-\\w]{1,64}" });
    const rg = h("input", { name: "resourceGroup", value: "default", required: true });
    const form = h("form", { class: "inline write" }, h("strong", {}, "New workspace"), name, rg, h("button", { type: "submit" }, "Create"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      when(api("PUT", paths.workspace(rg.value, name.value), { body: { location: "local" } }).then(load));
    });
    parts.push(form);
  }
  view.replaceChildren(...parts);
  when(load());
  return () => {};
}

function clusterRow(rg, ws) {
  return [
    ["Cluster", (c) => link(href.cluster(rg, ws, c.name), c.name)],
    ["VM size", (c) => c.properties.vmSize],
    ["Allocation", (c) => badge(c.properties.allocationState)],
    ["Nodes", (c) => nodeSummary(c.properties)],
    ["GPUs", (c) => String(c.properties.gpuCount || 0)],
  ];
}

function nodeSummary(p) {
  const n = p.nodeStateCounts || {};
  return `${p.currentNodeCount ?? 0} (${n.idleNodeCount || 0} idle, ${n.runningNodeCount || 0} running, ${n.preparingNodeCount || 0} preparing, ${n.unusableNodeCount || 0} unusable)`;
}

function workspacePage(rg, ws) {
  const base = paths.workspace(rg, ws);
  const clusters = h("div");
  const experiments = h("div");
  const servers = h("div");
  const load = async () => {
    const [c, x, f] = await Promise.all([listAll(`${base}/clusters`), listAll(`${base}/experiments`), listAll(`${base}/fileServers`)]);
    const del = (r, what) => (writable(r.id) ? action("Delete", () => api("DELETE", r.id).then(load), { confirm: `Delete ${what} ${r.name}?`, danger: true }) : "");
    clusters.replaceChildren(table([...clusterRow(rg, ws), ["", (r) => del(r, "cluster")]], c.value, "No cluster."));
    experiments.replaceChildren(
      table(
        [
          ["Experiment", (r) => link(href.experiment(rg, ws, r.name), r.name)],
          ["Created", (r) => time(r.properties.creationTime)],
          ["", (r) => del(r, "experiment")],
        ],
        x.value,
        "No experiment.",
      ),
    );
    servers.replaceChildren(
      table(
        [
          ["File server", (r) => r.name],
          ["VM size", (r) => r.properties.vmSize],
          ["Mount point", (r) => (r.properties.mountSettings || {}).mountPoint],
          ["", (r) => del(r, "file server")],
        ],
        f.value,
        "No file server.",
      ),
    );
  };
  const parts = [h("p", { class: "crumbs" }, link("#/", "Workspaces"), " / ", ws), h("h1", {}, `Workspace ${ws}`), h("h2", {}, "Clusters"), clusters];
  if (writable(base)) {
    const name = h("input", { name: "cluster", placeholder: "cluster name", required: true });
    const nodes = h("input", { name: "nodes", type: "number", min: 0, max: 100, value: 1, required: true });
    const form = h("form", { class: "inline write" }, h("strong", {}, "New cluster"), name, h("label", {}, "nodes ", nodes), h("button", { type: "submit" }, "Create"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const body = {
        properties: {
          vmSize: "STANDARD_D1_V2",
          scaleSettings: { manual: { targetNodeCount: Number(nodes.value), nodeDeallocationOption: "requeue" } },
          userAccountSettings: { adminUserName: "batchai" },
        },
      };
      when(api("PUT", `${base}/clusters/${e(name.value)}`, { body }).then(load));
    });
    parts.push(form);
  }
  parts.push(h("h2", {}, "Experiments"), experiments);
  if (writable(base)) {
    const name = h("input", { name: "experiment", placeholder: "experiment name", required: true });
    const form = h("form", { class: "inline write" }, h("strong", {}, "New experiment"), name, h("button", { type: "submit" }, "Create"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      when(api("PUT", `${base}/experiments/${e(name.value)}`, { body: {} }).then(load));
    });
    parts.push(form);
  }
  parts.push(h("h2", {}, "File servers"), servers);
  view.replaceChildren(...parts);
  when(load());
  return () => {};
}

function clusterPage(rg, ws, name) {
  const base = paths.cluster(rg, ws, name);
  const summary = h("div", {}, h("p", { class: "muted" }, "Connecting…"));
  const buttons = h("div", { class: "buttons" });
  const nodes = h("div");
  const queue = h("div", { id: "queue" });
  const show = ({ cluster, nodes: list, queue: q }) => {
    const p = cluster.properties;
    summary.replaceChildren(
      facts([
        ["VM size", p.vmSize],
        ["Priority", p.vmPriority],
        ["Allocation", badge(p.allocationState)],
        ["Nodes", nodeSummary(p)],
        ["Scale", p.scaleSettings.autoScale ? `auto ${p.scaleSettings.autoScale.minimumNodeCount}–${p.scaleSettings.autoScale.maximumNodeCount}` : `manual, target ${p.scaleSettings.manual.targetNodeCount}`],
        ["GPUs", String(p.gpuCount || 0)],
        ["Queue", q.paused ? "paused" : `${q.value.length}${q.more ? "+" : ""} waiting, ${q.idleNodes} idle of ${q.usableNodes} usable nodes`],
        ["Errors", (p.errors || []).map((x) => `${x.code}: ${x.message}`).join("; ")],
      ]),
    );
    buttons.replaceChildren();
    if (writable(cluster.id)) {
      buttons.append(
        q.paused ? action("Resume", () => api("POST", `${base}/resume`)) : action("Pause", () => api("POST", `${base}/pause`)),
        action("Delete", () => api("DELETE", base).then(() => (location.hash = href.workspace(rg, ws))), { confirm: `Delete cluster ${name}?`, danger: true }),
      );
    }
    nodes.replaceChildren(
      table(
        [
          ["Node", (n) => n.name],
          ["State", (n) => badge(n.state)],
          ["Job", (n) => (n.job ? jobLink(n.job) : Object.entries(n.sharedBy || {}).map(([id, gpus]) => h("span", {}, jobLink(id), ` (GPU ${gpus.join(", ")}) `)))],
          ["GPUs", (n) => (n.gpus.length ? n.gpus.map((g) => `${g.index}: ${g.name}`).join(", ") : "none")],
          ["Address", (n) => n.address],
          ["Last seen", (n) => (n.lastSeenSecondsAgo === null ? "" : `${n.lastSeenSecondsAgo} s ago`)],
          ["Error", (n) => n.error || ""],
        ],
        list,
        "No node.",
      ),
    );
    queue.replaceChildren(
      table(
        [
          ["#", (j) => String(j.position)],
          ["Job", (j) => jobLink(j.id, j.name)],
          ["Experiment", (j) => j.experiment],
          ["Priority", (j) => j.priority],
          ["Nodes", (j) => String(j.nodeCount)],
          ["Why it waits", (j) => h("span", { class: "reason" }, h("code", {}, j.reason.code), " ", j.reason.message)],
        ],
        q.value,
        "No job is queued.",
      ),
      q.more ? h("p", { class: "muted" }, "Deeper jobs wait behind these.") : "",
    );
  };
  view.replaceChildren(
    h("p", { class: "crumbs" }, link("#/", "Workspaces"), " / ", link(href.workspace(rg, ws), ws), " / ", name),
    h("h1", {}, `Cluster ${name}`),
    summary,
    buttons,
    h("h2", {}, "Nodes"),
    nodes,
    h("h2", {}, "Queue"),
    queue,
  );
  const stream = subscribe(`${base}/stream`, { cluster: show, gone: () => flash("The cluster was deleted."), error: (err) => flash(err.message) });
  return () => stream.close();
}

function experimentPage(rg, ws, exp) {
  const base = paths.experiment(rg, ws, exp);
  const jobs = h("div", {}, h("p", { class: "muted" }, "Connecting…"));
  const sweeps = h("div");
  const show = ({ value, more }) => {
    jobs.replaceChildren(
      table(
        [
          ["Job", (j) => link(href.job(rg, ws, exp, j.name), j.name)],
          ["State", (j) => badge(j.properties.executionState)],
          ["Priority", (j) => j.properties.schedulingPriority || "normal"],
          ["Nodes", (j) => String(j.properties.nodeCount || 1)],
          ["Cluster", (j) => (j.properties.cluster ? parseId(j.properties.cluster.id).cluster : "")],
          ["Created", (j) => time(j.properties.creationTime)],
          ["Exit code", (j) => String((j.properties.executionInfo || {}).exitCode ?? "")],
          ["", (j) => jobButtons(j, () => {})],
        ],
        value,
        "No job.",
      ),
      more ? h("p", { class: "muted" }, "The oldest jobs are shown; the API lists them all.") : "",
    );
  };
  view.replaceChildren(
    h("p", { class: "crumbs" }, link("#/", "Workspaces"), " / ", link(href.workspace(rg, ws), ws), " / ", exp),
    h("h1", {}, `Experiment ${exp}`),
    h("h2", {}, "Sweeps"),
    sweeps,
    h("h2", {}, "Jobs"),
    jobs,
  );
  when(
    listAll(`${base}/sweeps`).then(({ value }) =>
      sweeps.replaceChildren(
        table(
          [
            ["Sweep", (s) => link(href.sweep(rg, ws, exp, s.name), s.name)],
            ["State", (s) => badge(s.properties.executionState)],
            ["Trials", (s) => Object.entries(s.properties.trialStateCounts || {}).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`).join(", ")],
            ["Best", (s) => (s.properties.bestTrial ? `${s.properties.bestTrial.name}: ${s.properties.bestTrial.objective}` : "")],
          ],
          value,
          "No sweep.",
        ),
      ),
    ),
  );
  const stream = subscribe(`${base}/stream`, { jobs: show, error: (err) => flash(err.message) });
  return () => stream.close();
}

function jobButtons(job, after) {
  if (!writable(job.id)) return "";
  const state = job.properties.executionState;
  const box = h("span", { class: "buttons" });
  if (state === "queued" || state === "running") box.append(action("Terminate", () => api("POST", `${job.id}/terminate`).then(after), { confirm: `Terminate ${job.name}?` }));
  box.append(action("Delete", () => api("DELETE", job.id).then(after), { confirm: `Delete job ${job.name}?`, danger: true }));
  return box;
}

function outputFiles(job, box) {
  const dirs = ["stdouterr", ...(job.properties.outputDirectories || []).map((d) => d.id)];
  const listing = h("div");
  const select = h("select", { id: "output-dir" }, dirs.map((d) => h("option", { value: d }, d)));
  const load = async (dir, sub) => {
    const { value, truncated } = await listAll(`${job.id}/listOutputFiles`, { outputdirectoryid: dir, directory: sub || "." });
    listing.replaceChildren(
      sub && sub !== "." ? h("p", {}, `${dir}/${sub} `, h("button", { type: "button", onclick: () => when(load(dir, sub.split("/").slice(0, -1).join("/") || ".")) }, "Up")) : "",
      table(
        [
          ["Name", (f) => (f.fileType === "directory" ? h("button", { type: "button", class: "linkish", onclick: () => when(load(dir, sub && sub !== "." ? `${sub}/${f.name}` : f.name)) }, `${f.name}/`) : h("a", { href: f.downloadUrl, download: f.name, rel: "noopener" }, f.name))],
          ["Size", (f) => (f.properties ? `${f.properties.contentLength} B` : "")],
          ["Modified", (f) => (f.properties ? time(f.properties.lastModified) : "")],
        ],
        value,
        "No file yet.",
      ),
      truncated ? h("p", { class: "muted" }, "Only the first pages are shown.") : "",
    );
  };
  select.addEventListener("change", () => when(load(select.value)));
  box.replaceChildren(h("label", {}, "Directory ", select), listing);
  when(load("stdouterr"));
  return () => when(load(select.value));
}

function jobPage(rg, ws, exp, name) {
  const base = paths.job(rg, ws, exp, name);
  const summary = h("div", {}, h("p", { class: "muted" }, "Connecting…"));
  const buttons = h("div", { class: "buttons" });
  const events = h("ol", { class: "timeline", id: "events" });
  const tabs = h("div", { class: "tabs", id: "log-files" });
  const log = h("pre", { class: "log", id: "log" });
  const files = h("div", { id: "files" });
  let file = "stdout.txt";
  let next = -1;
  let stream = null;
  let refreshFiles = null;
  let last = null;

  const open = () => {
    if (stream) stream.close();
    stream = subscribe(
      `${base}/stream`,
      {
        job: (job) => {
          const p = job.properties;
          const info = p.executionInfo || {};
          summary.replaceChildren(
            facts([
              ["State", badge(p.executionState)],
              ["Cluster", p.cluster ? link(href.cluster(rg, ws, parseId(p.cluster.id).cluster), parseId(p.cluster.id).cluster) : ""],
              ["Nodes", String(p.nodeCount || 1)],
              ["Priority", p.schedulingPriority || "normal"],
              ["Created", time(p.creationTime)],
              ["Started", time(info.startTime)],
              ["Ended", time(info.endTime)],
              ["Exit code", info.exitCode === undefined || info.exitCode === null ? "" : String(info.exitCode)],
              ["Errors", (info.errors || []).map((x) => `${x.code}: ${x.message}`).join("; ")],
            ]),
          );
          buttons.replaceChildren(jobButtons(job, () => {}));
          events.replaceChildren(
            ...(p.events || []).map((ev) => {
              const { time: at, event, attempt, ...rest } = ev;
              const detail = Object.entries(rest).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
              return h("li", {}, h("time", {}, time(at)), " ", h("strong", {}, event), ` (attempt ${attempt})`, detail ? ` ${detail}` : "");
            }),
          );
          if (!last || last.properties.executionState !== p.executionState) {
            if (refreshFiles) refreshFiles();
            else refreshFiles = outputFiles(job, files);
          }
          last = job;
        },
        files: (list) => {
          if (refreshFiles) refreshFiles(); // a new log file: the listing below has it too
          tabs.replaceChildren(
            ...list.map((name) => {
              const tab = h("button", { type: "button", class: name === file ? "tab active" : "tab" }, name);
              tab.addEventListener("click", () => {
                file = name;
                next = -1;
                log.textContent = "";
                open();
              });
              return tab;
            }),
          );
        },
        log: (chunk) => {
          const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
          log.append(document.createTextNode(chunk.text));
          next = chunk.next;
          if (log.textContent.length > 2_000_000) log.textContent = log.textContent.slice(-1_000_000);
          if (stick) log.scrollTop = log.scrollHeight;
        },
        end: (x) => summary.setAttribute("data-ended", x.executionState),
        gone: () => flash("The job was deleted."),
        error: (err) => flash(err.message),
      },
      () => ({ file, offset: next }),
    );
  };
  view.replaceChildren(
    h("p", { class: "crumbs" }, link("#/", "Workspaces"), " / ", link(href.workspace(rg, ws), ws), " / ", link(href.experiment(rg, ws, exp), exp), " / ", name),
    h("h1", {}, `Job ${name}`),
    summary,
    buttons,
    h("h2", {}, "Logs"),
    tabs,
    log,
    h("h2", {}, "Events"),
    events,
    h("h2", {}, "Output files"),
    files,
  );
  open();
  return () => stream && stream.close();
}

function sweepPage(rg, ws, exp, name) {
  const base = paths.sweep(rg, ws, exp, name);
  const summary = h("div", {}, h("p", { class: "muted" }, "Connecting…"));
  const buttons = h("div", { class: "buttons" });
  const plot = h("figure", { id: "sweep-plot" });
  const trials = h("div");
  const show = (sweep) => {
    const p = sweep.properties;
    const objective = p.objective || {};
    summary.replaceChildren(
      facts([
        ["State", badge(p.executionState)],
        ["Objective", `${objective.goal} ${objective.primary_metric}`],
        ["Sampling", typeof p.sampling_algorithm === "string" ? p.sampling_algorithm : (p.sampling_algorithm || {}).type],
        ["Trials", Object.entries(p.trialStateCounts || {}).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`).join(", ")],
        ["Best", p.bestTrial ? `${p.bestTrial.name}: ${p.bestTrial.objective} ${JSON.stringify(p.bestTrial.parameters)}` : ""],
      ]),
    );
    buttons.replaceChildren(p.executionState === "running" && writable(sweep.id) ? action("Cancel", () => api("POST", `${base}/cancel`), { confirm: `Cancel sweep ${name}?`, danger: true }) : "");
    plot.replaceChildren(objectivePlot(p.trials, objective.goal, objective.primary_metric || "objective"), h("figcaption", {}, `${objective.primary_metric} per trial, and the best so far`));
    trials.replaceChildren(
      table(
        [
          ["#", (t) => String(t.number)],
          ["Job", (t) => link(href.job(rg, ws, exp, t.name), t.name)],
          ["State", (t) => badge(t.state)],
          ["Parameters", (t) => Object.entries(t.parameters || {}).map(([k, v]) => `${k}=${v}`).join(" ")],
          ["Objective", (t) => (t.objective === null || t.objective === undefined ? "" : String(t.objective))],
          ["Last step", (t) => String(t.lastStep ?? "")],
        ],
        [...p.trials].sort((a, b) => a.number - b.number),
        "No trial yet.",
      ),
    );
  };
  view.replaceChildren(
    h("p", { class: "crumbs" }, link("#/", "Workspaces"), " / ", link(href.workspace(rg, ws), ws), " / ", link(href.experiment(rg, ws, exp), exp), " / sweep ", name),
    h("h1", {}, `Sweep ${name}`),
    summary,
    buttons,
    plot,
    h("h2", {}, "Trials"),
    trials,
  );
  const stream = subscribe(`${base}/stream`, { sweep: show, gone: () => flash("The sweep was deleted."), error: (err) => flash(err.message) });
  return () => stream.close();
}

// -- routing --------------------------------------------------------------------------------------
const ROUTES = [
  [/^#\/?$/, workspacesPage],
  [/^#\/w\/([^/]+)\/([^/]+)$/, workspacePage],
  [/^#\/c\/([^/]+)\/([^/]+)\/([^/]+)$/, clusterPage],
  [/^#\/e\/([^/]+)\/([^/]+)\/([^/]+)$/, experimentPage],
  [/^#\/j\/([^/]+)\/([^/]+)\/([^/]+)\/([^/]+)$/, jobPage],
  [/^#\/s\/([^/]+)\/([^/]+)\/([^/]+)\/([^/]+)$/, sweepPage],
  [/^#\/audit$/, () => auditPage(view)],
];

async function route() {
  cleanup();
  cleanup = () => {};
  flash("");
  let hash = location.hash || "#/";
  if (hash.startsWith("#signin=")) {
    const code = hash.slice("#signin=".length);
    hash = "#/";
    history.replaceState(null, "", location.pathname + location.search + hash); // the code leaves the address bar and history at once
    try {
      const token = await exchange(code);
      session.signIn(token, new URLSearchParams(location.search).get("subscription"));
    } catch (err) {
      cleanup = signInPage(`The sign-in link did not work: ${err.message}`);
      return;
    }
  }
  if (!session.token() || hash === "#/signin") {
    cleanup = signInPage();
    return;
  }
  if (!who.current) {
    try {
      who.current = await whoami();
    } catch (err) {
      cleanup = signInPage(err.message);
      return;
    }
  }
  header();
  document.getElementById("nav-audit").hidden = !isOwnerAnywhere(who.current); // the audit log is the Owners'
  for (const [pattern, page] of ROUTES) {
    const match = hash.match(pattern);
    if (match) {
      cleanup = page(...match.slice(1).map(decodeURIComponent));
      return;
    }
  }
  view.replaceChildren(h("h1", {}, "Not found"), h("p", {}, link("#/", "Workspaces")));
}

window.addEventListener("hashchange", route);
route();
