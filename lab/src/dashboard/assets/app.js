// The dashboard page, written by hand for scaling-lab.
//
// The server pushes a snapshot of the lab once a second (the report of
// `lab status --json`, see src/dashboard/snapshot.rs); this script draws
// each one from scratch, so what the page shows is always what the lab
// is, and a second browser shows the same. The only memory kept here is
// the last two minutes of counts, for the chart, and the marks of the
// changes seen in them. Buttons are POSTs carrying the run's token (see
// src/dashboard/guard.rs); what they change comes back in the next
// snapshot, never from the button's own answer.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const HISTORY_S = 120;

// The token comes in the URL's fragment, which the browser never sends to
// a server. It is kept for this tab only and taken out of the address bar,
// so it does not end up in a screenshot or a shared screen.
const token = (() => {
  const m = location.hash.match(/token=([0-9a-fA-F]+)/);
  if (m) {
    sessionStorage.setItem('lab-token', m[1]);
    history.replaceState(null, '', location.pathname);
  }
  return sessionStorage.getItem('lab-token');
})();

const $ = (id) => document.getElementById(id);

// ---- what a service's state means -------------------------------------

// One word for a service's condition: it picks the colour and is what the
// chart's marks compare. Order matters: a stopped service is down, whatever
// else is wrong with it.
function condition(s) {
  const kinds = (s.faults || []).map((f) => f.kind);
  if (kinds.includes('stopped') || ['exited', 'dead', 'created'].includes(s.state)) return 'down';
  if (kinds.includes('paused') || s.state === 'paused') return 'paused';
  // A hung or refusing link cuts the service off as a partition does.
  const cut = (s.faults || []).some((f) => f.kind === 'link' && (f.blackhole || f.reset));
  if (kinds.includes('partition') || cut) return 'partitioned';
  if (kinds.includes('slow') || kinds.includes('link')) return 'slow';
  // A replica more than a second behind lags, whatever made it late.
  const late = s.replication && s.replication.replay_lag_ms > 1000;
  if (kinds.includes('lag') || late) return 'lagging';
  if (s.health === 'unhealthy') return 'unhealthy';
  if (s.health === 'starting' || s.state === 'restarting') return 'starting';
  return 'ok';
}

function faultText(f) {
  switch (f.kind) {
    case 'stopped': return 'STOPPED';
    case 'paused': return 'PAUSED';
    case 'partition': return 'PARTITIONED';
    case 'lag': return `LAG ${f.delay_ms} ms`;
    case 'slow': return `SLOW +${f.latency_ms} ms`;
    case 'link': {
      // A fault on a link of the service's fault proxy (lab slow, lab
      // blackhole, lab reset): its fields sit beside `kind` and `link`.
      const what = [];
      if (f.blackhole) what.push('BLACKHOLE');
      if (f.reset) what.push('RESET');
      if (f.latency_ms) what.push(`SLOW +${f.latency_ms} ms`);
      if (f.bandwidth_bps) what.push(`LIMIT ${Math.round(f.bandwidth_bps / 1000)} kB/s`);
      if (f.slow_close_ms) what.push('SLOW CLOSE');
      return `${what.join(' ') || 'FAULT'} on ${f.link}`;
    }
    default: return String(f.kind).toUpperCase();
  }
}

function roleText(s) {
  if (s.db_role) return `database, ${s.db_role}`;
  if (s.vip) return `balancer, vip ${s.vip}`;
  return { lb: 'balancer', server: 'app server', redis: 'redis', database: 'database', edge: 'edge (the internet)' }[s.role] || s.role;
}

// ---- per-second figures from two snapshots ----------------------------

// The balancer counts requests and failures since it started; a second's
// figures are the difference between two snapshots.
let previous = null;
const counts = []; // {t, ok, failed}
const marks = []; // {t, text}

function perSecond(snap) {
  const out = { t: snap.t, ok: 0, failed: 0, servers: {} };
  if (!previous || previous.state !== 'running' || snap.state !== 'running') return out;
  const dt = (snap.t - previous.t) / 1000;
  if (dt <= 0) return out;
  const before = {};
  for (const s of previous.status.services) if (s.lb) before[s.name] = s.lb;
  for (const s of snap.status.services) {
    const b = before[s.name];
    if (!s.lb || !b) continue;
    // A restarted balancer starts counting from zero again.
    const req = Math.max(0, s.lb.requests - b.requests) / dt;
    const fail = Math.max(0, s.lb.failures - b.failures) / dt;
    out.servers[s.name] = req;
    out.failed += fail;
    out.ok += Math.max(0, req - fail);
  }
  return out;
}

