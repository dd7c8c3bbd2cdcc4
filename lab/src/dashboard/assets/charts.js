// The charts, written by hand for scaling-lab: plain SVG, no library.
//
// Shared by the dashboard's page (served as /charts.js) and the report it
// exports (inlined there, so the file needs nothing else). Each chart is
// one figure per second on a common time axis (ms since the epoch), with
// every mark (a fault, a change, a button pressed) drawn as a numbered
// line across all of them, so cause and effect line up by eye.
//
// A second is what the load engine counted for it (a load run from the
// page: ok, errors by kind, p50/p99, session losses, stale reads, share per
// server) or, with no load of the page's, what the balancer counted between
// two snapshots (ok, failed, share; no latency). Missing figures are left
// out, never drawn as zero.
'use strict';

const Charts = (() => {
  const NS = 'http://www.w3.org/2000/svg';
  const W = 900;
  const H = 170;
  const LEFT = 48;
  const RIGHT = 10;
  const TOP = 14;
  const BOTTOM = 22;

  // Colours by name, matching the page's legend.
  const COLOURS = {
    ok: '#2e7d32', connect: '#c62828', timeout: '#6a1b9a', http_5xx: '#d84315',
    http_4xx: '#ef6c00', other: '#795548', failed: '#c62828',
    p50: '#1565c0', p99: '#c62828',
    session_losses: '#6a1b9a', stale_reads: '#ef6c00',
  };
  const SERVER_COLOURS = ['#1565c0', '#2e7d32', '#ef6c00', '#6a1b9a', '#00838f', '#ad1457', '#5d4037', '#9e9d24'];

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }

  // The failed requests of a second, by kind; a balancer's count has no kinds.
  function failedKinds(s) {
    if (s.errors_by_kind) return s.errors_by_kind;
    return { failed: s.errors || 0 };
  }

  function shares(s) {
    const per = s.per_server || {};
    const total = Object.values(per).reduce((a, b) => a + b, 0);
    const out = {};
    for (const [k, v] of Object.entries(per)) out[k] = total > 0 ? (100 * v) / total : 0;
    return out;
  }

  // One chart: `lines` is [{name, colour, pick(second) -> number|undefined}].
  function chart(parent, id, title, unit, seconds, lines, marks, t0, t1, fixedTop) {
    const box = document.createElement('figure');
    box.className = 'chart';
    const cap = document.createElement('figcaption');
    cap.textContent = title;
    box.appendChild(cap);
    const svg = el('svg', { id, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title }, box);
    parent.appendChild(box);
    const span = Math.max(1000, t1 - t0);
    const x = (t) => LEFT + ((t - t0) / span) * (W - LEFT - RIGHT);
    let top = fixedTop || 0;
    if (!fixedTop) {
      for (const s of seconds) for (const l of lines) {
        const v = l.pick(s);
        if (v !== undefined && v !== null && v > top) top = v;
      }
      top = top <= 0 ? 1 : top * 1.1;
    }
    const y = (v) => H - BOTTOM - (v / top) * (H - BOTTOM - TOP);
    el('path', { d: `M${LEFT},${TOP} V${H - BOTTOM} H${W - RIGHT}`, class: 'axis', fill: 'none', stroke: '#b0bec5' }, svg);
    const label = (tx, ty, text, anchor) => {
      const t = el('text', { x: tx, y: ty, 'font-size': 11, fill: '#616161', 'text-anchor': anchor || 'start' }, svg);
      t.textContent = text;
    };
    label(LEFT - 4, TOP + 4, `${top >= 10 ? Math.round(top) : top.toFixed(1)}${unit}`, 'end');
    label(LEFT - 4, H - BOTTOM, '0', 'end');
    label(LEFT, H - 6, new Date(t0).toLocaleTimeString());
    label(W - RIGHT, H - 6, `${new Date(t1).toLocaleTimeString()} (${Math.round(span / 1000)} s)`, 'end');
    // Marks first, under the lines.
    marks.forEach((m) => {
      if (m.t < t0 || m.t > t1) return;
      el('line', { x1: x(m.t), x2: x(m.t), y1: TOP, y2: H - BOTTOM, stroke: m.source === 'page' ? '#1565c0' : '#90a4ae', 'stroke-dasharray': '3 3', class: 'mark' }, svg);
      const t = el('text', { x: x(m.t) + 2, y: TOP + 10, 'font-size': 10, fill: '#1565c0' }, svg);
      t.textContent = String(m.n);
    });
    const legend = document.createElement('p');
    legend.className = 'legend';
    const totals = {};
    for (const l of lines) {
      let d = '';
      let total = 0;
      for (const s of seconds) {
        const v = l.pick(s);
        if (v === undefined || v === null) continue;
        total += v;
        d += `${d ? 'L' : 'M'}${x(s.at).toFixed(1)},${y(v).toFixed(1)}`;
      }
      totals[l.name] = total;
      if (d) el('path', { d, fill: 'none', stroke: l.colour, 'stroke-width': 2, 'data-series': l.name }, svg);
      const k = document.createElement('span');
      k.className = 'key';
      k.style.setProperty('--key', l.colour);
      k.textContent = l.name;
      legend.appendChild(k);
    }
    // For scripts and tests: what each series adds up to over the chart.
    for (const [k, v] of Object.entries(totals)) svg.dataset[`total_${k}`.replace(/_(\w)/g, (_, c) => c.toUpperCase())] = String(Math.round(v));
    svg.dataset.seconds = String(seconds.length);
    box.appendChild(legend);
    return svg;
  }

  // Draws every chart into `parent` (emptied first). `marks` are numbered
  // in order; the caller lists them with the same numbers.
  function draw(parent, seconds, marks, t0, t1) {
    parent.replaceChildren();
    const numbered = marks.map((m, i) => Object.assign({ n: i + 1 }, m));
    const kinds = new Set();
    for (const s of seconds) for (const k of Object.keys(failedKinds(s))) kinds.add(k);
    const requestLines = [{ name: 'ok', colour: COLOURS.ok, pick: (s) => s.ok }];
    for (const k of kinds) requestLines.push({ name: k, colour: COLOURS[k] || '#c62828', pick: (s) => failedKinds(s)[k] || 0 });
    const failed = chart(parent, 'chart-requests', 'Requests per second: ok, and failed by kind', '/s', seconds, requestLines, numbered, t0, t1);
    failed.dataset.failedTotal = String(Math.round(seconds.reduce((a, s) => a + (s.errors || 0), 0)));
    failed.dataset.okTotal = String(Math.round(seconds.reduce((a, s) => a + (s.ok || 0), 0)));
    // The latest second, for a test that waits for a recovery.
    const last = seconds.length ? seconds[seconds.length - 1] : null;
    failed.dataset.lastFailed = last ? String(Math.round(last.errors || 0)) : '';
    failed.dataset.lastOk = last ? String(Math.round(last.ok || 0)) : '';
    const timed = seconds.filter((s) => s.p50_ms !== undefined && s.p50_ms !== null);
    chart(parent, 'chart-latency', 'Latency, ms: p50 and p99 of each second (from the load)', ' ms', timed, [
      { name: 'p50', colour: COLOURS.p50, pick: (s) => (s.requests ? s.p50_ms : undefined) },
      { name: 'p99', colour: COLOURS.p99, pick: (s) => (s.requests ? s.p99_ms : undefined) },
    ], numbered, t0, t1);
    chart(parent, 'chart-correctness', 'Session losses and stale reads per second (from the load)', '', timed, [
      { name: 'session_losses', colour: COLOURS.session_losses, pick: (s) => s.session_losses },
      { name: 'stale_reads', colour: COLOURS.stale_reads, pick: (s) => s.stale_reads },
    ], numbered, t0, t1);
    const servers = new Set();
    for (const s of seconds) for (const k of Object.keys(s.per_server || {})) servers.add(k);
    const shareLines = [...servers].sort().map((name, i) => ({
      // A server absent from a second that others answered had no share
      // of it: 0, not a gap the line would bridge.
      name,
      colour: SERVER_COLOURS[i % SERVER_COLOURS.length],
      pick: (s) => (Object.keys(s.per_server || {}).length ? shares(s)[name] || 0 : undefined),
    }));
    const share = chart(parent, 'chart-share', 'Share of requests per server, %', '%', seconds, shareLines, numbered, t0, t1, 100);
    share.dataset.lastShare = JSON.stringify(last ? shares(last) : {});
  }

  return { draw };
})();
