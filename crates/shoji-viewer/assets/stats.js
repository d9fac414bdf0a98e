// Statistics: spans grouped by operation, service or any attribute, with self time.

import { h, fmtDuration, SELF_TIME_HELP } from './dom.js';
import { attributeKeys, groupStats } from './model.js';

const COLUMNS = [
  ['key', 'Group'], ['count', 'Count'], ['total', 'Total'], ['self', 'Self time'],
  ['selfPct', 'Self % of trace'], ['avg', 'Average'], ['min', 'Min'], ['max', 'Max'],
];

export function statsView(trace, state, onChange) {
  const group = state.group || 'operation';
  const sortKey = state.sort || 'self';
  const rows = groupStats(trace, group).map((g) => ({ ...g, selfPct: trace.duration ? (g.self / trace.duration) * 100 : 0 }));
  const dir = sortKey === 'key' ? 1 : -1;
  rows.sort((a, b) => (a[sortKey] < b[sortKey] ? -dir : a[sortKey] > b[sortKey] ? dir : 0));
  const choices = ['operation', 'service', ...attributeKeys(trace)];
  const select = h('select', {
    id: 'group-by',
    onchange: (e) => onChange({ group: e.target.value }),
  }, choices.map((c) => h('option', { value: c, selected: c === group }, c)));
  const fmt = (k, v) => (k === 'key' ? v : k === 'count' ? String(v) : k === 'selfPct' ? `${v.toFixed(1)}%` : fmtDuration(v));
  return h('section', { class: 'stats' },
    h('label', { class: 'group-by' }, 'Group by ', select),
    h('table', { class: 'grid stats-table' },
      h('thead', {}, h('tr', {}, COLUMNS.map(([k, label]) => h('th', {
        scope: 'col',
        class: k === sortKey ? 'sorted' : '',
        onclick: () => onChange({ sort: k }),
        title: k === 'self' || k === 'selfPct' ? `${SELF_TIME_HELP} Click to sort.` : 'sort',
      }, label, k === 'self' || k === 'selfPct' ? h('span', { class: 'help-mark' }, ' ⓘ') : null)))),
      h('tbody', {}, rows.map((r) => h('tr', {},
        COLUMNS.map(([k]) => h('td', {
          class: k === 'key' ? 'group-key' : `num col-${k}`,
          dataset: k === 'key' ? undefined : { value: String(r[k]) },
        }, fmt(k, r[k]))))))),
    h('p', { class: 'muted self-legend' }, `Self % of trace: a group's self time over the trace's duration (${fmtDuration(trace.duration)}). ${SELF_TIME_HELP}`));
}
