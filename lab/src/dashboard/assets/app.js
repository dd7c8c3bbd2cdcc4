// The dashboard page, written by hand for scaling-lab.
//
// The server pushes a snapshot of the lab once a second (the report of
// `lab status --json`, see src/dashboard/snapshot.rs); this script draws
// each one from scratch, so what the page shows is always what the lab
// is, and a second browser shows the same. The only memory kept here is
// the last two minutes of the balancer's counts and the seconds of the
// page's load as they arrive, for the charts (drawn by charts.js); the
// marks on the time axis come with each snapshot. Buttons are POSTs carrying the run's token (see
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

// One word for a service's condition, decided by the dashboard (see
// src/dashboard/snapshot.rs) and sent with each snapshot: it picks the
// colour, and the marks under the charts use the same words.
function condition(s) {
  const c = lastSnapshot && lastSnapshot.conditions ? lastSnapshot.conditions[s.name] : undefined;
  return c || 'starting';
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

// ---- per-second figures ----------------------------------------------

// With no load of the page's, a second is what the balancer counted
// between two snapshots (it counts since it started). A load run from the
// page brings its own seconds, counted by the load engine, with latency
// and the checkers' findings; those are charted instead.
let previous = null;
const counts = []; // balancer seconds, in the charts' shape
let job = null; // the page's load or lesson: its record, seconds merged by time

function perSecond(snap) {
  const out = { at: snap.t, ok: 0, errors: 0, per_server: {} };
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
    out.per_server[s.name] = req;
    out.errors += fail;
    out.ok += Math.max(0, req - fail);
  }
  return out;
}

// Keeps the job's record whole: a snapshot carries its latest seconds
// only, and a new job (or a page opened mid-run) fetches the rest.
function mergeJob(recent) {
  if (!recent) return;
  if (!job || job.id !== recent.id) {
    job = Object.assign({}, recent, { seconds: [] });
    fetch('/api/job').then((r) => r.json()).then((full) => {
      if (full && job && full.id === job.id) mergeSeconds(full.seconds);
    }).catch(() => {});
  }
  const seconds = job.seconds;
  Object.assign(job, recent, { seconds });
  mergeSeconds(recent.seconds);
}

function mergeSeconds(list) {
  const have = new Set(job.seconds.map((s) => s.t));
  for (const s of list || []) if (!have.has(s.t)) job.seconds.push(s);
  job.seconds.sort((a, b) => a.t - b.t);
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
  const total = Object.values(rates.per_server).reduce((a, b) => a + b, 0);
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
    const rate = rates.per_server[s.name];
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

// ---- the charts ------------------------------------------------------

// A load of the page's is charted from its start to now, while it runs and
// for two minutes after; otherwise the last two minutes of the balancer's
// counts.
function drawCharts(snap) {
  const marks = snap.marks || [];
  let seconds;
  let t0;
  const t1 = snap.t;
  const recent = job && (!job.ended || snap.t - job.ended < HISTORY_S * 1000);
  const load = recent && job.kind === 'load' && job.seconds.length > 0;
  if (load) {
    seconds = job.seconds;
    t0 = job.started;
  } else {
    seconds = counts;
    t0 = t1 - HISTORY_S * 1000;
  }
  const shown = marks.filter((m) => m.t >= t0 && m.t <= t1 + 5000);
  Charts.draw($('charts'), seconds, shown, t0, t1);
  $('charts').dataset.source = load ? 'load' : 'balancer';
  const list = $('marks');
  list.replaceChildren();
  shown.forEach((m) => {
    const li = document.createElement('li');
    li.textContent = `${new Date(m.t).toLocaleTimeString()} ${m.source === 'page' ? '(page) ' : ''}${m.text}`;
    list.appendChild(li);
  });
}

// ---- the page's load or lesson ------------------------------------------

function drawJob() {
  const box = $('job');
  const running = job && (job.phase === 'running' || job.phase === 'stopping');
  box.dataset.state = job ? job.phase : 'none';
  box.dataset.kind = job ? job.kind : '';
  $('job-title').textContent = job ? `${job.title}: ${job.phase}${job.error ? ` (${job.error})` : ''}` : 'nothing has run yet';
  $('job-stop').disabled = !token || !running;
  $('load-start').disabled = !token || running;
  $('lesson-start').disabled = !token || running;
  $('report').hidden = !job;
  const steps = $('job-steps');
  steps.replaceChildren();
  if (!job) return;
  for (const s of job.steps || []) {
    const li = document.createElement('li');
    if (s.kind === 'say') li.textContent = `→ ${s.text}`;
    else if (s.kind === 'verdict') {
      li.textContent = `${s.passed ? '✓' : '✗'} ${s.expectation}: ${s.measured}`;
      li.className = s.passed ? 'pass' : 'fail';
    } else if (s.kind === 'table') li.textContent = `table: ${s.title}`;
    steps.appendChild(li);
  }
  const r = job.load;
  if (r) {
    const li = document.createElement('li');
    li.textContent = `${r.requests} requests, ${r.ok} ok, p99 ${r.latency_ms.p99.toFixed(1)} ms, ` +
      `${r.session_losses} session losses, ${r.stale_reads} stale reads, ${r.lost_writes} lost writes (audit)`;
    li.className = 'summary';
    steps.appendChild(li);
  }
  if (job.lesson) {
    const li = document.createElement('li');
    li.textContent = `Verdict: ${job.lesson.passed ? 'the claim holds' : 'the claim did NOT hold'}`;
    li.className = job.lesson.passed ? 'pass' : 'fail';
    steps.appendChild(li);
  }
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
$('load-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const body = { scenario: $('scenario').value, duration_s: Number($('duration').value) };
  const n = Number($('amount').value);
  if ($('model').value === 'rate') body.rate = n; else body.users = n;
  act('/api/load', body);
});
$('lesson-form').addEventListener('submit', (e) => {
  e.preventDefault();
  act('/api/lesson', { name: $('lesson').value, quick: $('quick').checked });
});
$('job-stop').addEventListener('click', () => act('/api/job/stop'));
fetch('/api/lessons').then((r) => r.json()).then((all) => {
  for (const l of all) {
    const o = document.createElement('option');
    o.value = l.name;
    o.textContent = `${l.number}. ${l.name}: ${l.summary}`;
    $('lesson').appendChild(o);
  }
}).catch(() => {});
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

let lastRates = { per_server: {} };

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
  drawCharts(snap);
  drawJob();
}

function onSnapshot(snap) {
  const rates = perSecond(snap);
  if (previous) {
    counts.push(rates);
    while (counts.length && counts[0].at < snap.t - HISTORY_S * 1000) counts.shift();
  }
  mergeJob(snap.job);
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
