// The graph view: the span tree drawn as a tree of operations, spans on the same path from the
// root merged into one node with a count, left to right.

import { h, s, fmtDuration, sourceClass } from './dom.js';
import { operationGraph } from './model.js';

const W = 230;
const H = 44;
const GAP_X = 50;
const GAP_Y = 12;

function shorten(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export function graphView(trace, onPick) {
  const nodes = operationGraph(trace);
  // Leaves take the next row; a parent sits level with its first child. Iterative, post-order.
  let row = 0;
  const stack = nodes.filter((n) => !n.parent).reverse().map((n) => [n, false]);
  while (stack.length) {
    const [n, done] = stack.pop();
    n.depth = n.parent ? n.parent.depth + 1 : 0;
    if (done || !n.children.length) {
      n.row = n.children.length ? n.children[0].row : row++;
      continue;
    }
    stack.push([n, true]);
    for (let i = n.children.length - 1; i >= 0; i--) stack.push([n.children[i], false]);
  }
  const maxDepth = Math.max(0, ...nodes.map((n) => n.depth));
  const width = (maxDepth + 1) * (W + GAP_X) + 20;
  const height = row * (H + GAP_Y) + 20;
  const x = (n) => 10 + n.depth * (W + GAP_X);
  const y = (n) => 10 + n.row * (H + GAP_Y);
  const edges = nodes.filter((n) => n.parent).map((n) => {
    const [x1, y1] = [x(n.parent) + W, y(n.parent) + H / 2];
    const [x2, y2] = [x(n), y(n) + H / 2];
    const mx = (x1 + x2) / 2;
    return s('path', { class: 'edge', d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` });
  });
  const boxes = nodes.map((n) => s('g', {
    class: `node ${sourceClass(n.source)}`,
    transform: `translate(${x(n)},${y(n)})`,
    dataset: { spanId: n.firstSpan },
    onclick: () => onPick(n.firstSpan),
  },
  s('title', {}, `${n.service}: ${n.name}\n${n.count} span(s), total ${fmtDuration(n.total)}, self ${fmtDuration(n.self)}`),
  s('rect', { width: W, height: H, rx: 5 }),
  s('text', { x: 8, y: 17, class: 'node-name' }, shorten(n.name, 30)),
  s('text', { x: 8, y: 35, class: 'node-meta' },
    `${n.count > 1 ? `${n.count}× ` : ''}${fmtDuration(n.total)} · self ${fmtDuration(n.self)}`)));
  return h('section', { class: 'graph' },
    h('p', { class: 'muted' }, `${nodes.length} operations from ${trace.spans.length} spans; click a node to see its first span in the timeline.`),
    h('div', { class: 'graph-scroll' },
      s('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'operation graph' },
        ...edges, ...boxes)));
}
