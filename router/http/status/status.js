// The router's status page: polls /v1/stats, /v1/ring and /v1/hot and draws SECTIONS from them.
// Each section is one entry of SECTIONS: a title and a render(view) that returns nodes
// (or null to hide the section). To show a new figure, add an entry (or a column).
"use strict";

const EVERY = 2;  // seconds between polls
const COLORS = ["#3b6fd4", "#e08a1e", "#2e9e6a", "#a347c2", "#d1495b", "#00a5b5",
                "#7a8b2c", "#8c5a3c", "#5361a6", "#c2407f"];

// -- helpers -----------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

const num = (n) => (n === undefined || n === null) ? "–" : Number(n).toLocaleString("en-US");
const pct = (x) => (x === null || x === undefined || isNaN(x)) ? "–" : (100 * x).toFixed(1) + "%";
const ms = (s) => (s === null || s === undefined || isNaN(s)) ? "–" :
  (s * 1000 < 10 ? (s * 1000).toFixed(2) : (s * 1000).toFixed(0)) + " ms";

function bytes(n) {
  if (n === undefined || n === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function ago(seconds) {
  if (seconds < 60) return Math.round(seconds) + " s ago";
  if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
  return (seconds / 3600).toFixed(1) + " h ago";
}

// What changed since the last poll, per second; the total when there is no last poll.
function rate(now, before, seconds) {
  return before === undefined || seconds <= 0 ? null : Math.max(0, now - before) / seconds;
}

function ratio(hits, misses) {
  return hits + misses > 0 ? hits / (hits + misses) : null;
}

function table(head, rows) {
  return h("div", {class: "scroll"}, h("table", {},
    h("thead", {}, h("tr", {}, head.map((t, i) => h("th", i ? {} : {class: "text"}, t)))),
    h("tbody", {}, rows)));
}

function figure(value, label) {
  return h("div", {class: "figure"}, h("b", {}, value), h("span", {}, label));
}

function state(s) {
  return h("span", {class: s === "up" ? "up" : "down", "data-state": s}, s);
}

// -- the view: one poll's documents, with the previous one for rates --------------------

function view(stats, ring, hot, previous, seconds) {
  const router = stats.router;
  const groups = {};
  for (const name of Object.keys(router.groups || {})) {
    groups[name] = {name, ...router.groups[name], items: 0, bytes: 0, max_bytes: 0,
                    evictions: 0, expirations: 0, nodes: 0};
  }
  for (const node of Object.values(stats.nodes || {})) {
    for (const g of node.groups || []) {
      const t = groups[g.name];
      if (!t) continue;
      t.items += g.items; t.bytes += g.bytes; t.max_bytes += g.max_bytes;
      t.evictions += g.evictions; t.expirations += g.expirations; t.nodes += 1;
    }
  }
  return {stats, ring, hot, router, groups, previous, seconds,
          colors: Object.fromEntries(ring.nodes.map((n, i) => [n.name, COLORS[i % COLORS.length]]))};
}

// -- sections ----------------------------------------------------------------------------

function overview(v) {
  const r = v.router, p = v.previous && v.previous.router;
  const requests = Object.values(r.requests || {}).reduce((a, b) => a + b, 0);
  const before = p ? Object.values(p.requests || {}).reduce((a, b) => a + b, 0) : undefined;
  const perSecond = rate(requests, before, v.seconds);
  const recent = p ? ratio(r.hits - p.hits, r.misses - p.misses) : null;
  const up = v.ring.nodes.filter((n) => n.state === "up").length;
  return [h("div", {class: "figures"},
    figure(`${up} of ${v.ring.nodes.length}`, "nodes up"),
    figure(perSecond === null ? num(requests) : perSecond.toFixed(1),
           perSecond === null ? "requests" : "requests/s"),
    figure(pct(recent !== null ? recent : ratio(r.hits, r.misses)),
           recent !== null ? `hit ratio (last ${v.seconds.toFixed(0)} s)` : "hit ratio"),
    figure(pct(ratio(r.hits, r.misses)), "hit ratio since start"),
    figure(num(r.loads), "loads"), figure(num(r.inflight), "loads now"),
    figure(num(r.node_errors), "node errors"))];
}

function ringSection(v) {
  const box = svg("svg", {viewBox: "-50 -50 100 100", role: "img",
                          "aria-label": "the ring, each node's share"});
  let start = -Math.PI / 2;
  const radius = 40;
  for (const node of v.ring.nodes) {
    const share = Math.max(node.share, 0);
    if (share <= 0) continue;
    const end = start + 2 * Math.PI * Math.min(share, 0.9999);
    const large = end - start > Math.PI ? 1 : 0;
    const [x1, y1, x2, y2] = [Math.cos(start), Math.sin(start), Math.cos(end), Math.sin(end)]
      .map((c) => (c * radius).toFixed(3));
    const arc = svg("path", {d: `M ${x1} ${y1} A ${radius} ${radius} 0 ${large} 1 ${x2} ${y2}`,
                             fill: "none", "stroke-width": 14,
                             stroke: node.state === "up" ? v.colors[node.name] : "#c62828",
                             "stroke-dasharray": node.state === "up" ? "" : "3 2"});
    arc.append(svg("title", {})); arc.lastChild.textContent = `${node.name}: ${pct(share)}`;
    box.append(arc);
    start = end;
  }
  const label = svg("text", {x: 0, y: 4, "text-anchor": "middle", "font-size": 9, fill: "#6b6b70"});
  label.textContent = `${v.ring.vnodes} vnodes`;
  box.append(label);
  const legend = h("ul", {class: "legend"}, v.ring.nodes.map((n) => h("li", {},
    h("span", {class: "swatch", style: `background:${n.state === "up" ? v.colors[n.name] : "#c62828"}`}),
    h("span", {}, n.name), h("span", {class: "muted"}, pct(n.share)), state(n.state))));
  return [h("div", {class: "ring"}, box, legend)];
}

function nodesSection(v) {
  const health = v.router.health || {}, before = (v.previous && v.previous.router.health) || {};
  const rows = v.ring.nodes.map((n) => {
    const hl = health[n.name] || {}, was = before[n.name] || {};
    const trips = hl.latency || {count: 0, seconds: 0}, old = was.latency;
    const recent = old && trips.count > old.count ?
      (trips.seconds - old.seconds) / (trips.count - old.count) : null;
    const mean = trips.count ? trips.seconds / trips.count : null;
    const held = v.stats.nodes && v.stats.nodes[n.name];
    return h("tr", {"data-node": n.name},
      h("td", {class: "text"}, n.name), h("td", {class: "text muted"}, n.address),
      h("td", {}, state(n.state)), h("td", {}, pct(n.share)),
      h("td", {}, ms(recent !== null ? recent : mean)),
      h("td", {}, num(hl.errors)), h("td", {}, num(n.timeouts)), h("td", {}, num(n.marked_down)),
      h("td", {}, held && !held.error ? bytes(held.bytes) + " / " + bytes(held.max_memory) : "–"),
      h("td", {class: "reason"}, n.down_reason || ""));
  });
  return [table(["node", "address", "state", "share", "round trip", "errors", "timeouts",
                 "downs", "memory", "why down"], rows)];
}

function groupsSection(v) {
  const p = v.previous ? v.previous.router.groups || {} : {};
  const loads = v.router.source_loads || {};
  const rows = Object.values(v.groups).map((g) => {
    const was = p[g.name];
    const recent = was ? ratio(g.hits - was.hits, g.misses - was.misses) : null;
    const finished = Object.values(g.load_results || {}).reduce((a, b) => a + b, 0);
    const done = was ? finished - Object.values(was.load_results || {}).reduce((a, b) => a + b, 0) : 0;
    const latency = done > 0 ? (g.load_seconds - was.load_seconds) / done :
      (finished ? g.load_seconds / finished : null);
    const bound = loads[g.name];
    return h("tr", {"data-group": g.name},
      h("td", {class: "text"}, g.name),
      h("td", {}, pct(recent !== null ? recent : ratio(g.hits, g.misses))),
      h("td", {}, num(g.hits)), h("td", {}, num(g.misses)),
      h("td", {}, num(g.items)), h("td", {}, bytes(g.bytes) + " / " + bytes(g.max_bytes)),
      h("td", {}, num(g.evictions)), h("td", {}, num(g.expirations)),
      h("td", {}, num(g.loads)), h("td", {}, ms(latency)),
      h("td", {}, bound ? `${bound.running} / ${bound.waiting}` : "–"));
  });
  return [table(["group", "hit ratio", "hits", "misses", "items", "bytes", "evictions",
                 "expired", "loads", "load time", "loading / queued"], rows)];
}

function requestsSection(v) {
  const latency = v.router.latency || {}, before = (v.previous && v.previous.router.latency) || {};
  const rows = Object.entries(latency).map(([name, l]) => {
    const was = before[name];
    const n = was ? l.count - was.count : 0;
    return h("tr", {}, h("td", {class: "text"}, name.replace("/", " ")),
      h("td", {}, num(l.count)), h("td", {}, was ? (n / v.seconds).toFixed(1) : "–"),
      h("td", {}, ms(n > 0 ? (l.seconds - was.seconds) / n : (l.count ? l.seconds / l.count : null))));
  });
  return rows.length ? [table(["command", "total", "/s", "mean"], rows)] : null;
}

function hotSection(v) {
  const rows = [];
  for (const [name, g] of Object.entries(v.hot.groups || {})) {
    for (const k of g.keys.slice(0, 10)) {
      rows.push(h("tr", {"data-hot-key": k.key},
        h("td", {class: "text"}, name), h("td", {class: "text"}, k.key),
        h("td", {}, k.rate.toFixed(1)), h("td", {}, k.hot ? "yes" : "–"),
        h("td", {}, k.near ? "yes" : "–")));
    }
  }
  const nears = Object.entries(v.hot.groups || {}).filter(([, g]) => g.near_cache).map(([name, g]) =>
    h("p", {class: "muted", "data-near-cache": name},
      `near cache of ${name}: ${bytes(g.near_cache.bytes)} / ${bytes(g.near_cache.max_bytes)}, ` +
      `${num(g.near_cache.keys)} keys, ${num(g.near_cache.hits)} hits, ttl ${g.near_cache.ttl} s`));
  if (!rows.length) return [h("p", {class: "muted"}, "no gets sampled yet"), ...nears];
  return [table(["group", "key", "gets/s", "hot", "near cache"], rows), ...nears];
}

function workersSection(v) {
  const workers = v.stats.workers || v.ring.workers;
  if (!workers) return [h("p", {class: "muted"}, "one process serves every port (router.workers: 1)")];
  return [table(["worker", "pid", "state", "connections", "ring"], workers.map((w) => h("tr", {},
    h("td", {class: "text"}, w.index), h("td", {}, w.pid === null ? "–" : w.pid),
    h("td", {}, state(w.up ? "up" : "down")), h("td", {}, num(w.connections)),
    h("td", {class: "text"}, w.digest === v.ring.digest ? "same" : (w.digest || "–")))))];
}

function reloadsSection(v) {
  const config = v.stats.config;
  const now = Date.now() / 1000;
  const lines = [h("p", {class: "muted"},
    `${config.path} · loaded ${ago(config.age_seconds)} · ${config.reloads} reloads, ` +
    `${config.failures} refused`)];
  if (config.last_error) lines.push(h("p", {class: "error"}, "last reload refused: " + config.last_error));
  const history = config.history || [];
  if (!history.length) return lines.concat(h("p", {class: "muted"}, "no reload since start"));
  lines.push(table(["when", "result", "moved", "added", "removed", "ring"], history.map((r) =>
    h("tr", {}, h("td", {class: "text"}, new Date(r.at * 1000).toLocaleTimeString()),
      h("td", {}, r.applied ? "applied" : h("span", {class: "down"}, "refused")),
      h("td", {}, r.applied ? pct(r.moved) : "–"),
      h("td", {class: "text"}, (r.nodes_added || []).join(", ")),
      h("td", {class: "text"}, (r.nodes_removed || []).join(", ")),
      h("td", {class: r.applied ? "text" : "reason"}, r.applied ? r.digest : r.error)))));
  return lines;
}

const SECTIONS = [
  {id: "overview", title: "Overview", render: overview, wide: true},
  {id: "ring", title: "Ring", render: ringSection},
  {id: "requests", title: "Requests", render: requestsSection},
  {id: "workers", title: "Workers", render: workersSection},
  {id: "nodes", title: "Nodes", render: nodesSection, wide: true},
  {id: "groups", title: "Groups", render: groupsSection, wide: true},
  {id: "hot", title: "Hot keys", render: hotSection, wide: true},
  {id: "reloads", title: "Last reloads", render: reloadsSection, wide: true},
];

// -- polling -----------------------------------------------------------------------------

let previous = null, previousAt = 0;

// With security.protect_reads the browser asked for the token when it loaded the page
// (user: anything, password: the token) and sends it with these requests too.
async function get(path) {
  const response = await fetch(path, {cache: "no-store"});
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function live(text, ok) {
  const pill = document.getElementById("live");
  pill.textContent = text;
  pill.className = "pill " + (ok ? "up" : "down");
}

function draw(v) {
  const main = document.getElementById("sections");
  for (const s of SECTIONS) {
    let box = document.getElementById("section-" + s.id);
    const content = s.render(v);
    if (!box) {
      box = h("section", {id: "section-" + s.id, class: s.wide ? "wide" : null});
      main.append(box);
    }
    box.hidden = content === null;
    box.replaceChildren(h("h2", {}, s.title), ...(content || []));
  }
  document.getElementById("digest").textContent = "ring " + v.ring.digest;
}

async function poll() {
  try {
    const [stats, ring, hot] = await Promise.all([get("v1/stats"), get("v1/ring"), get("v1/hot")]);
    const now = performance.now() / 1000;
    draw(view(stats, ring, hot, previous, previous ? now - previousAt : 0));
    previous = stats; previousAt = now;
    live("live · " + new Date().toLocaleTimeString(), true);
  } catch (err) {
    live("router unreachable · " + new Date().toLocaleTimeString(), false);
  }
}

document.getElementById("every").textContent = EVERY;
poll();
setInterval(poll, EVERY * 1000);
