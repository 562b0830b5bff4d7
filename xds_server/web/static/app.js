// pocketmesh web view: draws /ui/events (server-sent JSON state, once a second).
// Plain DOM and SVG, no dependencies. Text from the server goes in with textContent only.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const TYPES = ["CDS", "LDS", "EDS", "RDS", "SDS"];
const NARROW = 760;
let last = null;        // the latest state
let lastAt = 0;         // when it arrived (ms)
let highlighted = "";   // proxy row picked from the graph

// -- small helpers ------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function stateClass(state) { return String(state).replace(/\s+/g, "-"); }

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.abs(seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.round((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.round((s % 86400) / 3600)}h`;
}

function clock(epoch) {
  return new Date(epoch * 1000).toLocaleTimeString([], { hour12: false });
}

function date(epoch) {
  const d = new Date(epoch * 1000);
  return d.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" }) + " " +
    d.toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit" });
}

function rate(rps) {
  if (rps === 0) return "0";
  if (rps >= 10) return rps.toFixed(0);
  if (rps >= 0.1) return rps.toFixed(1);
  return rps.toFixed(2);
}

function percent(ratio) {
  if (ratio === null || ratio === undefined) return "–";
  const p = ratio * 100;
  return (p === 0 || p >= 10 ? p.toFixed(0) : p.toFixed(1)) + "%";
}

// -- summary and alerts ---------------------------------------------------------------------

function renderSummary(state) {
  const box = document.getElementById("summary");
  const proxies = state.proxies;
  const synced = proxies.filter((p) => p.state === "SYNCED").length;
  const nacks = proxies.filter((p) => p.state === "ERROR").length;
  const errors = state.config.errors.length;
  const chip = (cls, ...text) => el("span", { class: "chip " + cls }, ...text);
  box.replaceChildren(
    chip("", "generation ", el("b", {}, state.server.generation)),
    chip(synced === proxies.length && proxies.length ? "good" : "", el("b", {}, `${synced}/${proxies.length}`), " proxies synced"),
    errors ? chip("bad", el("b", {}, errors), errors === 1 ? " config error" : " config errors") : chip("good", "config valid"),
    nacks ? chip("bad", el("b", {}, nacks), nacks === 1 ? " proxy rejecting config" : " proxies rejecting config") : "",
  );
}

function renderAlerts(state) {
  const box = document.getElementById("alerts");
  const items = [];
  if (state.config.errors.length) {
    items.push(el("div", { class: "alert bad", id: "alert-config" },
      el("h3", {}, `The config has ${state.config.errors.length} error${state.config.errors.length === 1 ? "" : "s"}: still serving generation ${state.server.generation}`),
      el("ul", {}, state.config.errors.map((e) => el("li", { class: "mono" }, e)))));
  }
  const nacks = [];
  for (const p of state.proxies) {
    for (const t of TYPES) {
      const s = p.types[t];
      if (s && s.state === "ERROR") nacks.push(el("li", {}, el("b", {}, `${p.proxy} ${t}: `), el("span", { class: "mono" }, s.nack)));
    }
  }
  if (nacks.length) {
    items.push(el("div", { class: "alert bad", id: "alert-nacks" },
      el("h3", {}, "Envoy rejected config (NACK); each proxy keeps running its last good version"),
      el("ul", {}, nacks)));
  }
  box.hidden = items.length === 0;
  box.replaceChildren(...items);
}

// -- the graph ------------------------------------------------------------------------------

const PAD = 10, HEAD = 26, GROUP_GAP = 22, LANE = 12, MAX_LANES = 6;

// Where every group and node goes. Wide: columns left to right in the direction traffic
// flows, a group's versions stacked; edges that skip a column run in lanes above them
// all. Narrow: one row per group, top to bottom, versions side by side; edges that skip
// a row run in lanes down the right. Callers from outside (the "clients" group) enter
// from the left (wide) or the top (narrow).
function layout(mesh, width, lanes) {
  const narrow = width < NARROW;
  const groups = mesh.groups.filter((g) => g.kind !== "clients");
  const entry = groups.length !== mesh.groups.length;
  const columns = new Map();
  for (const g of groups) {
    if (!columns.has(g.column)) columns.set(g.column, []);
    columns.get(g.column).push(g);
  }
  const order = [...columns.keys()].sort((a, b) => a - b);
  const boxes = new Map(), nodes = new Map(), rank = new Map();
  let W = 0, H = 0;
  if (!narrow) {
    const NODE_W = 146, NODE_H = 42, GAP = 14;
    const size = (g) => ({ w: NODE_W + 2 * PAD, h: HEAD + g.nodes.length * NODE_H + (g.nodes.length - 1) * GAP + PAD });
    const left = entry ? 150 : 10;
    const top = 12 + Math.min(lanes, MAX_LANES) * LANE + (lanes ? 10 : 0);
    const colW = NODE_W + 2 * PAD;
    const colGap = order.length > 1 ? Math.max(150, Math.min(240, (width - left - 10 - order.length * colW) / (order.length - 1))) : 0;
    const colH = order.map((c) => columns.get(c).reduce((h, g) => h + size(g).h + GROUP_GAP, -GROUP_GAP));
    const bodyH = Math.max(...colH, NODE_H);
    order.forEach((c, i) => {
      let y = top + (bodyH - colH[i]) / 2;
      const x = left + i * (colW + colGap);
      for (const g of columns.get(c)) {
        const sz = size(g);
        const b = { x, y, w: sz.w, h: sz.h };
        boxes.set(g.id, b);
        rank.set(g.id, i);
        g.nodes.forEach((id, k) => nodes.set(id, { x: b.x + PAD, y: b.y + HEAD + k * (NODE_H + GAP), w: NODE_W, h: NODE_H }));
        y += sz.h + GROUP_GAP;
      }
    });
    W = left + order.length * colW + (order.length - 1) * colGap + 10;
    H = top + bodyH + 14;
  } else {
    const NODE_H = 36, GAP = 8, ROW_GAP = 88;
    const laneRoom = lanes ? 14 + Math.min(lanes, MAX_LANES) * 8 : 0;
    const inner = width - 12 - laneRoom - 2 * PAD;
    let y = entry ? 60 : 10, row = 0;
    for (const c of order) {
      for (const g of columns.get(c)) {
        const perRow = Math.max(1, Math.min(g.nodes.length, Math.floor((inner + GAP) / (84 + GAP))));
        const nodeW = Math.min(170, (inner - (perRow - 1) * GAP) / perRow);
        const rows = Math.ceil(g.nodes.length / perRow);
        const w = perRow * nodeW + (perRow - 1) * GAP + 2 * PAD;
        const h = HEAD + rows * NODE_H + (rows - 1) * GAP + PAD;
        const b = { x: 6 + (width - 12 - laneRoom - w) / 2, y, w, h };
        boxes.set(g.id, b);
        rank.set(g.id, row++);
        g.nodes.forEach((id, k) => nodes.set(id, {
          x: b.x + PAD + (k % perRow) * (nodeW + GAP), y: b.y + HEAD + Math.floor(k / perRow) * (NODE_H + GAP), w: nodeW, h: NODE_H,
        }));
        y += h + ROW_GAP;
      }
    }
    W = width; H = y - ROW_GAP + 12;
  }
  const groupOf = new Map();
  for (const g of groups) for (const id of g.nodes) groupOf.set(id, g.id);
  return { narrow, boxes, nodes, rank, groupOf, W, H, width };
}

// A path of cubic ('C') and straight ('L') segments, and points along it.
class Track {
  constructor(x, y) { this.start = [x, y]; this.segs = []; this.end = [x, y]; }
  curve(c1, c2, p) { this.segs.push({ kind: "C", p0: this.end, c1, c2, p1: p }); this.end = p; return this; }
  line(p) { this.segs.push({ kind: "L", p0: this.end, p1: p }); this.end = p; return this; }
  get d() {
    return `M${this.start[0]},${this.start[1]} ` + this.segs.map((s) =>
      s.kind === "C" ? `C${s.c1[0]},${s.c1[1]} ${s.c2[0]},${s.c2[1]} ${s.p1[0]},${s.p1[1]}` : `L${s.p1[0]},${s.p1[1]}`).join(" ");
  }
  point(s, t) {
    if (s.kind === "L") return [s.p0[0] + (s.p1[0] - s.p0[0]) * t, s.p0[1] + (s.p1[1] - s.p0[1]) * t];
    const u = 1 - t;
    return [0, 1].map((k) => u * u * u * s.p0[k] + 3 * u * u * t * s.c1[k] + 3 * u * t * t * s.c2[k] + t * t * t * s.p1[k]);
  }
  // The point where coordinate `axis` (0: x, 1: y) first reaches `value` on segment `i`.
  at(axis, value, i = 0) {
    const s = this.segs[i];
    let lo = 0, hi = 1;
    const rising = this.point(s, 1)[axis] >= this.point(s, 0)[axis];
    for (let k = 0; k < 30; k++) {
      const mid = (lo + hi) / 2;
      if ((this.point(s, mid)[axis] < value) === rising) lo = mid; else hi = mid;
    }
    return this.point(s, (lo + hi) / 2);
  }
}

function clamp(v, lo, hi) { return hi < lo ? (lo + hi) / 2 : Math.min(hi, Math.max(lo, v)); }

// Each edge's track, and where its label, weight and deny mark go.
function route(e, L, lane, fan, label, pctW) {
  const a = e.source === "clients" ? null : L.nodes.get(e.source);
  const b = L.nodes.get(e.target);
  if (!b || (!a && e.source !== "clients")) return null;
  const out = {};
  if (!L.narrow) {
    const ty = b.y + b.h / 2;
    if (!a) {  // from outside the mesh, on the left
      out.track = new Track(8, ty).line([b.x, ty]);
      out.label = [clamp((8 + b.x) / 2, 8 + label / 2, b.x - label / 2 - 8), ty];
      out.caption = [8, ty - 14];
      return out;
    }
    const sx = a.x + a.w, sy = a.y + a.h / 2, tx = b.x;
    const rs = L.rank.get(L.groupOf.get(e.source)), rt = L.rank.get(L.groupOf.get(e.target));
    if (rt === rs + 1) {
      const d = Math.max(40, (tx - sx) / 2);
      out.track = new Track(sx, sy).curve([sx + d, sy], [tx - d, ty], [tx, ty]);
      const gapL = sx + PAD + 12, gapR = tx - PAD - 8;
      const want = gapL + (gapR - gapL) * (fan > 0 ? 0.62 : fan < 0 ? 0.38 : 0.5);
      out.label = out.track.at(0, clamp(want, gapL + label / 2, gapR - label / 2 - (pctW ? pctW + 6 : 0)));
      if (pctW) out.weight = out.track.at(0, gapR - pctW / 2);
      if (e.denied) out.deny = out.track.at(0, gapR - (pctW ? pctW + 14 : 10));
      return out;
    }
    // Skips a column, or goes back: along a lane above every group.
    const top = Math.min(...[...L.boxes.values()].map((bx) => bx.y));
    const ly = top - 10 - (lane % MAX_LANES) * LANE;
    const x0 = sx + PAD + 40, x1 = tx - PAD - 40;
    out.track = new Track(sx, sy).curve([sx + PAD + 30, sy], [sx + PAD + 10, ly], [x0, ly]).line([x1, ly])
      .curve([tx - PAD - 10, ly], [tx - PAD - 30, ty], [tx, ty]);
    out.label = [clamp((x0 + x1) / 2, Math.min(x0, x1) + label / 2, Math.max(x0, x1) - label / 2 - (pctW ? pctW + 6 : 0)), ly];
    if (pctW) out.weight = [x1 - pctW / 2, ly];
    if (e.denied) out.deny = [x1 - (pctW ? pctW + 14 : 10), ly];
    return out;
  }
  const tx = b.x + b.w / 2, ty = b.y;
  if (!a) {  // from outside the mesh, at the top
    out.track = new Track(tx, 10).line([tx, ty]);
    out.label = [tx + label / 2 + 8, (10 + ty) / 2 + 6];
    out.caption = [tx + 8, 18];
    return out;
  }
  const sx = a.x + a.w / 2, sy = a.y + a.h;
  const rs = L.rank.get(L.groupOf.get(e.source)), rt = L.rank.get(L.groupOf.get(e.target));
  if (rt === rs + 1) {
    const d = Math.max(30, (ty - sy) / 2);
    out.track = new Track(sx, sy).curve([sx, sy + d], [tx, ty - d], [tx, ty]);
    const gapT = L.boxes.get(L.groupOf.get(e.source)).y + L.boxes.get(L.groupOf.get(e.source)).h, gapB = b.y - HEAD;
    out.label = out.track.at(1, gapT + (gapB - gapT) * (fan > 0 ? 0.58 : fan < 0 ? 0.36 : 0.45));
    if (pctW) out.weight = out.track.at(1, ty - 12);
    if (e.denied) out.deny = out.track.at(1, ty - (pctW ? 30 : 12));
    return out;
  }
  // Skips a row, or goes up: down a lane on the right.
  const right = Math.max(...[...L.boxes.values()].map((bx) => bx.x + bx.w));
  const lx = right + 10 + (lane % MAX_LANES) * 8;
  const s0 = [a.x + a.w, a.y + a.h / 2], t1 = [b.x + b.w, b.y + b.h / 2];
  out.track = new Track(...s0).curve([lx - 10, s0[1]], [lx, s0[1]], [lx, s0[1] + (t1[1] > s0[1] ? 16 : -16)])
    .line([lx, t1[1] + (t1[1] > s0[1] ? -16 : 16)]).curve([lx, t1[1]], [lx - 10, t1[1]], t1);
  const srcBox = L.boxes.get(L.groupOf.get(e.source));
  const ly = srcBox.y + srcBox.h + 62;
  out.label = [lx - 6 - label / 2, ly];
  if (pctW) out.weight = [lx - 6 - pctW / 2, ly + 20];
  if (e.denied) out.deny = [lx, t1[1] + (t1[1] > s0[1] ? -30 : 30)];
  return out;
}

function edgeClass(e) {
  if (e.denied) return "denied";
  if (e.idle || (!e.rps && e.errors === null)) return "idle";
  if (e.errors !== null && e.errors >= 0.1) return "bad";
  if (e.errors !== null && e.errors >= 0.01) return "warn";
  return "ok";
}

function lockIcon(x, y) {
  return svg("path", { class: "lock-icon", transform: `translate(${x},${y})`, d: "M-3.5 -1 v-2.5 a3.5 3.5 0 0 1 7 0 v2.5 M-5 -1 h10 v7 h-10 z" });
}

function denyMark(x, y, title) {
  return svg("g", { class: "deny", transform: `translate(${x},${y})` },
    svg("title", {}, title),
    svg("circle", { r: 7, class: "deny-mark" }),
    svg("path", { d: "M-4.5 4.5 L4.5 -4.5", class: "deny-bar" }));
}

function edgeTitle(e) {
  return [
    `${e.source} → ${e.target}`,
    e.idle ? "no requests yet" : `${rate(e.rps)} requests/s, 5xx ${percent(e.errors)}, ${e.total} since the proxy started`,
    e.weights.length ? `route weight ${e.weights.join("% / ")}%` : "",
    e.source === "clients" ? "into the mesh through the gateway" : e.mtls ? "mutual TLS (the caller presents its SVID)" : "plaintext",
    e.denied ? `${e.denied} requests denied (403): ${e.policies.join(", ") || "AuthorizationPolicy"}` : "",
    e.clusters.filter(Boolean).length ? `clusters: ${e.clusters.filter(Boolean).join(", ")}` : "",
  ].filter(Boolean).join("\n");
}

// Labels must not cover each other: a later one moves down below the one it hits.
function separate(placed, box) {
  for (let tries = 0; tries < 8; tries++) {
    const hit = placed.find((p) => p.x < box.x + box.w && box.x < p.x + p.w && p.y < box.y + box.h && box.y < p.y + p.h);
    if (!hit) break;
    box.y = hit.y + hit.h + 2;
  }
  placed.push(box);
  return box;
}

function renderGraph(mesh) {
  const box = document.getElementById("graph");
  if (!mesh.groups.length) {
    box.replaceChildren(el("p", { class: "empty" }, "No workloads in the config yet: add a WorkloadEntry."));
    return;
  }
  const width = Math.max(300, box.clientWidth || 900);
  // Lanes: edges that do not go to the next column (row). Counted on a first layout.
  const probe = layout(mesh, width, 0);
  const skips = (L) => mesh.edges.filter((e) => {
    if (e.source === "clients") return false;
    const rs = L.rank.get(L.groupOf.get(e.source)), rt = L.rank.get(L.groupOf.get(e.target));
    return rs !== undefined && rt !== undefined && rt !== rs + 1;
  });
  const L = layout(mesh, width, skips(probe).length);
  const laneOf = new Map(skips(L).map((e, i) => [e, i]));
  const root = svg("svg", { viewBox: `0 0 ${L.W} ${L.H}`, width: L.W, height: L.H, role: "img", "aria-label": "mesh graph" });
  const defs = svg("defs", {});
  for (const c of ["ok", "warn", "bad", "idle", "denied"]) {
    defs.append(svg("marker", { id: `arrow-${c}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", class: `arrow-${c}` })));
  }
  root.append(defs);
  for (const g of mesh.groups) {
    const b = L.boxes.get(g.id);
    if (!b) continue;
    root.append(svg("g", { class: "group", "data-group": g.id },
      svg("rect", { x: b.x, y: b.y, width: b.w, height: b.h, rx: 10, class: `group-box ${g.kind}` })));
  }
  const groupLabels = svg("g", { class: "group-labels" });
  for (const g of mesh.groups) {
    const b = L.boxes.get(g.id);
    if (b) groupLabels.append(svg("text", { x: b.x + PAD, y: b.y + 17, class: `group-label ${g.kind}` }, g.label));
  }
  const outDegree = new Map(), inDegree = new Map();
  for (const e of mesh.edges) {
    outDegree.set(e.source, (outDegree.get(e.source) || 0) + 1);
    inDegree.set(e.target, (inDegree.get(e.target) || 0) + 1);
  }
  const edgeLayer = svg("g", { class: "edges" }), labelLayer = svg("g", { class: "labels" });
  const placed = [];
  for (const e of mesh.edges) {
    const cls = edgeClass(e);
    const text = e.idle ? "no traffic" : `${rate(e.rps)} rps`;
    let errText = e.idle || (L.narrow && !e.errors) ? "" : ` · ${percent(e.errors === null ? 0 : e.errors)} 5xx`;
    if (e.denied) errText = ` · ${e.denied} denied`;
    const lockW = e.mtls ? 13 : 0;
    const labelW = lockW + (text.length + errText.length) * 5.9 + 12;
    const pctText = e.weights.map((v) => `${+v.toFixed(1)}%`).join("/");
    const pctW = pctText ? pctText.length * 6.6 + 8 : 0;
    const fan = (outDegree.get(e.source) || 0) - (inDegree.get(e.target) || 0);
    const r = route(e, L, laneOf.get(e) || 0, fan, labelW, pctW);
    if (!r) continue;
    const title = edgeTitle(e);
    const widthPx = cls === "idle" ? 1.6 : Math.min(6, 1.8 + Math.log2(1 + e.rps));
    const g = svg("g", { class: "edge-group", "data-source": e.source, "data-target": e.target },
      svg("title", {}, title),
      svg("path", { d: r.track.d, class: `edge ${cls}`, "stroke-width": widthPx.toFixed(1), "marker-end": `url(#arrow-${cls})` }));
    if (e.rps > 0 && cls !== "idle") g.append(svg("path", { d: r.track.d, class: "flow", "stroke-width": Math.max(1, widthPx - 1).toFixed(1) }));
    edgeLayer.append(g);
    if (r.caption) labelLayer.append(svg("text", { x: r.caption[0], y: r.caption[1], class: "caption" }, "clients"));
    const lb = separate(placed, { x: r.label[0] - labelW / 2, y: r.label[1] - 9, w: labelW, h: 18 });
    const label = svg("g", { class: "edge-label", "data-source": e.source, "data-target": e.target }, svg("title", {}, title),
      svg("rect", { x: lb.x, y: lb.y, width: labelW, height: 18, rx: 9 }));
    if (e.mtls) label.append(lockIcon(lb.x + 11, lb.y + 8.5));
    const textNode = svg("text", { x: lb.x + lockW + 6, y: lb.y + 12.5, class: "rate" }, text);
    if (errText) textNode.append(svg("tspan", { class: e.errors || e.denied ? "err" : "" }, errText));
    label.append(textNode);
    labelLayer.append(label);
    if (r.weight && pctText) {
      const wb = separate(placed, { x: r.weight[0] - pctW / 2, y: r.weight[1] - 8, w: pctW, h: 16 });
      labelLayer.append(svg("g", { class: "weight", "data-source": e.source, "data-target": e.target },
        svg("title", {}, `route weight: ${pctText} of the requests matching this route`),
        svg("rect", { x: wb.x, y: wb.y, width: pctW, height: 16, rx: 4, class: "pct-bg" }),
        svg("text", { x: wb.x + pctW / 2, y: wb.y + 12, "text-anchor": "middle", class: "pct-text" }, pctText)));
    }
    if (r.deny) labelLayer.append(denyMark(r.deny[0], r.deny[1], `${e.denied} requests denied by ${e.policies.join(", ") || "an AuthorizationPolicy"}`));
  }
  root.append(edgeLayer, groupLabels);
  for (const [id, n] of Object.entries(mesh.nodes)) {
    const r = L.nodes.get(id);
    if (!r) continue;
    const state = n.state || "";
    const sub = n.kind === "external" ? "external service" : n.address;
    const title = [
      id,
      n.kind === "gateway" ? "ingress gateway" : n.kind,
      n.address ? `address ${n.address}` : "",
      state ? `xDS: ${state}` : "",
      n.policies && n.policies.length ? `AuthorizationPolicies: ${n.policies.join(", ")}` : "",
    ].filter(Boolean).join("\n");
    const small = L.narrow || r.w < 128;  // no address line; the version chip only if the name lacks it
    const chip = n.version && !(small && n.name.includes(n.version));
    const vw = chip ? n.version.length * 6.5 + 10 : 0;
    const room = Math.floor((r.w - (small ? 18 : 22) - (vw ? vw + 8 : 0)) / (small ? 6.7 : 7.4));
    const name = n.name.length > room ? n.name.slice(0, Math.max(1, room - 1)) + "…" : n.name;
    const g = svg("g", { class: `node ${n.kind} ${stateClass(state)}`, "data-node": id, transform: `translate(${r.x},${r.y})` },
      svg("title", {}, title),
      svg("rect", { width: r.w, height: r.h, rx: 7, class: "node-box" }),
      svg("rect", { width: 5, height: r.h - 2, x: 1, y: 1, rx: 2, class: `node-strip ${n.kind}` }),
      svg("text", { x: 13, y: small ? r.h / 2 + 4 : 17, class: small ? "node-name small" : "node-name" }, name),
      small ? null : svg("text", { x: 13, y: r.h - 10, class: "node-sub" }, sub));
    if (chip) {
      g.append(svg("rect", { x: r.w - vw - 7, y: small ? r.h / 2 - 7.5 : 6, width: vw, height: 15, rx: 7, class: "version-bg" }),
        svg("text", { x: r.w - vw / 2 - 7, y: small ? r.h / 2 + 3.5 : 17, "text-anchor": "middle", class: "version" }, n.version));
    }
    if (state) {
      g.append(small ? svg("circle", { cx: r.w - 3, cy: 3, r: 4.5, class: `node-state ${stateClass(state)}` })
        : svg("circle", { cx: r.w - 10, cy: r.h - 9, r: 4.5, class: `node-state ${stateClass(state)}` }));
    }
    g.addEventListener("click", () => pick(id));
    root.append(g);
  }
  root.append(labelLayer);
  box.replaceChildren(root);
}

