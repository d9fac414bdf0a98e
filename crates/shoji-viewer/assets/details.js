// A span's details: ids, timing, status, attributes, events (log records) and its process.

import { h, fmtDuration, fmtTime, sourceClass } from './dom.js';

function valueText(v) {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

function kvTable(rows, cls) {
  if (!rows.length) return h('p', { class: 'muted' }, 'none');
  return h('table', { class: `kv ${cls || ''}` }, h('tbody', {},
    rows.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, valueText(v))))));
}

export function spanDetails(trace, sp, { onClose, onSelect }) {
  const status = sp.attrs['otel.status_code'] || (sp.error ? 'ERROR' : 'UNSET');
  const parent = sp.parent;
  const tags = [...sp.tags].sort((a, b) => a.key.localeCompare(b.key)).map((t) => [t.key, t.value]);
  return h('aside', { class: `details ${sourceClass(sp.source)}`, 'aria-label': 'span details' },
    h('div', { class: 'details-head' },
      h('span', { class: 'swatch' }),
      h('h2', { class: 'details-title' }, sp.name),
      h('button', { class: 'close', title: 'close (Esc)', onclick: onClose }, '×')),
    kvTable([
      ['service', sp.service],
      ['source', sp.source],
      ['duration', fmtDuration(sp.duration)],
      ['self time', fmtDuration(sp.selfTime)],
      ['start', `+${fmtDuration(sp.start - trace.start)}  (${fmtTime(sp.start)})`],
      ['status', status + (sp.attrs['otel.status_description'] ? `: ${sp.attrs['otel.status_description']}` : '')],
      ['span id', sp.id],
      ['trace id', trace.id],
    ], 'ids'),
    h('div', { class: 'parent-link' }, 'parent: ',
      parent
        ? h('a', { href: '#', onclick: (e) => { e.preventDefault(); onSelect(parent); } }, `${parent.name} (${parent.id})`)
        : (sp.parentId ? `${sp.parentId} (not in this trace)` : 'none: a root span')),
    h('h3', {}, `Attributes (${tags.length})`),
    kvTable(tags, 'attrs'),
    h('h3', {}, `Events (${sp.logs.length})`),
    sp.logs.length
      ? h('ol', { class: 'events' }, sp.logs.map((l) => h('li', {},
        h('span', { class: 'event-time' }, `+${fmtDuration(l.timestamp - sp.start)}`),
        kvTable((l.fields || []).map((f) => [f.key, f.value]), 'event-fields'))))
      : h('p', { class: 'muted' }, 'none'),
    h('h3', {}, 'Process'),
    kvTable([['service.name', sp.process.serviceName], ...(sp.process.tags || []).map((t) => [t.key, t.value])], 'process'),
    sp.warnings.length ? [h('h3', {}, 'Warnings'), h('ul', {}, sp.warnings.map((w) => h('li', {}, w)))] : null);
}