// Marks a change the snapshots show: a service that appears, goes, or
// changes condition, a database node that changes part, the lab itself.
function noteChanges(snap) {
  const mark = (text) => marks.push({ t: snap.t, text });
  if (!previous) return;
  if (previous.state !== snap.state) mark(`lab: ${previous.state} → ${snap.state}`);
  if (previous.state !== 'running' || snap.state !== 'running') return;
  const old = {};
  for (const s of previous.status.services) old[s.name] = s;
  const seen = new Set();
  for (const s of snap.status.services) {
    seen.add(s.name);
    const o = old[s.name];
    if (!o) { mark(`${s.name} added`); continue; }
    if (condition(o) !== condition(s)) mark(`${s.name}: ${condition(o)} → ${condition(s)}`);
    if (o.db_role !== s.db_role) mark(`${s.name}: ${o.db_role} → ${s.db_role}`);
    if (o.lb && s.lb && o.lb.state !== s.lb.state) mark(`${s.name} in the balancer: ${o.lb.state} → ${s.lb.state}`);
  }
  for (const name of Object.keys(old)) if (!seen.has(name)) mark(`${name} removed`);
}

// ---- the diagram ------------------------------------------------------

let selected = null;
let lastSnapshot = null;

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

const BOX_W = 170;
const BOX_H = 94;
const GAP = 22;
const ROW_H = 136;

function drawTopology(snap, rates) {
  const svg = $('topology');
  svg.replaceChildren();
  if (snap.state !== 'running') {
    svg.setAttribute('viewBox', '0 0 900 60');
    return;
  }
  const st = snap.status;
  const all = st.services.slice();
  if (st.edge) all.unshift(st.edge);
  const rows = [
    all.filter((s) => s.role === 'edge'),
    all.filter((s) => s.role === 'lb'),
    all.filter((s) => s.role === 'server'),
    all.filter((s) => s.role === 'redis' || s.role === 'database'),
  ].filter((r) => r.length > 0);
  const widest = Math.max(...rows.map((r) => r.length));
  const width = Math.max(900, widest * (BOX_W + GAP) + GAP);
  svg.setAttribute('viewBox', `0 0 ${width} ${rows.length * ROW_H}`);
  const at = {};
  rows.forEach((row, i) => {
    const span = row.length * BOX_W + (row.length - 1) * GAP;
    row.forEach((s, j) => {
      at[s.name] = { x: (width - span) / 2 + j * (BOX_W + GAP), y: i * ROW_H + 16 };
    });
  });
  // Links first, so the boxes cover their ends.
  const links = el('g', {}, svg);
  const link = (a, b, cls) => {
    if (!at[a.name] || !at[b.name]) return;
    const p = at[a.name];
    const q = at[b.name];
    const dead = condition(a) === 'down' || condition(b) === 'down';
    el('line', {
      x1: p.x + BOX_W / 2, y1: p.y + BOX_H, x2: q.x + BOX_W / 2, y2: q.y,
      class: `link ${cls || ''} ${dead ? 'dead' : ''}`,
    }, links);
  };
  const by = (role) => all.filter((s) => s.role === role);
  const primary = all.find((s) => s.db_role === 'primary');
  for (const e of by('edge')) for (const b of by('lb')) link(e, b);
  for (const b of by('lb')) for (const s of by('server')) link(b, s);
  for (const s of by('server')) {
    for (const r of by('redis')) link(s, r);
    if (primary) link(s, primary);
  }
  if (primary) {
    for (const d of by('database')) {
      if (d.name === primary.name) continue;
      el('line', {
        x1: at[primary.name].x + BOX_W, y1: at[primary.name].y + BOX_H / 2,
        x2: at[d.name].x, y2: at[d.name].y + BOX_H / 2, class: 'link repl',
      }, links);
    }
  }
  const total = Object.values(rates.servers).reduce((a, b) => a + b, 0);
  for (const s of all) drawNode(svg, s, at[s.name], rates, total);
}