function pick(id) {
  highlighted = id;
  const row = document.querySelector(`tr[data-proxy="${CSS.escape(id)}"]`);
  if (row) row.scrollIntoView({ behavior: "smooth", block: "center" });
  if (last) renderProxies(last);
}

// -- proxies --------------------------------------------------------------------------------

function renderProxies(state) {
  const box = document.getElementById("proxies");
  if (!state.proxies.length) {
    box.replaceChildren(el("p", { class: "empty" }, "No proxy is connected. Start one with `pocketmesh up` or `pocketmesh bootstrap`."));
    return;
  }
  const now = state.now;
  const head = el("thead", {}, el("tr", {}, el("th", {}, "Proxy"), TYPES.map((t) => el("th", {}, t)), el("th", {}, "Gen"), el("th", {}, "Workload certificate (SVID)")));
  const body = el("tbody", {});
  for (const p of state.proxies) {
    const svid = p.svid;
    const svidCell = svid
      ? [el("span", { class: "mono" }, svid.spiffe_id),
         el("div", { class: "sub" }, `serial ${svid.serial.slice(0, 16)}${svid.serial.length > 16 ? "…" : ""}`),
         el("div", { class: "sub" }, `expires ${date(svid.not_after)} · renews ${svid.renew_at > now ? "in " + duration(svid.renew_at - now) : "now"}`)]
      : el("span", { class: "sub" }, p.known ? "no workload identity (CA off)" : "names no WorkloadEntry");
    const row = el("tr", { "data-proxy": p.proxy, class: p.proxy === highlighted ? "highlight" : "" },
      el("td", { "data-label": "Proxy" },
        el("div", {},
          el("div", { class: "proxy-name" }, p.proxy),
          el("div", { class: "sub" }, `${p.service}${p.delta ? " delta" : ""} · stream ${p.stream} · up ${duration(p.connected_seconds)}${p.envoy ? " · envoy " + p.envoy : ""}`),
          p.stats_error ? el("div", { class: "sub" }, `no traffic stats: ${p.stats_error}`) : null)),
      TYPES.map((t) => {
        const s = p.types[t] || { state: "NOT SENT" };
        return el("td", { "data-label": t, class: "type" },
          el("span", { class: "type-cell" },
            el("span", { class: "type-label" }, t),
            el("span", { class: `state ${stateClass(s.state)}`, "data-type": t }, s.state),
            s.version ? el("span", { class: "version-id" }, s.version.slice(0, 8)) : null));
      }),
      el("td", { "data-label": "Generation", class: "gen" }, String(p.generation)),
      el("td", { "data-label": "SVID", class: "svid" }, el("div", {}, svidCell)));
    body.append(row);
    const nacks = TYPES.filter((t) => p.types[t] && p.types[t].state === "ERROR");
    if (nacks.length) {
      body.append(el("tr", { class: "nack" }, el("td", { colspan: 8 },
        nacks.map((t) => el("div", { class: "nack-box" },
          el("b", {}, `${t} rejected version ${(p.types[t].version || "").slice(0, 8)}`),
          p.types[t].acked ? `, still running ${p.types[t].acked.slice(0, 8)}` : "",
          el("span", { class: "mono" }, p.types[t].nack))))));
    }
  }
  box.replaceChildren(el("table", { class: "proxies" }, head, body));
}

