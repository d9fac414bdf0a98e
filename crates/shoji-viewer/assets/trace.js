// The trace page, /trace/<id>: header, timeline with details, statistics, graph, critical path,
// keyboard navigation, and live updates while spans are still arriving.

import { h, clear, fmtDuration, fmtTime, legend, link, errorBox } from './dom.js';
import { api } from './api.js';
import { buildTrace } from './model.js';
import { Timeline } from './timeline.js';
import { spanDetails } from './details.js';
import { statsView } from './stats.js';
import { graphView } from './graph.js';

const POLL_MS = 2000;
// A trace whose newest span ended within this long is treated as possibly still receiving.
// So is one whose root has not arrived yet.
const LIVE_WINDOW_US = 5 * 60 * 1e6;

export function tracePage(root, id, params, nav) {
  let trace = null;
  let timeline = null;
  let detailsEl = null;
  let critSegments = null;
  let timer = null;
  let destroyed = false;
  let lastSignature = '';
  const state = {
    view: params.get('view') || 'timeline',
    span: params.get('span'),
    group: params.get('group') || 'operation',
    sort: params.get('sort') || 'self',
    crit: params.get('crit') === '1',
  };

  const head = h('header', { class: 'trace-head' });
  const body = h('div', { class: 'trace-body' });
  const status = h('span', { class: 'live', role: 'status' });
  clear(root).append(head, body);
  head.append(h('p', { class: 'muted' }, `loading trace ${id}…`));

  function syncUrl() {
    const q = new URLSearchParams();
    if (state.view !== 'timeline') q.set('view', state.view);
    if (state.span) q.set('span', state.span);
    if (state.view === 'stats') { q.set('group', state.group); q.set('sort', state.sort); }
    if (state.crit) q.set('crit', '1');
    const qs = q.toString();
    history.replaceState(null, '', `/trace/${encodeURIComponent(id)}${qs ? `?${qs}` : ''}`);
  }

  function renderHead() {
    const t = trace;
    const tab = (view, label) => h('button', {
      class: `tab ${state.view === view ? 'active' : ''}`,
      'aria-pressed': String(state.view === view),
      dataset: { view },
      onclick: () => { state.view = view; syncUrl(); renderBody(); renderHead(); },
    }, label);
    clear(head).append(
      h('h1', { class: 'trace-title' }, t.root ? `${t.root.service}: ${t.root.name}` : id),
      h('dl', { class: 'trace-meta' },
        [['Trace ID', t.id], ['Started', fmtTime(t.start)], ['Duration', fmtDuration(t.duration)],
        ['Spans', String(t.spans.length)], ['Depth', String(t.maxDepth + 1)],
        ['Services', t.services.join(', ')], ['Errors', String(t.errors)]]
          .map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', { class: `meta-${k.toLowerCase().replace(' ', '-')}` }, v)))),
      h('div', { class: 'toolbar' },
        tab('timeline', 'Timeline'), tab('stats', 'Statistics'), tab('graph', 'Graph'),
        h('button', {
          class: `crit-toggle ${state.crit ? 'active' : ''}`,
          'aria-pressed': String(state.crit),
          title: 'highlight the critical path (c)',
          onclick: () => toggleCrit(),
        }, 'Critical path'),
        state.view === 'timeline' ? [
          h('button', { onclick: () => timeline.setAllCollapsed(false) }, 'Expand all'),
          h('button', { onclick: () => timeline.setAllCollapsed(true) }, 'Collapse all'),
        ] : null,
        h('form', {
          class: 'compare-with',
          onsubmit: (e) => {
            e.preventDefault();
            const other = e.target.elements.other.value.trim();
            if (other) nav(`/compare/${encodeURIComponent(t.id)}/${encodeURIComponent(other)}`);
          },
        }, h('input', { name: 'other', placeholder: 'trace id to compare with', 'aria-label': 'trace id to compare with' }),
        h('button', { type: 'submit' }, 'Compare')),
        h('a', { href: `/api/traces/${encodeURIComponent(t.id)}`, class: 'json-link', download: `${t.id}.json` }, 'JSON'),
        status),
      legend());
  }

  function showDetails(sp) {
    state.span = sp ? sp.id : null;
    syncUrl();
    if (detailsEl) detailsEl.remove();
    detailsEl = null;
    if (!sp) return;
    detailsEl = spanDetails(trace, sp, {
      onClose: () => timeline.select(null),
      onSelect: (p) => timeline.select(p, { scroll: true }),
    });
    body.querySelector('.tl-wrap').append(detailsEl);
  }

  function renderBody() {
    if (timeline) { timeline.destroy(); timeline = null; }
    detailsEl = null;
    clear(body);
    if (state.view === 'stats') {
      body.append(statsView(trace, state, (change) => {
        Object.assign(state, change);
        syncUrl();
        renderBody();
      }));
      return;
    }
    if (state.view === 'graph') {
      body.append(graphView(trace, (spanId) => {
        state.view = 'timeline';
        state.span = spanId;
        renderHead();
        renderBody();
      }));
      return;
    }
    const wrap = h('div', { class: 'tl-wrap' });
    body.append(wrap);
    timeline = new Timeline(trace, { onSelect: showDetails });
    wrap.prepend(timeline.el);
    if (critSegments && state.crit) timeline.setCriticalPath(critSegments);
    const sel = state.span && trace.byId.get(state.span);
    if (sel) timeline.select(sel, { scroll: true });
    performance.mark('shoji:first-render');
  }

  async function toggleCrit() {
    state.crit = !state.crit;
    syncUrl();
    renderHead();
    if (state.crit && !critSegments) {
      try {
        critSegments = await api.criticalPath(id);
      } catch (e) {
        state.crit = false;
        body.prepend(errorBox(e));
        renderHead();
        return;
      }
    }
    if (timeline) timeline.setCriticalPath(state.crit ? critSegments : null);
  }

  function onKey(e) {
    if (e.target.closest && e.target.closest('input, select, textarea')) return;
    // Enter and Space on a focused button or link belong to it, not to the tree.
    if ((e.key === 'Enter' || e.key === ' ') && e.target.closest && e.target.closest('button, a')) return;
    if (e.metaKey || e.ctrlKey || e.altKey) return;
    if (e.key === 'c') { toggleCrit(); e.preventDefault(); return; }
    if (e.key === 'Escape' && timeline) { timeline.select(null); e.preventDefault(); return; }
    if (timeline && timeline.key(e)) e.preventDefault();
  }
  document.addEventListener('keydown', onKey);

  const signature = (raw) => {
    let end = 0;
    for (const sp of raw.spans) end = Math.max(end, sp.startTime + sp.duration);
    return `${raw.spans.length}:${end}`;
  };

  async function poll() {
    timer = null;
    if (destroyed) return;
    try {
      const raw = await api.trace(id);
      if (destroyed) return;
      const sig = signature(raw);
      if (sig !== lastSignature) {
        lastSignature = sig;
        trace = buildTrace(raw);
        critSegments = null;
        if (state.crit) critSegments = await api.criticalPath(id).catch(() => null);
        renderHead();
        if (timeline) {
          timeline.setTrace(trace);
          if (critSegments && state.crit) timeline.setCriticalPath(critSegments);
        } else {
          renderBody();
        }
      }
    } catch {
      // A failed poll leaves the trace as it was; the next one tries again.
    }
    scheduleLive();
  }

  function scheduleLive() {
    // A root whose parent has not arrived means the trace is unfinished (a sandbox made by
    // `shoji create` ends its root only at delete), however long it has been idle.
    const unfinished = trace.roots.some((r) => r.parentId);
    const live = unfinished || Date.now() * 1000 - trace.end < LIVE_WINDOW_US;
    status.textContent = live ? `● live: updates every ${POLL_MS / 1000}s` : '';
    status.classList.toggle('on', live);
    if (live && !destroyed) timer = setTimeout(poll, POLL_MS);
  }

  (async () => {
    try {
      const raw = await api.trace(id);
      if (destroyed) return;
      lastSignature = signature(raw);
      trace = buildTrace(raw);
      document.title = `${trace.root ? trace.root.name : id} · Shoji`;
      if (state.crit) critSegments = await api.criticalPath(id).catch(() => null);
      renderHead();
      renderBody();
      // After the next frame has been painted: what the time-to-first-render benchmark reads.
      requestAnimationFrame(() => setTimeout(() => performance.mark('shoji:first-paint'), 0));
      scheduleLive();
    } catch (e) {
      clear(head).append(h('h1', {}, 'Trace not shown'), errorBox(e),
        h('p', {}, link('/search', {}, 'Search for traces')));
    }
  })();

  return {
    destroy() {
      destroyed = true;
      if (timer) clearTimeout(timer);
      if (timeline) timeline.destroy();
      document.removeEventListener('keydown', onKey);
    },
  };
}
