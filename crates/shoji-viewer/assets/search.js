// The search page, / and /search: the form (its state is the URL), a duration-over-time scatter
// plot and the list of traces; two ticked traces can be compared.

import { h, s, clear, fmtDuration, fmtTime, fmtZone, link, errorBox } from './dom.js';
import { api } from './api.js';
import { resultFromSummary } from './model.js';

const LOOKBACKS = [
  ['', 'all time'], ['5m', 'last 5 minutes'], ['15m', 'last 15 minutes'], ['1h', 'last hour'],
  ['6h', 'last 6 hours'], ['1d', 'last day'], ['7d', 'last 7 days'], ['custom', 'custom range'],
];
const UNIT_US = { m: 60e6, h: 3600e6, d: 86400e6 };
const FIELDS = ['service', 'operation', 'tags', 'minDuration', 'maxDuration', 'lookback', 'start', 'end', 'limit'];

/** "k=v k2=v2" (values may be quoted) as the JSON object Jaeger's API takes. */
export function tagsToJson(text) {
  const out = {};
  const re = /([^\s=]+)=("([^"]*)"|\S*)/g;
  let m;
  let used = 0;
  while ((m = re.exec(text))) {
    out[m[1]] = m[3] !== undefined ? m[3] : m[2];
    used += m[0].length;
  }
  if (text.replace(/\s+/g, '').length > 0 && used === 0) throw new Error(`tags must look like key=value, got ${JSON.stringify(text)}`);
  return JSON.stringify(out);
}

function apiParams(form) {
  const q = new URLSearchParams();
  for (const k of ['service', 'operation', 'minDuration', 'maxDuration', 'limit']) if (form[k]) q.set(k, form[k]);
  if (form.tags && form.tags.trim()) q.set('tags', tagsToJson(form.tags));
  const now = Date.now() * 1000;
  if (form.lookback === 'custom') {
    if (form.start) q.set('start', String(Date.parse(form.start) * 1000));
    if (form.end) q.set('end', String(Date.parse(form.end) * 1000));
  } else if (form.lookback) {
    const m = /^(\d+)([mhd])$/.exec(form.lookback);
    if (m) { q.set('start', String(now - Number(m[1]) * UNIT_US[m[2]])); q.set('end', String(now)); }
  }
  return q;
}

