// model.js without a browser: the tree (cycles, links, orphans), zero-length traces, groupings
// and the live rule. Run by scripts/test.sh: node --test crates/shoji-viewer/tests/unit/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildTrace, groupStats, operationGraph, isLive, LIVE_WINDOW_US, normTraceId } from '../../assets/model.js';

const TID = '0af7651916cd43dd8448eb211c80319c';

/** A Jaeger span: [id, parent|null, start µs, duration µs, extra fields]. */
function span(id, parent, start, duration, extra = {}) {
  return {
    traceID: TID,
    spanID: id,
    operationName: `op-${id}`,
    references: parent ? [{ refType: 'CHILD_OF', traceID: TID, spanID: parent }] : [],
    startTime: start,
    duration,
    tags: [],
    processID: 'p1',
    ...extra,
  };
}

const trace = (spans) => buildTrace({ traceID: TID, spans, processes: { p1: { serviceName: 'svc', tags: [{ key: 'source', value: 'runtime' }] } } });
const ids = (t) => t.spans.map((s) => s.id);

test('children follow their parent in start order, depth-first', () => {
  const t = trace([span('c2', 'r', 20, 5), span('r', null, 0, 100), span('c1', 'r', 10, 5), span('g', 'c1', 11, 1)]);
  assert.deepEqual(ids(t), ['r', 'c1', 'g', 'c2']);
  assert.deepEqual(t.spans.map((s) => s.depth), [0, 1, 2, 1]);
  assert.equal(t.root.id, 'r');
  assert.equal(t.duration, 100);
  assert.equal(t.spans[0].source, 'runtime', 'the process tag gives the source');
});

// Regression (issue 15): spans in a parent cycle vanished from the viewer while
// `shoji trace show` listed them. Same fixture as shoji-trace's model test.
test('a parent cycle loses no span: the CLI\'s recovery, the earliest span of the cycle becomes a root', () => {
  const t = trace([span('1', null, 0, 10), span('2', '3', 1, 10), span('3', '2', 2, 10), span('4', '4', 3, 10)]);
  assert.deepEqual([...ids(t)].sort(), ['1', '2', '3', '4']);
  assert.equal(new Set(ids(t)).size, 4, 'each span once');
  const roots = t.roots.map((r) => r.id);
  // Roots from parents first (1, and 4 whose parent is itself), then the recovered 2 with 3 under it.
  assert.deepEqual(roots, ['1', '4', '2']);
  assert.equal(t.byId.get('3').parent.id, '2');
  assert.equal(t.byId.get('2').parent, null);
  assert.deepEqual(t.spans.map((s) => s.index), [0, 1, 2, 3]);
});

test('a long cycle and a long chain neither loop nor overflow the stack', () => {
  const n = 20000;
  const chain = [span('0', String(n - 1), 0, n)];
  for (let i = 1; i < n; i++) chain.push(span(String(i), String(i - 1), i, n - i));
  const t = trace(chain);
  assert.equal(t.spans.length, n);
  assert.equal(t.roots.length, 1);
  assert.equal(t.roots[0].id, '0');
  assert.equal(t.maxDepth, n - 1);
});

test('a span whose parent has not arrived is a root that remembers its parent id', () => {
  const t = trace([span('a', 'missing', 0, 10)]);
  assert.equal(t.roots[0].parentId, 'missing');
  assert.equal(t.roots[0].parent, null);
});

// Regression (issue 15): a trace of zero length divided by zero.
test('a zero-length trace has a finite span to draw against', () => {
  const t = trace([span('r', null, 5, 0), span('c', 'r', 5, 0)]);
  assert.equal(t.duration, 0);
  assert.equal(t.span, 1);
  const g = groupStats(t, 'operation');
  assert.ok(g.every((x) => Number.isFinite(x.avg)));
  const empty = buildTrace({ traceID: TID, spans: [] });
  assert.deepEqual([empty.start, empty.end, empty.duration, empty.span], [0, 0, 0, 1]);
  assert.equal(empty.root, null);
});

