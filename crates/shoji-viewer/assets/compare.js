// The compare page, /compare/<a>/<b>: which operations got slower or faster from A to B, and
// which ran in only one of them.

import { h, clear, fmtDuration, link, errorBox } from './dom.js';
import { api } from './api.js';

function pct(a, b) {
  if (!a) return '';
  const p = ((b - a) / a) * 100;
  return `${p >= 0 ? '+' : ''}${p.toFixed(1)}%`;
}

function opTable(rows, cls, maxDelta) {
  return h('table', { class: `grid diff-table ${cls}` },
    h('thead', {}, h('tr', {}, ['Operation', 'Count A', 'Count B', 'Total A', 'Total B', 'Change', ''].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows.map((r) => {
      const delta = (r.total_b_ns - r.total_a_ns) / 1000;
      const kind = delta > 0 ? 'slower' : delta < 0 ? 'faster' : 'same';
      const w = maxDelta ? (Math.abs(delta) / maxDelta) * 100 : 0;
      return h('tr', { class: `op-${kind}` },
        h('td', { class: 'group-key' }, r.operation),
        h('td', { class: 'num' }, String(r.count_a)),
        h('td', { class: 'num' }, String(r.count_b)),
        h('td', { class: 'num' }, fmtDuration(r.total_a_ns / 1000)),
        h('td', { class: 'num' }, fmtDuration(r.total_b_ns / 1000)),
        h('td', { class: 'num delta' }, `${delta > 0 ? '+' : ''}${fmtDuration(delta)} ${pct(r.total_a_ns, r.total_b_ns)}`),
        h('td', { class: 'delta-bar-cell' }, h('div', { class: `delta-bar ${kind}`, style: { width: `${w}%` } })));
    })));
}

export function comparePage(root, a, b, nav) {
  let destroyed = false;
  const form = h('form', {
    class: 'compare-form',
    onsubmit: (e) => {
      e.preventDefault();
      const [x, y] = [e.target.elements.a.value.trim(), e.target.elements.b.value.trim()];
      if (x && y) nav(`/compare/${encodeURIComponent(x)}/${encodeURIComponent(y)}`);
    },
  },
  h('label', {}, 'A ', h('input', { name: 'a', value: a || '', placeholder: 'trace id (or latest)', size: 34 })),
  h('label', {}, 'B ', h('input', { name: 'b', value: b || '', placeholder: 'trace id', size: 34 })),
  h('button', { type: 'submit', class: 'primary' }, 'Compare'));
  const out = h('section', { class: 'compare' });
  clear(root).append(h('h1', {}, 'Compare traces'), form, out);
  document.title = 'Compare · Shoji';
  if (!a || !b) {
    out.append(h('p', { class: 'muted' }, 'Give two trace ids, or tick two traces in the search results.'));
    return { destroy() {} };
  }
  out.append(h('p', { class: 'muted' }, 'comparing…'));
  (async () => {
    try {
      const d = await api.diff(a, b);
      if (destroyed) return;
      const total = (d.duration_b_ns - d.duration_a_ns) / 1000;
      const changed = d.changed.filter((r) => r.total_a_ns !== r.total_b_ns);
      const slower = changed.filter((r) => r.total_b_ns > r.total_a_ns);
      const faster = changed.filter((r) => r.total_b_ns < r.total_a_ns);
      const maxDelta = Math.max(1, ...changed.map((r) => Math.abs(r.total_b_ns - r.total_a_ns) / 1000));
      clear(out).append(
        h('div', { class: 'compare-head' },
          h('div', { class: 'side side-a' }, h('span', { class: 'side-label' }, 'A'),
            link(`/trace/${d.a}`, { class: 'trace-a' }, d.a), h('span', { class: 'dur' }, fmtDuration(d.duration_a_ns / 1000))),
          h('div', { class: 'side side-b' }, h('span', { class: 'side-label' }, 'B'),
            link(`/trace/${d.b}`, { class: 'trace-b' }, d.b), h('span', { class: 'dur' }, fmtDuration(d.duration_b_ns / 1000))),
          h('div', { class: `total-change ${total > 0 ? 'slower' : total < 0 ? 'faster' : 'same'}` },
            `B is ${fmtDuration(Math.abs(total))} ${total > 0 ? 'slower' : total < 0 ? 'faster' : 'the same'} (${pct(d.duration_a_ns, d.duration_b_ns) || '0%'})`)),
        h('h2', {}, `Slower in B (${slower.length})`),
        slower.length ? opTable(slower, 'slower-table', maxDelta) : h('p', { class: 'muted' }, 'none'),
        h('h2', {}, `Faster in B (${faster.length})`),
        faster.length ? opTable(faster, 'faster-table', maxDelta) : h('p', { class: 'muted' }, 'none'),
        h('h2', {}, `Only in A (${d.only_in_a.length})`),
        d.only_in_a.length ? opTable(d.only_in_a, 'only-a-table', maxDelta) : h('p', { class: 'muted' }, 'none'),
        h('h2', {}, `Only in B (${d.only_in_b.length})`),
        d.only_in_b.length ? opTable(d.only_in_b, 'only-b-table', maxDelta) : h('p', { class: 'muted' }, 'none'));
    } catch (e) {
      clear(out).append(errorBox(e));
    }
  })();
  return { destroy() { destroyed = true; } };
}