// -- config and pushes -------------------------------------------------------------------------

function issue(kind, text) {
  const m = /^(.+?:\d+): (.*)$/s.exec(text);
  return el("li", { class: kind }, m ? [el("code", { class: "loc" }, m[1]), el("span", {}, m[2])] : el("span", {}, text));
}

function renderConfig(state) {
  const box = document.getElementById("config");
  const s = state.server;
  const parts = [
    el("p", { class: "sub" }, `${s.config_dir} · generation ${s.generation}${s.loaded_at ? " loaded at " + clock(s.loaded_at) : ""}${s.trust_domain ? " · trust domain " + s.trust_domain : ""}`),
  ];
  if (state.config.errors.length) {
    parts.push(el("ul", { class: "issues", id: "config-errors" }, state.config.errors.map((e) => issue("error", e))));
  } else {
    parts.push(el("p", { class: "good-note" }, "✓ No errors: every file is being served."));
  }
  if (state.config.warnings.length) {
    parts.push(el("ul", { class: "issues" }, state.config.warnings.map((w) => issue("warning", w))));
  }
  box.replaceChildren(...parts);
}

function renderPushes(state) {
  const box = document.getElementById("pushes");
  if (!state.pushes.length) {
    box.replaceChildren(el("p", { class: "empty" }, "No push yet."));
    return;
  }
  const items = state.pushes.map((r) => {
    let result, cls;
    if (r.error) {
      result = "rejected"; cls = "bad";
    } else if (r.pending) {
      result = `${r.converged}/${r.targets} ACKed, ${r.pending} waiting…`; cls = "warn";
    } else if (!r.targets) {
      result = "no proxy to push to"; cls = "";
    } else {
      result = `${r.converged}/${r.targets} proxies ACKed` + (r.last_ack_seconds !== null ? ` in ${duration(r.last_ack_seconds)}` : "");
      cls = r.converged === r.targets ? "ok" : "warn";
    }
    const extra = [];
    if (r.rejected) extra.push(`${r.rejected} NACKed`);
    if (r.dropped) extra.push(`${r.dropped} disconnected`);
    if (r.timed_out) extra.push(`${r.timed_out} never ACKed`);
    if (extra.length) { result += " · " + extra.join(", "); cls = "bad"; }
    const what = r.error ? `${r.what}: ${r.error}` : `${r.what} → generation ${r.generation}`;
    return el("li", { "data-push": r.number },
      el("span", { class: "when" }, clock(r.changed_at)),
      el("span", { class: "what" }, el("span", { class: "tag" }, r.trigger), what,
        r.proxies.length ? el("div", { class: "sub" }, r.proxies.join(", ") + (r.targets > r.proxies.length ? ` and ${r.targets - r.proxies.length} more` : "")) : null),
      el("span", { class: `result ${cls}` }, result));
  });
  box.replaceChildren(el("ul", { class: "pushes" }, items));
}

// -- the loop ---------------------------------------------------------------------------------

function render(state) {
  last = state;
  lastAt = Date.now();
  renderSummary(state);
  renderAlerts(state);
  renderGraph(state.mesh);
  renderProxies(state);
  renderConfig(state);
  renderPushes(state);
  document.body.dataset.generation = state.server.generation;
  document.body.dataset.renders = Number(document.body.dataset.renders || 0) + 1;
}

function setLive(on, text) {
  const box = document.getElementById("live");
  box.className = "live " + (on ? "on" : "off");
  document.getElementById("live-text").textContent = text;
}

function connect() {
  const source = new EventSource("/ui/events");
  source.onmessage = (msg) => {
    try {
      render(JSON.parse(msg.data));
      setLive(true, "live");
    } catch (err) {
      setLive(false, "bad update: " + err.message);
    }
  };
  source.onerror = () => setLive(false, "reconnecting…");
}

setInterval(() => {
  if (lastAt && Date.now() - lastAt > 5000) setLive(false, `no update for ${Math.round((Date.now() - lastAt) / 1000)} s`);
}, 1000);
let resizeTimer = 0;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => { if (last) renderGraph(last.mesh); }, 150);
});
connect();