export function searchPage(root, params, nav) {
  const form = Object.fromEntries(FIELDS.map((k) => [k, params.get(k) || '']));
  if (!form.limit) form.limit = '20';
  const selected = new Set();
  let destroyed = false;

  const serviceSel = h('select', { name: 'service', id: 'service' }, h('option', { value: '' }, 'all services'));
  const opSel = h('select', { name: 'operation', id: 'operation' }, h('option', { value: '' }, 'all operations'));
  const input = (name, props) => h('input', { name, id: name, value: form[name], ...props });
  const custom = h('div', { class: 'custom-range', hidden: form.lookback !== 'custom' },
    h('label', {}, `From (${fmtZone(Date.now() * 1000)})`, input('start', { type: 'datetime-local', step: 1 })),
    h('label', {}, `To (${fmtZone(Date.now() * 1000)})`, input('end', { type: 'datetime-local', step: 1 })));
  const lookSel = h('select', {
    name: 'lookback', id: 'lookback',
    onchange: (e) => { custom.hidden = e.target.value !== 'custom'; },
  }, LOOKBACKS.map(([v, label]) => h('option', { value: v, selected: v === form.lookback }, label)));
  const formEl = h('form', {
    class: 'search-form',
    onsubmit: (e) => {
      e.preventDefault();
      const data = new FormData(formEl);
      const q = new URLSearchParams();
      for (const k of FIELDS) {
        const v = String(data.get(k) || '').trim();
        if (v) q.set(k, v);
      }
      q.set('run', '1');
      nav(`/search?${q}`);
    },
  },
  h('label', {}, 'Service', serviceSel),
  h('label', {}, 'Operation', opSel),
  h('label', {}, 'Tags', input('tags', { placeholder: 'source=agent container_id=c1', size: 28 })),
  h('label', {}, 'Min duration', input('minDuration', { placeholder: 'e.g. 100ms', size: 8 })),
  h('label', {}, 'Max duration', input('maxDuration', { placeholder: 'e.g. 2s', size: 8 })),
  h('label', {}, 'Lookback', lookSel),
  custom,
  h('label', {}, 'Limit', input('limit', { type: 'number', min: 1, max: 1500, size: 5 })),
  h('button', { type: 'submit', class: 'primary' }, 'Find traces'));

  const results = h('section', { class: 'results', 'aria-live': 'polite' });
  clear(root).append(h('h1', {}, 'Search traces'), formEl, results);
  document.title = 'Search · Shoji';

  async function loadOperations(service) {
    clear(opSel).append(h('option', { value: '' }, 'all operations'));
    if (!service) return;
    try {
      for (const op of await api.operations(service)) opSel.append(h('option', { value: op, selected: op === form.operation }, op));
    } catch (e) {
      results.prepend(errorBox(e));
    }
  }
  serviceSel.addEventListener('change', () => { form.operation = ''; loadOperations(serviceSel.value); });

  (async () => {
    try {
      for (const sv of await api.services()) serviceSel.append(h('option', { value: sv, selected: sv === form.service }, sv));
      await loadOperations(form.service);
    } catch (e) {
      results.append(errorBox(e));
    }
  })();

  function compareBar() {
    const ids = [...selected];
    return h('div', { class: 'compare-bar' },
      h('span', {}, ids.length === 2 ? 'Two traces ticked.' : `Tick two traces to compare them (${ids.length} ticked).`),
      h('button', {
        class: 'compare-selected', disabled: ids.length !== 2,
        onclick: () => nav(`/compare/${ids[0]}/${ids[1]}`),
      }, 'Compare'));
  }

  function render(list) {
    let bar = compareBar();
    const rows = list.map((t) => h('li', { class: 'result', dataset: { traceId: t.id } },
      h('input', {
        type: 'checkbox', class: 'pick', 'aria-label': `compare ${t.id}`,
        onchange: (e) => {
          if (e.target.checked) selected.add(t.id); else selected.delete(t.id);
          const fresh = compareBar();
          bar.replaceWith(fresh);
          bar = fresh;
        },
      }),
      h('div', { class: 'result-main' },
        link(`/trace/${t.id}`, { class: 'result-name' }, t.name),
        h('div', { class: 'result-meta' },
          h('span', { class: 'result-spans' }, `${t.spanCount} spans`),
          t.complete ? null : h('span', { class: 'result-incomplete', title: 'the root span has not arrived (yet)' }, 'no root yet'),
          t.services.map((sv) => h('span', { class: 'svc-chip' }, sv)),
          h('span', { class: 'result-id' }, t.id.slice(0, 16)))),
      h('div', { class: 'result-side' },
        h('span', { class: 'result-duration' }, fmtDuration(t.duration)),
        h('span', { class: 'result-time' }, fmtTime(t.start, { zone: true })))));
    clear(results).append(
      h('p', { class: 'result-count' }, `${list.length} trace${list.length === 1 ? '' : 's'}`),
      list.length ? scatter(list, nav) : null,
      bar,
      h('ol', { class: 'result-list' }, rows));
  }

  if (params.get('run') || FIELDS.some((k) => k !== 'limit' && params.get(k)) || params.toString() === '') {
    (async () => {
      results.append(h('p', { class: 'muted' }, 'searching…'));
      try {
        const raw = await api.searchSummaries(apiParams(form));
        if (destroyed) return;
        const list = raw.map(resultFromSummary).sort((a, b) => b.start - a.start);
        render(list);
      } catch (e) {
        clear(results).append(errorBox(e));
      }
    })();
  }
  return { destroy() { destroyed = true; } };
}

/** Duration over start time, one dot per trace, sized by span count; a click opens the trace. */
function scatter(list, nav) {
  const W = 900;
  const H = 180;
  const pad = { l: 64, r: 16, t: 10, b: 28 };
  const t0 = Math.min(...list.map((t) => t.start));
  const t1 = Math.max(...list.map((t) => t.start));
  const dMax = Math.max(...list.map((t) => t.duration), 1);
  const xs = (t) => pad.l + (t1 > t0 ? ((t - t0) / (t1 - t0)) : 0.5) * (W - pad.l - pad.r);
  const ys = (d) => H - pad.b - (d / dMax) * (H - pad.t - pad.b);
  const maxSpans = Math.max(...list.map((t) => t.spanCount));
  const dots = list.map((t) => s('circle', {
    class: `dot ${t.complete ? '' : 'dot-incomplete'}`,
    cx: xs(t.start), cy: ys(t.duration), r: 4 + 6 * Math.sqrt(t.spanCount / maxSpans),
    dataset: { traceId: t.id },
    onclick: () => nav(`/trace/${t.id}`),
  }, s('title', {}, `${t.name}\n${fmtDuration(t.duration)}, ${t.spanCount} spans\n${fmtTime(t.start)}`)));
  return s('svg', { class: 'scatter', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'trace duration over time' },
    s('line', { class: 'axis-line', x1: pad.l, y1: H - pad.b, x2: W - pad.r, y2: H - pad.b }),
    s('line', { class: 'axis-line', x1: pad.l, y1: pad.t, x2: pad.l, y2: H - pad.b }),
    s('text', { class: 'axis-label', x: pad.l - 6, y: pad.t + 10, 'text-anchor': 'end' }, fmtDuration(dMax)),
    s('text', { class: 'axis-label', x: pad.l - 6, y: H - pad.b, 'text-anchor': 'end' }, '0'),
    s('text', { class: 'axis-label', x: pad.l, y: H - 8 }, fmtTime(t0, { zone: true })),
    s('text', { class: 'axis-label', x: W - pad.r, y: H - 8, 'text-anchor': 'end' }, fmtTime(t1, { zone: true })),
    ...dots);
}
