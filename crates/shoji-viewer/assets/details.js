// A span's details: ids, timing, status, links, attributes, events (log records), its process.

import { h, fmtDuration, fmtTime, sourceClass, SELF_TIME_HELP } from './dom.js';

function valueText(v) {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

function kvTable(rows, cls) {
  if (!rows.length) return h('p', { class: 'muted' }, 'none');
  return h('table', { class: `kv ${cls || ''}` }, h('tbody', {},
    rows.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, valueText(v))))));
}

/**
 * A span's links (Jaeger references other than its parent): one in this trace selects it, one
 * in another trace opens that trace at the span.
 */
function linkList(trace, sp, onSelect, onOtherTrace) {
  if (!sp.links.length) return h('p', { class: 'muted' }, 'none');
  return h('ul', { class: 'links' }, sp.links.map((l) => {
    const target = l.local ? trace.byId.get(l.spanId) : null;
    const label = target ? `${target.name} (${l.spanId})` : `span ${l.spanId}`;
    const go = (e) => {
      e.preventDefault();
      if (target) onSelect(target);
      else onOtherTrace(l.traceId, l.spanId);
    };
    return h('li', { class: 'span-link', dataset: { refType: l.type } },
      h('span', { class: 'ref-type' }, l.type), ' ',
      l.local && !target
        ? `${label}: not in this trace`
        : h('a', { href: l.local ? '#' : `/trace/${l.traceId}?span=${l.spanId}`, onclick: go }, label),
      l.local ? null : h('span', { class: 'muted' }, ` in trace ${l.traceId}`));
  }));
}

export function spanDetails(trace, sp, { onClose, onSelect, onOtherTrace }) {
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
      ['self time', sp.selfTime === null ? 'unknown' : fmtDuration(sp.selfTime)],
      ['start', `+${fmtDuration(sp.start - trace.start)}  (${fmtTime(sp.start, { zone: true })})`],
      ['status', status + (sp.attrs['otel.status_description'] ? `: ${sp.attrs['otel.status_description']}` : '')],
      ['span id', sp.id],
      ['trace id', trace.id],
    ], 'ids'),
    h('div', { class: 'parent-link' }, 'parent: ',
      parent
        ? h('a', { href: '#', onclick: (e) => { e.preventDefault(); onSelect(parent); } }, `${parent.name} (${parent.id})`)
        : (sp.parentId ? `${sp.parentId} (not in this trace)` : 'none: a root span')),
    h('p', { class: 'muted self-help', title: SELF_TIME_HELP }, 'ⓘ how self time is counted with concurrent children'),
    h('h3', {}, `Links (${sp.links.length})`),
    linkList(trace, sp, onSelect, onOtherTrace),
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
