// The trace page, /trace/<id>: header, timeline with details, statistics, graph, flame graph,
// critical path, find, keyboard navigation, and live updates while the trace can still change.

import { h, clear, fmtDuration, fmtTime, legend, link, errorBox } from './dom.js';
import { api } from './api.js';
import { buildTraceCompact, isLive } from './model.js';
import { Timeline } from './timeline.js';
import { spanDetails } from './details.js';
import { statsView } from './stats.js';
import { graphView } from './graph.js';
import { flameView } from './flame.js';
import { FindBar } from './findbar.js';

const POLL_MS = 2000;

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
    find: params.get('find') || '',
  };
  const find = new FindBar(state.find, {
    onChange: (text) => { state.find = text; syncUrl(); },
    onGo: (sp) => {
      if (state.view !== 'timeline') { state.view = 'timeline'; renderHead(); renderBody(); }
      timeline.select(sp, { scroll: true });
    },
    onMatches: (set) => { if (timeline) timeline.setMatches(set); },
  });

  const head = h('header', { class: 'trace-head' });
  const body = h('div', { class: 'trace-body' });
  const status = h('span', { class: 'live', role: 'status' });
  clear(root).append(head, find.el, body);
  head.append(h('p', { class: 'muted' }, `loading trace ${id}…`));

  function syncUrl() {
    const q = new URLSearchParams();
    if (state.view !== 'timeline') q.set('view', state.view);
    if (state.span) q.set('span', state.span);
    if (state.view === 'stats') { q.set('group', state.group); q.set('sort', state.sort); }
    if (state.crit) q.set('crit', '1');
    if (state.find) q.set('find', state.find);
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
        [['Trace ID', t.id], ['Started', fmtTime(t.start, { zone: true })], ['Duration', fmtDuration(t.duration)],
        ['Spans', String(t.spans.length)], ['Depth', String(t.maxDepth + 1)],
        ['Services', t.services.join(', ')], ['Errors', String(t.errors)]]
          .map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', { class: `meta-${k.toLowerCase().replace(' ', '-')}` }, v)))),
      h('div', { class: 'toolbar' },
        tab('timeline', 'Timeline'), tab('stats', 'Statistics'), tab('graph', 'Graph'), tab('flame', 'Flame graph'),
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
      // A link to another trace opens it at the linked span.
      onOtherTrace: (traceId, spanId) => nav(`/trace/${encodeURIComponent(traceId)}?span=${encodeURIComponent(spanId)}`),
    });
    body.querySelector('.tl-wrap').append(detailsEl);
  }

  function renderBody() {
    if (destroyed) return;
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
    const toTimeline = (spanId) => {
      state.view = 'timeline';
      state.span = spanId;
      renderHead();
      renderBody();
    };
    if (state.view === 'graph') {
      body.append(graphView(trace, toTimeline));
      return;
    }
    if (state.view === 'flame') {
      body.append(flameView(trace, toTimeline));
      return;
    }
    const wrap = h('div', { class: 'tl-wrap' });
    body.append(wrap);
    timeline = new Timeline(trace, { onSelect: showDetails });
    wrap.prepend(timeline.el);
    if (critSegments && state.crit) timeline.setCriticalPath(critSegments);
    timeline.setMatches(find.matchSet());
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
        if (destroyed) return;
      } catch (e) {
        if (destroyed) return;
        state.crit = false;
        body.prepend(errorBox(e));
        renderHead();
        return;
      }
    }
    if (timeline) timeline.setCriticalPath(state.crit ? critSegments : null);
  }

  function onKey(e) {
    if (e.key === '/' && !(e.target.closest && e.target.closest('input, select, textarea'))) { find.focus(); e.preventDefault(); return; }
    if (e.target.closest && e.target.closest('input, select, textarea')) return;
    // Enter and Space on a focused button or link belong to it, not to the tree.
    if ((e.key === 'Enter' || e.key === ' ') && e.target.closest && e.target.closest('button, a')) return;
    if (e.metaKey || e.ctrlKey || e.altKey) return;
    if (e.key === 'c') { toggleCrit(); e.preventDefault(); return; }
    if (e.key === 'n' || e.key === 'N') { find.step(e.key === 'n' ? 1 : -1); e.preventDefault(); return; }
    if (e.key === 'Escape' && timeline) { timeline.select(null); e.preventDefault(); return; }
    if (timeline && timeline.key(e)) e.preventDefault();
  }
  document.addEventListener('keydown', onKey);

  const signature = (t) => `${t.spans.length}:${t.end}:${t.roots.length}`;

  // Every await is followed by a check: a page left meanwhile must build nothing (a timeline
  // built then would keep its window listeners and observers for the life of the tab).
  async function load() {
    const doc = await api.viewerTrace(id);
    if (destroyed) return null;
    const t = buildTraceCompact(doc);
    let crit = null;
    if (state.crit) {
      crit = await api.criticalPath(id).catch(() => null);
      if (destroyed) return null;
    }
    return [t, crit];
  }

  async function poll() {
    timer = null;
    if (destroyed) return;
    try {
      const got = await load();
      if (!got) return;
      const [t, crit] = got;
      const sig = signature(t);
      if (sig !== lastSignature) {
        lastSignature = sig;
        trace = t;
        critSegments = crit;
        find.setTrace(trace);
        renderHead();
        if (timeline) {
          timeline.setTrace(trace);
          if (critSegments && state.crit) timeline.setCriticalPath(critSegments);
          timeline.setMatches(find.matchSet());
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
    if (destroyed) return;
    const live = isLive(trace, Date.now() * 1000);
    status.textContent = live ? `● live: updates every ${POLL_MS / 1000}s` : '';
    status.title = live
      ? 'still receiving: a span\'s parent has not arrived, or the newest span ended under 30 s ago'
      : '';
    status.classList.toggle('on', live);
    if (live) timer = setTimeout(poll, POLL_MS);
  }

  (async () => {
    try {
      const got = await load();
      if (!got) return;
      [trace, critSegments] = got;
      lastSignature = signature(trace);
      document.title = `${trace.root ? trace.root.name : id} · Shoji`;
      find.setTrace(trace);
      renderHead();
      renderBody();
      // After the next frame has been painted: what the time-to-first-render benchmark reads.
      requestAnimationFrame(() => setTimeout(() => performance.mark('shoji:first-paint'), 0));
      scheduleLive();
    } catch (e) {
      if (destroyed) return;
      clear(head).append(h('h1', {}, 'Trace not shown'), errorBox(e),
        h('p', {}, link('/search', {}, 'Search for traces')));
    }
  })();

  return {
    destroy() {
      destroyed = true;
      if (timer) clearTimeout(timer);
      find.destroy();
      if (timeline) timeline.destroy();
      document.removeEventListener('keydown', onKey);
    },
  };
}