test('references other than the parent are links, local or to another trace', () => {
  const other = 'ffffffffffffffffffffffffffffffff';
  const t = trace([
    span('r', null, 0, 100),
    span('a', null, 10, 5, {
      references: [
        { refType: 'FOLLOWS_FROM', traceID: TID, spanID: 'r' },
        { refType: 'CHILD_OF', traceID: other, spanID: '00000000000000aa' },
        { refType: 'CHILD_OF', traceID: TID, spanID: 'r' },
      ],
    }),
  ]);
  const a = t.byId.get('a');
  assert.equal(a.parent.id, 'r', 'the CHILD_OF within the trace is the parent, wherever it is listed');
  assert.deepEqual(a.links, [
    { type: 'FOLLOWS_FROM', traceId: TID, spanId: 'r', local: true },
    { type: 'CHILD_OF', traceId: other, spanId: '00000000000000aa', local: false },
  ]);
  assert.equal(normTraceId('00000000000000AB'), '000000000000000000000000000000ab', '64-bit ids zero-extend');
});

test('self time comes from the server and is summed per group; without it, it is unknown', () => {
  const t = trace([span('r', null, 0, 100, { selfTime: 60 }), span('c', 'r', 10, 40, { selfTime: 40 })]);
  assert.equal(t.hasSelfTime, true);
  const byOp = Object.fromEntries(groupStats(t, 'service').map((g) => [g.key, g]));
  assert.equal(byOp.svc.self, 100);
  assert.equal(byOp.svc.total, 140);
  const nodes = operationGraph(t);
  assert.deepEqual(nodes.map((n) => [n.name, n.self]), [['op-r', 60], ['op-c', 40]]);
  const bare = trace([span('r', null, 0, 100)]);
  assert.equal(bare.hasSelfTime, false);
  assert.equal(bare.spans[0].selfTime, null);
});

test('live: while a parent is missing, or shortly after the newest span ended', () => {
  const now = 1_000_000_000_000;
  const done = trace([span('r', null, now - 120e6, 1e6)]);
  assert.equal(isLive(done, now), false, 'complete and quiet for two minutes');
  const recent = trace([span('r', null, now - 2e6, 1e6)]);
  assert.equal(isLive(recent, now), true);
  assert.equal(isLive(recent, now + LIVE_WINDOW_US), false);
  const waiting = trace([span('c', 'root-to-come', now - 3600e6, 1e6)]);
  assert.equal(isLive(waiting, now), true, 'an unfinished sandbox stays live however old');
});

test('the compact form builds the same tree as the Jaeger form', async () => {
  const { buildTraceCompact } = await import('../../assets/model.js');
  const other = 'ffffffffffffffffffffffffffffffff';
  const doc = {
    traceID: TID,
    spanCount: 3,
    values: ['run', 'source', 'agent', 'vm.start', 'error', true, 'n', 2],
    processes: [{ serviceName: 'svc', tags: [{ key: 'source', value: 'runtime' }] }],
    spanIds: 'aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbcccccccccccccccc',
    parent: [-1, 0, 0],
    missingParents: {},
    startBase: 1_000,
    start: [0, 10, 20],
    duration: [100, 5, 0],
    selfTime: [95, 5, 0],
    name: [0, 3, 3],
    process: [0, 0, 0],
    tags: [1, 2, 6, 7, 4, 5],
    tagStart: [0, 0, 4, 6],
    links: { 2: [{ refType: 'CHILD_OF', traceID: TID, spanID: 'bbbbbbbbbbbbbbbb' }, { refType: 'FOLLOWS_FROM', traceID: other, spanID: 'dddddddddddddddd' }] },
    logs: { 1: [{ timestamp: 1_012, fields: [{ key: 'event', value: 'x' }] }] },
    warnings: {},
  };
  const t = buildTraceCompact(doc);
  assert.deepEqual(ids(t), ['aaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbb', 'cccccccccccccccc']);
  const [run, b, c] = t.spans;
  assert.equal(run.start, 1_000);
  assert.equal(run.source, 'runtime', 'from the process');
  assert.equal(b.source, 'agent', 'a span tag wins');
  assert.deepEqual(b.attrs, { source: 'agent', n: 2 });
  assert.deepEqual(b.tags, [{ key: 'source', value: 'agent' }, { key: 'n', value: 2 }]);
  assert.equal(c.error, true);
  assert.equal(c.parent, run);
  assert.equal(run.selfTime, 95);
  assert.equal(t.hasSelfTime, true);
  assert.deepEqual(c.links, [
    { type: 'CHILD_OF', traceId: TID, spanId: 'bbbbbbbbbbbbbbbb', local: true },
    { type: 'FOLLOWS_FROM', traceId: other, spanId: 'dddddddddddddddd', local: false },
  ], 'a CHILD_OF link to a span other than the parent stays a link');
  assert.equal(b.logs.length, 1);
  assert.equal(t.errors, 1);
});