function drawNode(svg, s, p, rates, total) {
  const cond = condition(s);
  const g = el('g', { class: `node ${cond} ${s.name === selected ? 'selected' : ''}`, transform: `translate(${p.x},${p.y})`, tabindex: '0', 'data-service': s.name }, svg);
  el('title', {}, g).textContent = `${s.name}: ${cond}; click for its buttons`;
  el('rect', { width: BOX_W, height: BOX_H, rx: 6 }, g);
  el('rect', { class: 'band', width: BOX_W, height: 20, rx: 6 }, g);
  const line = (y, text, cls) => {
    const t = el('text', { x: 8, y, class: cls || '' }, g);
    t.textContent = text;
  };
  line(15, s.name, 'name');
  line(35, roleText(s), 'faint');
  const faults = (s.faults || []).map(faultText);
  line(52, faults.length ? faults.join(', ') : `${s.state}, ${s.health}`);
  if (s.lb) {
    const rate = rates.servers[s.name];
    const share = total > 0 && rate !== undefined ? ` · ${Math.round((100 * rate) / total)}%` : '';
    const perSecond = rate !== undefined ? ` · ${rate.toFixed(0)}/s` : '';
    line(69, `balancer: ${s.lb.state}${share}${perSecond}`);
    // With two balancers, each has its own view: they can disagree.
    const views = Object.entries(s.lb_views || {});
    if (views.length) line(86, views.map(([lb, v]) => `${lb} ${v.state}`).join(' · '), 'faint');
  } else if (s.replication) {
    const r = s.replication;
    line(69, `${r.mode}, ${r.replay_lag_ms === null ? 'not connected' : `${r.replay_lag_ms} ms behind`}`);
  } else if (s.vip_since) {
    line(69, `since ${s.vip_since.slice(11, 19)}`, 'faint');
  }
  g.addEventListener('click', () => select(s.name));
  g.addEventListener('keydown', (e) => { if (e.key === 'Enter') select(s.name); });
}

// ---- the chart --------------------------------------------------------

function drawChart() {
  const c = $('chart');
  const ctx = c.getContext('2d');
  const W = c.width;
  const H = c.height;
  const left = 44;
  const bottom = H - 20;
  ctx.clearRect(0, 0, W, H);
  const now = counts.length ? counts[counts.length - 1].t : Date.now();
  const t0 = now - HISTORY_S * 1000;
  const x = (t) => left + ((t - t0) / (HISTORY_S * 1000)) * (W - left - 8);
  const top = Math.max(10, ...counts.map((h) => h.ok + h.failed));
  const y = (v) => bottom - (v / top) * (bottom - 10);
  ctx.strokeStyle = '#b0bec5';
  ctx.fillStyle = '#616161';
  ctx.font = '11px system-ui, sans-serif';
  ctx.beginPath();
  ctx.moveTo(left, 10);
  ctx.lineTo(left, bottom);
  ctx.lineTo(W - 8, bottom);
  ctx.stroke();
  ctx.fillText(top.toFixed(0), 4, 16);
  ctx.fillText('0', 4, bottom);
  ctx.fillText(`last ${HISTORY_S} s`, W - 70, H - 4);
  const series = (pick, colour) => {
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    counts.forEach((h, i) => (i ? ctx.lineTo(x(h.t), y(pick(h))) : ctx.moveTo(x(h.t), y(pick(h)))));
    ctx.stroke();
    ctx.lineWidth = 1;
  };
  series((h) => h.ok, getComputedStyle(document.documentElement).getPropertyValue('--ok'));
  series((h) => h.failed, getComputedStyle(document.documentElement).getPropertyValue('--down'));
  ctx.strokeStyle = '#1565c0';
  ctx.fillStyle = '#1565c0';
  marks.forEach((m, i) => {
    if (m.t < t0) return;
    ctx.beginPath();
    ctx.moveTo(x(m.t), 10);
    ctx.lineTo(x(m.t), bottom);
    ctx.stroke();
    ctx.fillText(String(i + 1), x(m.t) + 2, 20);
  });
  const list = $('marks');
  list.replaceChildren();
  marks.forEach((m) => {
    const li = document.createElement('li');
    li.textContent = `${new Date(m.t).toLocaleTimeString()} ${m.text}`;
    list.appendChild(li);
  });
}

// ---- buttons ----------------------------------------------------------

const VERBS = ['crash', 'stop', 'start', 'restart', 'pause', 'resume', 'partition', 'heal'];

function button(parent, label, verb, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.dataset.verb = verb;
  b.disabled = !token;
  b.addEventListener('click', onClick);
  parent.appendChild(b);
}

