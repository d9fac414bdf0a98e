// The trace timeline: a collapsible span tree beside a Gantt chart, with a minimap to zoom and
// a time axis. Rows are virtualised (only those in view exist in the DOM), so a 10,000-span
// trace opens and scrolls as fast as a 10-span one.

import { h, clear, fmtDuration, sourceClass } from './dom.js';

export const ROW_HEIGHT = 24;
const OVERSCAN = 12;

export class Timeline {
  /**
   * trace: from buildTrace. opts.onSelect(span|null) is told when the selection changes.
   */
  constructor(trace, opts) {
    this.opts = opts;
    this.abort = new AbortController();
    this.collapsed = new Set();
    this.selected = null;
    this.crit = null; // Map spanId -> [[startUs, endUs]] when the critical path is shown
    this.matches = null; // Set of spans found by the find box
    this.el = h('div', { class: 'timeline' });
    this.minimap = h('div', { class: 'minimap', title: 'drag to zoom, double-click to reset' });
    this.canvas = h('canvas', { class: 'minimap-canvas' });
    this.window = h('div', { class: 'minimap-window' });
    this.minimap.append(this.canvas, this.window);
    this.axis = h('div', { class: 'axis' });
    this.head = h('div', { class: 'tl-head' },
      h('div', { class: 'name-head' }, 'Service & operation'), this.axis);
    this.spacer = h('div', { class: 'spacer' });
    this.scroller = h('div', { class: 'rows', tabIndex: 0, role: 'tree', 'aria-label': 'span tree' },
      this.spacer);
    this.el.append(this.minimap, this.head, this.scroller);
    this.scroller.addEventListener('scroll', () => this.schedule());
    this.scroller.addEventListener('click', (e) => this.onClick(e));
    this.bindMinimap();
    this.resizeObserver = new ResizeObserver(() => { this.drawMinimap(); this.schedule(); });
    this.resizeObserver.observe(this.el);
    this.setTrace(trace);
  }

  /** Replaces the trace (live updates) keeping collapsed spans, selection and zoom. */
  setTrace(trace) {
    const wasFull = !this.trace || (this.viewStart === this.trace.start && this.viewEnd === this.trace.end);
    this.trace = trace;
    if (wasFull) [this.viewStart, this.viewEnd] = [trace.start, trace.end];
    if (this.selected) this.selected = trace.byId.get(this.selected.id) || null;
    this.relayout();
    this.drawMinimap();
  }

  destroy() {
    this.abort.abort();
    this.resizeObserver.disconnect();
  }

