// find.js without a browser: the find box's query language.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseQuery, parseDuration, findSpans } from '../../assets/find.js';
import { buildTrace } from '../../assets/model.js';

const TID = '00000000000000000000000000000001';
const t = buildTrace({
  traceID: TID,
  processes: { p1: { serviceName: 'shoji-runtime', tags: [{ key: 'host', value: 'box' }] } },
  spans: [
    { spanID: 'a', operationName: 'run', startTime: 0, duration: 50_000, tags: [{ key: 'source', value: 'runtime' }], processID: 'p1' },
    { spanID: 'b', operationName: 'vm.start', startTime: 10, duration: 20_000, references: [{ refType: 'CHILD_OF', spanID: 'a' }], tags: [{ key: 'sandbox_id', value: 'sb-1' }, { key: 'cpus', value: 2 }], processID: 'p1' },
    { spanID: 'c', operationName: 'guest.boot', startTime: 20, duration: 5_000, references: [{ refType: 'CHILD_OF', spanID: 'b' }], tags: [], logs: [{ timestamp: 30, fields: [{ key: 'message', value: 'Kernel Panic averted' }] }], processID: 'p1' },
  ],
});
const found = (q) => findSpans(t, parseQuery(q).terms).map((s) => s.id);

test('durations in every unit', () => {
  assert.equal(parseDuration('10ms'), 10_000);
  assert.equal(parseDuration('1.5s'), 1_500_000);
  assert.equal(parseDuration('250us'), 250);
  assert.equal(parseDuration('250µs'), 250);
  assert.equal(parseDuration('2m'), 120e6);
  assert.equal(parseDuration('10 parsecs'), null);
});

test('text matches names, attribute values and event fields, case-insensitively', () => {
  assert.deepEqual(found('VM.'), ['b']);
  assert.deepEqual(found('sb-1'), ['b']);
  assert.deepEqual(found('panic'), ['c']);
  assert.deepEqual(found('"kernel panic"'), ['c']);
  assert.deepEqual(found('nothing-like-this'), []);
  assert.deepEqual(found(''), [], 'an empty query finds nothing');
});

test('key=value matches span attributes, process tags and the service, as text', () => {
  assert.deepEqual(found('sandbox_id=sb-1'), ['b']);
  assert.deepEqual(found('cpus=2'), ['b'], 'numbers compare as their text');
  assert.deepEqual(found('host=box'), ['a', 'b', 'c']);
  assert.deepEqual(found('service=shoji-runtime source=runtime'), ['a']);
  assert.deepEqual(found('sandbox_id=sb'), [], 'exact, not a prefix');
});

test('duration filters combine with the other words', () => {
  assert.deepEqual(found('>10ms'), ['a', 'b']);
  assert.deepEqual(found('>=20ms <50ms'), ['b']);
  assert.deepEqual(found('<=5ms'), ['c']);
  assert.deepEqual(found('>10ms vm'), ['b']);
});

test('a malformed filter is reported, not silently dropped', () => {
  const q = parseQuery('>10 parsecs');
  assert.match(q.error, /duration filter/);
});
