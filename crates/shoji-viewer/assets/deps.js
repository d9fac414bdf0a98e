// The system architecture page, /dependencies: which service calls which, from the server's
// `/api/dependencies` (Jaeger's call graph: a parent span in one service with a child in
// another), as a left-to-right graph and a table.

import { h, s, clear, errorBox, fmtTime } from './dom.js';
import { api } from './api.js';

const LOOKBACKS = [['1h', 3600e3, 'last hour'], ['1d', 86400e3, 'last day'], ['7d', 7 * 86400e3, 'last 7 days'], ['all', 100 * 365 * 86400e3, 'all time']];
const W = 190;
const H = 34;
const GAP_X = 90;
const GAP_Y = 16;

/** Services in columns: each one column right of the furthest caller (cycles cut). */
export function layoutServices(links) {
  const names = [...new Set(links.flatMap((l) => [l.parent, l.child]))].sort();
  const col = new Map(names.map((n) => [n, 0]));
  // Longest path, bounded by the number of services so a cycle cannot push forever.
  for (let round = 0; round < names.length; round++) {
    let moved = false;
    for (const l of links) {
      if (l.parent === l.child) continue;
      const want = col.get(l.parent) + 1;
      if (want > col.get(l.child) && want < names.length) { col.set(l.child, want); moved = true; }
    }
    if (!moved) break;
  }
  const rows = new Map();
  const pos = new Map();
  for (const n of names) {
    const c = col.get(n);
    const r = rows.get(c) || 0;
    rows.set(c, r + 1);
    pos.set(n, { x: 10 + c * (W + GAP_X), y: 10 + r * (H + GAP_Y) });
  }
  return { names, pos, cols: Math.max(0, ...col.values()) + 1, rows: Math.max(0, ...rows.values()) };
}

function graph(links) {
  const { names, pos, cols, rows } = layoutServices(links);
  const width = cols * (W + GAP_X) + 20;
  const height = Math.max(rows, 1) * (H + GAP_Y) + 20;
  const edges = links.map((l) => {
    const a = pos.get(l.parent);
    const b = pos.get(l.child);
    const [x1, y1, x2, y2] = [a.x + W, a.y + H / 2, b.x, b.y + H / 2];
    const mx = (x1 + x2) / 2;
    const d = l.parent === l.child
      ? `M${a.x + W - 20},${a.y} C${a.x + W},${a.y - 25} ${a.x + W + 25},${a.y} ${a.x + W},${a.y + 10}`
      : `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
    return s('g', { class: 'dep-edge' },
      s('path', { d }),
      s('text', { x: l.parent === l.child ? a.x + W + 4 : mx, y: (y1 + y2) / 2 - 4, class: 'dep-count' }, String(l.callCount)));
  });
  const nodes = names.map((n) => s('g', { class: 'dep-node', transform: `translate(${pos.get(n).x},${pos.get(n).y})` },
    s('title', {}, n),
    s('rect', { width: W, height: H, rx: 5 }),
    s('text', { x: 10, y: 21 }, n.length > 26 ? `${n.slice(0, 25)}…` : n)));
  return s('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'service dependency graph', class: 'deps-graph' },
    ...edges, ...nodes);
}

export function depsPage(root, params, nav) {
  let destroyed = false;
  const look = LOOKBACKS.find(([k]) => k === params.get('lookback')) || LOOKBACKS[1];
  const out = h('section', { class: 'deps' });
  const select = h('select', {
    id: 'deps-lookback',
    onchange: (e) => nav(`/dependencies?lookback=${encodeURIComponent(e.target.value)}`),
  }, LOOKBACKS.map(([k, , label]) => h('option', { value: k, selected: k === look[0] }, label)));
  clear(root).append(h('h1', {}, 'System architecture'),
    h('p', { class: 'muted' }, 'Services and the calls between them: a span in one service with a child span in another counts as one call.'),
    h('label', { class: 'group-by' }, 'Time range ', select), out);
  document.title = 'System architecture · Shoji';
  const end = Date.now();
  (async () => {
    let links;
    try {
      links = await api.dependencies(end, look[1]);
    } catch (e) {
      if (destroyed) return;
      out.append(e.status === 404
        ? h('p', { class: 'deps-unavailable' }, 'This server does not offer /api/dependencies; a newer `shoji trace serve` does.')
        : errorBox(e));
      return;
    }
    if (destroyed) return;
    links = (links || []).filter((l) => l && typeof l.parent === 'string' && typeof l.child === 'string')
      .sort((a, b) => b.callCount - a.callCount || a.parent.localeCompare(b.parent));
    if (!links.length) {
      out.append(h('p', { class: 'deps-empty' }, `No calls between services up to ${fmtTime(end * 1000, { zone: true })}.`));
      return;
    }
    out.append(h('div', { class: 'graph-scroll' }, graph(links)),
      h('table', { class: 'grid deps-table' },
        h('thead', {}, h('tr', {}, ['Caller', 'Called', 'Calls'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, links.map((l) => h('tr', {},
          h('td', { class: 'dep-parent' }, l.parent), h('td', { class: 'dep-child' }, l.child),
          h('td', { class: 'num dep-calls' }, String(l.callCount)))))));
  })();
  return { destroy() { destroyed = true; } };
}
