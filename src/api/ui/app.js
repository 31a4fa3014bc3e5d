// thunder — the status page of thunder-api (served at /ui/).
//
// Plain JavaScript, no build step, no network but this thunder-api: it
// reads the REST API (docs/api.md) with the operator's bearer token, which
// it keeps in sessionStorage only (this tab), and refreshes every second:
//   GET /v1/clusters              the clusters table
//   GET /v1/clusters/{id}         the chosen cluster's VMs
//   GET /v1/clusters/{id}/tree    its relay tree, drawn as an SVG graph
// Every text from the API is set with textContent, never parsed as HTML.
"use strict";

const TOKEN_KEY = "thunder-api-token";
const params = new URLSearchParams(location.search);
const REFRESH_MS = Math.max(200, Number(params.get("refresh")) || 1000);
const BOX_W = 170, BOX_H = 58, GAP_X = 30, GAP_Y = 90, MARGIN = 20;
const LABEL_W = 170;   // room right of the last column for edge labels

const $ = (id) => document.getElementById(id);
let selected = params.get("cluster");   // a cluster id
let timer = null;
const previous = new Map();             // edge key -> {bytes, t} for rates

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// GET path with the token; resolves to the parsed JSON body, or throws an
// ApiError carrying the API's error envelope (docs/api.md).
async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  let res;
  try {
    res = await fetch(path, { headers: { Authorization: "Bearer " + token },
                              cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, "unreachable", "thunder-api cannot be reached: " + e.message);
  }
  let body = null;
  try { body = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) {
    const err = body && body.error ? body.error : {};
    throw new ApiError(res.status, err.code || "http_" + res.status,
                       err.message || res.statusText);
  }
  return body;
}

function showMessage(text, info) {
  const m = $("message");
  m.textContent = text;
  m.className = info ? "info" : "";
  m.hidden = !text;
}

