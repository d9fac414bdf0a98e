// The flame graph: every span a block at its place in time, children under their parent, one
// row per depth. A click zooms into a span's subtree; the trail above leads back out. Blocks
// narrower than a pixel are left out (and counted), so a 100,000-span trace stays a few
// thousand elements.

import { h, clear, fmtDuration, sourceClass } from './dom.js';

const ROW = 20;
const MAX_BLOCKS = 4000;

/** The spans of `sp`'s subtree: a run of the depth-first order. */
function subtree(trace, sp) {
  const out = [sp];
  for (let i = sp.index + 1; i < trace.spans.length && trace.spans[i].depth > sp.depth; i++) out.push(trace.spans[i]);
  return out;
}

export function flameView(trace, onPick) {
  const trail = h('div', { class: 'flame-trail' });
  const note = h('p', { class: 'muted flame-note' });
  const canvas = h('div', { class: 'flame' });
  const section = h('section', { class: 'flame-view' }, trail, note, canvas);
  let focus = null;

  function draw() {
    const spans = focus ? subtree(trace, focus) : trace.spans;
    const v0 = focus ? focus.start : trace.start;
    const range = Math.max(1, focus ? focus.subtreeEnd - focus.start : trace.span);
    const base = focus ? focus.depth : 0;
    const px = canvas.clientWidth || 1200;
    const blocks = [];
    let hidden = 0;
    let rows = 0;
    for (const sp of spans) {
      const width = sp.duration / range;
      if ((width * px < 1 && sp !== focus) || blocks.length >= MAX_BLOCKS) { hidden += 1; continue; }
      const row = sp.depth - base;
      rows = Math.max(rows, row + 1);
      blocks.push(h('div', {
        class: `flame-block ${sourceClass(sp.source)}${sp.error ? ' has-error' : ''}`,
        style: { left: `${((sp.start - v0) / range) * 100}%`, width: `${Math.max(width * 100, 0.1)}%`, top: `${row * ROW}px` },
        title: `${sp.service}: ${sp.name}\n${fmtDuration(sp.duration)}, self ${sp.selfTime === null ? 'unknown' : fmtDuration(sp.selfTime)}`,
        dataset: { index: sp.index },
      }, h('span', { class: 'flame-label' }, sp.name)));
    }
    canvas.style.height = `${Math.max(rows, 1) * ROW}px`;
    clear(canvas).append(...blocks);
    note.textContent = `${blocks.length} spans drawn${hidden ? `, ${hidden} too narrow to see at this zoom` : ''}; ` +
      'click a span to zoom into it.';
    const path = [];
    for (let p = focus; p; p = p.parent) path.unshift(p);
    // h() flattens the nested lists and drops the null; Element.append would print them.
    clear(trail).append(h('span', { class: 'flame-crumbs' },
      h('button', { class: 'flame-crumb', onclick: () => { focus = null; draw(); } }, 'whole trace'),
      path.map((p) => [' › ', h('button', { class: 'flame-crumb', onclick: () => { focus = p; draw(); } }, p.name)]),
      focus ? h('button', { class: 'flame-open', onclick: () => onPick(focus.id) }, 'Show in timeline') : null));
  }

  canvas.addEventListener('click', (e) => {
    const b = e.target.closest('.flame-block');
    if (!b) return;
    focus = trace.spans[Number(b.dataset.index)];
    draw();
  });
  // Drawn once attached, when the width is known.
  requestAnimationFrame(draw);
  draw();
  return section;
}