// The buttons of one service: the CLI's verbs, and those that take a
// value with a value a lesson would pick (slow for anything behind a fault
// proxy, lag for a replica).
function select(name) {
  selected = name;
  $('selected').textContent = `${name}:`;
  const box = $('service-buttons');
  box.replaceChildren();
  const at = `/api/services/${encodeURIComponent(name)}`;
  for (const verb of VERBS) button(box, verb, verb, () => act(`${at}/${verb}`));
  const services = lastSnapshot && lastSnapshot.state === 'running' ? lastSnapshot.status.services : [];
  const s = services.find((x) => x.name === name);
  if (s && s.role !== 'lb' && s.role !== 'edge') {
    button(box, 'slow +200 ms', 'slow', () => act(`${at}/slow`, { latency_ms: 200 }));
  }
  if (s && s.db_role === 'replica') {
    button(box, 'lag 3 s', 'lag', () => act(`${at}/lag`, { delay_ms: 3000 }));
    button(box, 'end lag', 'lag-off', () => act(`${at}/lag`, { delay_ms: 0 }));
  }
  if (lastSnapshot) draw(lastSnapshot, lastRates);
}

async function act(path, body) {
  const answer = $('answer');
  answer.className = '';
  answer.textContent = `${path} …`;
  try {
    const r = await fetch(path, {
      method: 'POST',
      headers: { 'X-Lab-Token': token || '', 'Content-Type': 'application/json' },
      body: body === undefined ? '' : JSON.stringify(body),
    });
    const j = await r.json();
    if (!r.ok) {
      answer.className = 'error';
      answer.textContent = `error: ${j.error}`;
    } else {
      answer.textContent = j.text;
    }
  } catch (e) {
    answer.className = 'error';
    answer.textContent = `error: the dashboard did not answer (${e}); is \`lab dashboard\` still running?`;
  }
}

$('heal-all').addEventListener('click', () => act('/api/heal-all'));
$('sync').addEventListener('click', () => act('/api/replication', { mode: 'sync' }));
$('async').addEventListener('click', () => act('/api/replication', { mode: 'async' }));
$('servers').addEventListener('input', () => { $('servers').dataset.edited = 'yes'; });
$('scale-form').addEventListener('submit', (e) => {
  e.preventDefault();
  act('/api/scale', { servers: Number($('servers').value) });
});
$('set-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const pairs = $('pairs').value.split(/\s+/).filter((p) => p);
  act('/api/set', { pairs });
});
if (!token) {
  $('readonly').hidden = false;
  for (const b of document.querySelectorAll('button')) b.disabled = true;
}

// ---- one snapshot -----------------------------------------------------

let lastRates = { servers: {} };

function draw(snap, rates) {
  $('lab').textContent = `lab "${snap.lab}"`;
  const conn = $('conn');
  const running = snap.state === 'running';
  conn.textContent = running ? 'running' : snap.state === 'no-lab' ? 'no lab' : 'cannot read the lab';
  conn.className = `badge ${running ? 'ok' : 'down'}`;
  const msg = $('message');
  msg.hidden = running;
  msg.textContent = running ? '' : `${snap.message} (this page keeps watching and shows the lab when it is back)`;
  $('entry').textContent = running && snap.status.entrypoint ? `entry point ${snap.status.entrypoint}` : '';
  const b = running && snap.status.balancer;
  $('settings').textContent = b ? `strategy ${b.strategy}, retries ${b.retries ? 'on' : 'off'}` : '';
  // The scale box starts at the lab's count, until the student edits it.
  const input = $('servers');
  if (running && !input.dataset.edited) {
    input.value = snap.status.services.filter((s) => s.role === 'server').length;
  }
  drawTopology(snap, rates);
  drawChart();
}

function onSnapshot(snap) {
  const rates = perSecond(snap);
  noteChanges(snap);
  if (previous) {
    counts.push({ t: rates.t, ok: rates.ok, failed: rates.failed });
    while (counts.length && counts[0].t < snap.t - HISTORY_S * 1000) counts.shift();
    while (marks.length && marks[0].t < snap.t - HISTORY_S * 1000) marks.shift();
  }
  previous = snap;
  lastSnapshot = snap;
  lastRates = rates;
  draw(snap, rates);
}

// EventSource reconnects by itself when the dashboard restarts.
const events = new EventSource('/events');
events.onmessage = (e) => onSnapshot(JSON.parse(e.data));
events.onerror = () => {
  const conn = $('conn');
  conn.textContent = 'dashboard not answering: reconnecting';
  conn.className = 'badge unhealthy';
};