function humanBytes(n) {
  if (n === undefined || n === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function renderClusters(clusters) {
  const tbody = document.querySelector("#clusters tbody");
  tbody.replaceChildren();
  $("no-clusters").hidden = clusters.length > 0;
  for (const c of clusters) {
    const tr = document.createElement("tr");
    tr.dataset.id = c.id;
    tr.dataset.name = c.name;
    if (c.id === selected) tr.classList.add("selected");
    const k = c.counts || {};
    cell(tr, c.name);
    cell(tr, c.image);
    cell(tr, c.state, "state state-" + c.state);
    cell(tr, String(c.count), "num");
    cell(tr, String(k.pending || 0), "num");
    cell(tr, String(k.volume_ready || 0), "num");
    cell(tr, String(k.running || 0), "num running");
    cell(tr, String(k.failed || 0), "num");
    cell(tr, humanBytes(c.origin_bytes), "num");
    cell(tr, c.created_at || "");
    tr.addEventListener("click", () => {
      selected = c.id;
      const u = new URL(location.href);
      u.searchParams.set("cluster", c.id);
      history.replaceState(null, "", u);
      refresh();
    });
    tbody.appendChild(tr);
  }
}

function svgEl(name, attrs, parent) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

// Positions every tree node: leaves side by side in depth-first order,
// a parent centred over its children, one row per depth (the origin on
// top).  Returns Map name -> {x, y, item}.
function layout(tree) {
  const children = new Map([[null, []]]);
  for (const n of tree.nodes) children.set(n.node, []);
  for (const n of tree.nodes) {
    const p = children.has(n.parent) ? n.parent : null;
    children.get(p).push(n);
  }
  for (const list of children.values())
    list.sort((a, b) => a.node.localeCompare(b.node));
  const pos = new Map();
  let slot = 0;
  const seen = new Set();
  function place(name, item, depth) {
    if (seen.has(name)) return null;   // a cycle in the tree: draw it once
    seen.add(name);
    const kids = children.get(name) || [];
    const xs = kids.map((k) => place(k.node, k, depth + 1)).filter((x) => x !== null);
    const x = xs.length ? (xs[0] + xs[xs.length - 1]) / 2 : slot++ * (BOX_W + GAP_X);
    pos.set(name, { x: x + MARGIN, y: depth * (BOX_H + GAP_Y) + MARGIN, item });
    return x;
  }
  place(null, null, 0);
  return pos;
}

// The i-th upstream of a node is its i-th ancestor (parent first), the
// origin (null) beyond the last one.
function ancestor(tree, name, i) {
  const byName = new Map(tree.nodes.map((n) => [n.node, n]));
  let cur = byName.get(name);
  for (let k = 0; k <= i && cur; k++) {
    const p = cur.parent;
    if (k === i) return p;
    cur = byName.get(p);
  }
  return null;
}

function edgeLabel(key, bytes, now) {
  if (bytes === undefined || bytes === null) return "";
  const prev = previous.get(key);
  previous.set(key, { bytes, t: now });
  let text = humanBytes(bytes);
  if (prev && now > prev.t && bytes >= prev.bytes)
    text += " · " + humanBytes((bytes - prev.bytes) * 1000 / (now - prev.t)) + "/s";
  return text;
}

function drawEdge(svg, from, to, label, failover) {
  const x1 = from.x + BOX_W / 2, y1 = from.y + BOX_H;
  const x2 = to.x + BOX_W / 2, y2 = to.y;
  const my = (y1 + y2) / 2;
  svgEl("path", { class: "edge" + (failover ? " failover" : ""),
                  d: `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`,
                  "data-from": from.item ? from.item.node : "origin",
                  "data-to": to.item.node }, svg);
  if (label) {
    const t = svgEl("text", { class: "edge-label", x: (x1 + x2) / 2 + 4,
                              y: my + (failover ? 12 : 0),
                              "data-edge-to": to.item.node }, svg);
    t.textContent = label;
  }
}

function drawNode(svg, p, name, vms) {
  const g = svgEl("g", { class: "node" + (name === null ? " origin" : ""),
                         transform: `translate(${p.x},${p.y})`,
                         "data-node": name === null ? "origin" : name }, svg);
  svgEl("rect", { width: BOX_W, height: BOX_H, rx: 6 }, g);
  const title = svgEl("text", { class: "name", x: 8, y: 17 }, g);
  title.textContent = name === null ? "origin" : name;
  if (name === null) return;
  const running = vms.filter((v) => v.state === "running").length;
  const sum = svgEl("text", { class: "vm-summary", x: 8, y: 33 }, g);
  sum.textContent = `${vms.length} VM${vms.length === 1 ? "" : "s"}, ${running} running`;
  vms.forEach((v, i) => {
    if (i >= 16) return;   // the count above says how many there are
    const c = svgEl("circle", { class: "vm " + v.state, r: 5,
                                cx: 12 + (i % 16) * 10, cy: 46,
                                "data-vm": v.name, "data-state": v.state }, g);
    svgEl("title", {}, c).textContent = `${v.name}: ${v.state}${v.reason ? " (" + v.reason + ")" : ""}`;
  });
}

function renderTree(cluster, tree) {
  const svg = $("tree");
  svg.replaceChildren();
  const pos = layout(tree);
  let w = 0, h = 0;
  for (const p of pos.values()) {
    w = Math.max(w, p.x + BOX_W + MARGIN, p.x + BOX_W / 2 + LABEL_W);
    h = Math.max(h, p.y + BOX_H + MARGIN);
  }
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const now = Date.now();
  for (const n of tree.nodes) {
    const to = pos.get(n.node);
    if (!to) continue;
    const bytes = n.upstream_bytes || [];
    const parentPos = pos.get(pos.has(n.parent) ? n.parent : null);
    drawEdge(svg, parentPos, to, edgeLabel(`${cluster.id}|${n.node}|0`, bytes[0], now), false);
    for (let i = 1; i < bytes.length; i++) {
      if (!bytes[i]) continue;
      const from = pos.get(ancestor(tree, n.node, i)) || pos.get(null);
      drawEdge(svg, from, to, edgeLabel(`${cluster.id}|${n.node}|${i}`, bytes[i], now), true);
    }
  }
  const vmsByNode = new Map();
  for (const v of cluster.vms || []) {
    if (!vmsByNode.has(v.node)) vmsByNode.set(v.node, []);
    vmsByNode.get(v.node).push(v);
  }
  for (const [name, p] of pos) drawNode(svg, p, name, vmsByNode.get(name) || []);
  $("detail-name").textContent = cluster.name;
  const k = cluster.counts || {};
  $("detail-summary").textContent =
    `${cluster.state}: ${k.running || 0} of ${cluster.count} VMs running, ` +
    `${k.failed || 0} failed; ${tree.nodes.length} nodes, depth ${tree.depth}, ` +
    `fan-out ${tree.fanout}; ${humanBytes(cluster.origin_bytes)} from the origin ` +
    `(${tree.origin})`;
  $("detail").hidden = false;
}

async function refresh() {
  clearTimeout(timer);
  try {
    const list = await api("/v1/clusters");
    renderClusters(list.clusters || []);
    if (selected) {
      const [cluster, tree] = await Promise.all([
        api("/v1/clusters/" + encodeURIComponent(selected)),
        api("/v1/clusters/" + encodeURIComponent(selected) + "/tree"),
      ]);
      renderTree(cluster, tree);
    }
    showMessage("");
    $("health").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin("The token was refused (401 unauthorized): enter the operator token " +
                "of this thunder-api (its --token-file).");
      return;
    }
    if (e.status === 404 && selected) {
      selected = null;
      $("detail").hidden = true;
    }
    showMessage(`Error: ${e.message} (${e.code})`);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function showLogin(message) {
  clearTimeout(timer);
  $("status").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  showMessage(message || "", !message);
  $("token").focus();
}

function start() {
  $("login").hidden = true;
  $("status").hidden = false;
  $("logout").hidden = false;
  refresh();
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  start();
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin("");
});

if (sessionStorage.getItem(TOKEN_KEY)) start(); else showLogin("");