  relayout() {
    const vis = [];
    const spans = this.trace.spans;
    for (let i = 0; i < spans.length; i++) {
      const sp = spans[i];
      vis.push(sp);
      if (this.collapsed.has(sp.id)) {
        // Skip the subtree: in depth-first order it is the run of deeper spans that follows.
        while (i + 1 < spans.length && spans[i + 1].depth > sp.depth) i++;
      }
    }
    this.visible = vis;
    this.spacer.style.height = `${vis.length * ROW_HEIGHT}px`;
    this.drawAxis();
    this.render(true);
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.render(false);
    });
  }

  render(force) {
    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(this.visible.length, Math.ceil((top + height) / ROW_HEIGHT) + OVERSCAN);
    if (!force && first === this.first && last === this.last) return;
    [this.first, this.last] = [first, last];
    const rows = [];
    for (let i = first; i < last; i++) rows.push(this.row(this.visible[i], i));
    clear(this.spacer).append(...rows);
  }

  row(sp, i) {
    const range = Math.max(1, this.viewEnd - this.viewStart);
    const left = ((sp.start - this.viewStart) / range) * 100;
    const width = Math.max((sp.duration / range) * 100, 0.05);
    const hasKids = sp.children.length > 0;
    const open = !this.collapsed.has(sp.id);
    const onCrit = this.crit && this.crit.has(sp.id);
    const cls = ['row', sourceClass(sp.source),
      sp === this.selected && 'selected', onCrit && 'on-crit', sp.error && 'has-error',
      this.matches && (this.matches.has(sp) ? 'match' : 'no-match')]
      .filter(Boolean).join(' ');
    const bar = h('div', { class: 'bar', style: { left: `${left}%`, width: `${width}%` } });
    const segs = onCrit ? this.crit.get(sp.id).map(([a, b]) => h('div', {
      class: 'crit-seg',
      style: { left: `${((a - this.viewStart) / range) * 100}%`, width: `${Math.max(((b - a) / range) * 100, 0.05)}%` },
    })) : [];
    const labelLeft = left + width > 70;
    return h('div', {
      class: cls,
      role: 'treeitem',
      'aria-level': sp.depth + 1,
      'aria-expanded': hasKids ? String(open) : undefined,
      'aria-selected': String(sp === this.selected),
      dataset: { spanId: sp.id, index: sp.index },
      style: { top: `${i * ROW_HEIGHT}px` },
    },
    h('div', { class: 'name-cell', style: { paddingLeft: `${6 + Math.min(sp.depth, 40) * 14}px` }, title: `${sp.service}: ${sp.name}` },
      hasKids
        ? h('button', { class: 'toggle', tabIndex: -1, 'aria-label': open ? 'collapse' : 'expand', dataset: { toggle: '1' } }, open ? '▾' : '▸')
        : h('span', { class: 'toggle-space' }),
      h('span', { class: 'svc-dot' }),
      h('span', { class: 'op' }, sp.name),
      h('span', { class: 'svc' }, sp.service),
      sp.error ? h('span', { class: 'err-mark', title: 'error' }, '!') : null),
    h('div', { class: 'bar-cell' }, bar, ...segs,
      h('span', {
        class: 'bar-label',
        style: labelLeft ? { right: `${100 - left + 0.5}%` } : { left: `${left + width + 0.5}%` },
      }, fmtDuration(sp.duration))));
  }

  onClick(e) {
    const row = e.target.closest('.row');
    if (!row) return;
    const sp = this.trace.spans[Number(row.dataset.index)];
    if (e.target.closest('[data-toggle]')) this.toggle(sp);
    else this.select(sp);
  }

  toggle(sp, open) {
    if (!sp || !sp.children.length) return;
    const isOpen = !this.collapsed.has(sp.id);
    const want = open === undefined ? !isOpen : open;
    if (want === isOpen) return;
    if (want) this.collapsed.delete(sp.id); else this.collapsed.add(sp.id);
    this.relayout();
  }

  setAllCollapsed(collapsed) {
    this.collapsed = new Set(collapsed
      ? this.trace.spans.filter((x) => x.children.length && x.depth > 0).map((x) => x.id) : []);
    this.relayout();
  }

  select(sp, { scroll = false } = {}) {
    this.selected = sp || null;
    if (sp && scroll) {
      for (let p = sp.parent; p; p = p.parent) this.collapsed.delete(p.id);
      this.relayout();
      this.scrollTo(sp);
    } else {
      this.render(true);
    }
    this.opts.onSelect(this.selected);
  }

  scrollTo(sp) {
    const i = this.visible.indexOf(sp);
    if (i < 0) return;
    const top = i * ROW_HEIGHT;
    const sc = this.scroller;
    if (top < sc.scrollTop) sc.scrollTop = top;
    else if (top + ROW_HEIGHT > sc.scrollTop + sc.clientHeight) sc.scrollTop = top + ROW_HEIGHT - sc.clientHeight;
    this.render(true);
  }

  /** Keyboard: up/down (j/k) move, left/right (h/l) collapse/expand or go to parent/child. */
  key(e) {
    const vis = this.visible;
    const cur = this.selected ? vis.indexOf(this.selected) : -1;
    const go = (i) => this.select(vis[Math.max(0, Math.min(vis.length - 1, i))], { scroll: true });
    switch (e.key) {
      case 'ArrowDown': case 'j': go(cur + 1); break;
      case 'ArrowUp': case 'k': go(cur < 0 ? 0 : cur - 1); break;
      case 'Home': go(0); break;
      case 'End': go(vis.length - 1); break;
      case 'PageDown': go(cur + Math.floor(this.scroller.clientHeight / ROW_HEIGHT)); break;
      case 'PageUp': go(cur - Math.floor(this.scroller.clientHeight / ROW_HEIGHT)); break;
      case 'ArrowRight': case 'l': {
        const sp = this.selected;
        if (!sp) { go(0); break; }
        if (sp.children.length && this.collapsed.has(sp.id)) this.toggle(sp, true);
        else if (sp.children.length) this.select(sp.children[0], { scroll: true });
        break;
      }
      case 'ArrowLeft': case 'h': {
        const sp = this.selected;
        if (!sp) break;
        if (sp.children.length && !this.collapsed.has(sp.id)) this.toggle(sp, false);
        else if (sp.parent) this.select(sp.parent, { scroll: true });
        break;
      }
      case 'Enter': case ' ':
        if (this.selected) this.toggle(this.selected);
        break;
      default: return false;
    }
    return true;
  }

  /** Highlights the spans in `set` (and dims the rest); null for no find. */
  setMatches(set) {
    this.matches = set;
    this.render(true);
  }

  setCriticalPath(segments) {
    if (!segments) {
      this.crit = null;
    } else {
      this.crit = new Map();
      for (const seg of segments) {
        const list = this.crit.get(seg.span_id) || [];
        list.push([seg.start_ns / 1000, seg.end_ns / 1000]);
        this.crit.set(seg.span_id, list);
      }
    }
    this.render(true);
    this.drawMinimap();
  }

  zoom(start, end) {
    this.viewStart = Math.max(this.trace.start, Math.min(start, end));
    this.viewEnd = Math.min(this.trace.end, Math.max(start, end));
    if (this.viewEnd - this.viewStart < 1) [this.viewStart, this.viewEnd] = [this.trace.start, this.trace.end];
    this.drawAxis();
    this.render(true);
    this.placeWindow();
  }

  drawAxis() {
    const range = this.viewEnd - this.viewStart;
    const ticks = [];
    for (let k = 0; k <= 4; k++) {
      const frac = k / 4;
      ticks.push(h('span', { class: 'tick', style: { left: `${frac * 100}%` } },
        fmtDuration(this.viewStart - this.trace.start + frac * range)));
    }
    clear(this.axis).append(...ticks);
  }

  drawMinimap() {
    const c = this.canvas;
    const w = this.minimap.clientWidth || 800;
    const hgt = 48;
    const dpr = window.devicePixelRatio || 1;
    c.width = w * dpr;
    c.height = hgt * dpr;
    c.style.width = `${w}px`;
    c.style.height = `${hgt}px`;
    const g = c.getContext('2d');
    g.scale(dpr, dpr);
    g.clearRect(0, 0, w, hgt);
    const t = this.trace;
    const range = t.span;
    const n = t.spans.length;
    const style = getComputedStyle(this.el);
    const kinds = ['runtime', 'hypervisor', 'agent', 'other'];
    const colours = kinds.map((src) => style.getPropertyValue(`--src-${src}`).trim() || '#888');
    colours.push('#111'); // the critical path
    // Coverage per canvas row, colour and pixel, as difference arrays: drawing is then a few
    // thousand rectangles whatever the span count (100,000 fillRect calls took 300 ms).
    const rows = Math.min(hgt, Math.max(n, 1));
    const cover = Array.from({ length: rows * colours.length }, () => new Int32Array(w + 1));
    for (let i = 0; i < n; i++) {
      const sp = t.spans[i];
      let k = kinds.indexOf(sp.source);
      if (k < 0) k = 3;
      if (this.crit && this.crit.has(sp.id)) k = 4;
      const x0 = Math.max(0, Math.min(w - 1, Math.floor(((sp.start - t.start) / range) * w)));
      const x1 = Math.max(x0 + 1, Math.min(w, Math.ceil(((sp.end - t.start) / range) * w)));
      const d = cover[Math.floor((i / n) * rows) * colours.length + k];
      d[x0] += 1;
      d[x1] -= 1;
    }
    const rowH = hgt / rows;
    for (let r = 0; r < rows; r++) {
      for (let k = 0; k < colours.length; k++) {
        const d = cover[r * colours.length + k];
        g.fillStyle = colours[k];
        let acc = 0;
        let runStart = -1;
        for (let x = 0; x <= w; x++) {
          acc += x < w ? d[x] : 0;
          const on = x < w && acc > 0;
          if (on && runStart < 0) runStart = x;
          if (!on && runStart >= 0) {
            g.fillRect(runStart, r * rowH, x - runStart, Math.max(rowH, 1));
            runStart = -1;
          }
        }
      }
    }
    this.placeWindow();
  }

  placeWindow() {
    const t = this.trace;
    const range = t.span;
    const zoomed = this.viewStart > t.start || this.viewEnd < t.end;
    this.window.hidden = !zoomed;
    this.window.style.left = `${((this.viewStart - t.start) / range) * 100}%`;
    this.window.style.width = `${((this.viewEnd - this.viewStart) / range) * 100}%`;
    this.el.classList.toggle('zoomed', zoomed);
  }

  bindMinimap() {
    let x0 = null;
    const at = (e) => {
      const r = this.minimap.getBoundingClientRect();
      const f = Math.max(0, Math.min(1, (e.clientX - r.left) / r.width));
      return this.trace.start + f * this.trace.span;
    };
    this.minimap.addEventListener('mousedown', (e) => { x0 = at(e); e.preventDefault(); });
    window.addEventListener('mousemove', (e) => {
      if (x0 === null) return;
      const x1 = at(e);
      const t = this.trace;
      this.window.hidden = false;
      this.window.style.left = `${((Math.min(x0, x1) - t.start) / t.span) * 100}%`;
      this.window.style.width = `${(Math.abs(x1 - x0) / t.span) * 100}%`;
    }, { signal: this.abort.signal });
    window.addEventListener('mouseup', (e) => {
      if (x0 === null) return;
      const x1 = at(e);
      const a = x0;
      x0 = null;
      if (Math.abs(x1 - a) > this.trace.span / 500) this.zoom(a, x1); else this.placeWindow();
    }, { signal: this.abort.signal });
    this.minimap.addEventListener('dblclick', () => this.zoom(this.trace.start, this.trace.end));
  }
}
