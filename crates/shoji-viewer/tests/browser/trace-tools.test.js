// The trace page's tools and the regressions of issue 15, in a real browser against a real
// `shoji trace serve`, with synthetic traces sent over OTLP/HTTP (no VM needed): find, span
// links, the flame graph, the system architecture page, the live badge, self time as the CLI
// computes it, time zones; spans in a parent cycle, a page left while loading, a trace of zero
// length.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  here, tempDataDir, startServer, launchBrowser, newPage, shutdown, postOtlp, otlpRequest, traceIdHex, spanIdHex, bigTrace,
} from './harness.js';

const shots = join(here, 'screenshots');
let dataDir;
let server;
let browser;
let page;
const pageErrors = [];
const hourAgo = () => (Date.now() - 3_600_000) * 1e6;

const FIND = 0xf1d;
const findSpans = bigTrace(FIND, 2000, 3_600_000);
const CYCLE = 0xc1c;
const ZERO = 0x2e0;
const LINKED = 0x11a;
const TARGET = 0x7a6;
const DEPS = 0xde9;
const DONE = 0xd0e;

before(async () => {
  dataDir = tempDataDir();
  server = await startServer(dataDir);
  const t0 = hourAgo();
  await postOtlp(server.otlpHttp, otlpRequest(FIND, 'finder', findSpans));
  await postOtlp(server.otlpHttp, otlpRequest(CYCLE, 'cyclic', [
    { id: 1, name: 'root', startNs: t0, endNs: t0 + 10e6 },
    { id: 2, parent: 3, name: 'loop-a', startNs: t0 + 1e6, endNs: t0 + 5e6 },
    { id: 3, parent: 2, name: 'loop-b', startNs: t0 + 2e6, endNs: t0 + 4e6 },
  ]));
  await postOtlp(server.otlpHttp, otlpRequest(ZERO, 'instant', [
    { id: 1, name: 'instant', startNs: t0, endNs: t0 },
    { id: 2, parent: 1, name: 'also-instant', startNs: t0, endNs: t0 },
  ]));
  await postOtlp(server.otlpHttp, otlpRequest(TARGET, 'producer', [
    { id: 1, name: 'enqueue', startNs: t0, endNs: t0 + 3e6 },
    { id: 2, parent: 1, name: 'send', startNs: t0 + 1e6, endNs: t0 + 2e6 },
  ]));
  await postOtlp(server.otlpHttp, otlpRequest(LINKED, 'consumer', [
    { id: 1, name: 'batch', startNs: t0 + 5e6, endNs: t0 + 9e6 },
    { id: 2, parent: 1, name: 'first', startNs: t0 + 5e6, endNs: t0 + 6e6 },
    { id: 3, parent: 1, name: 'process', startNs: t0 + 6e6, endNs: t0 + 8e6, links: [{ trace: LINKED, span: 2 }, { trace: TARGET, span: 2 }] },
  ]));
  // Three services calling down a chain: frontend -> api -> db (db twice). Nanosecond times
  // beyond 2^53 are not exact as JS numbers, so these are BigInts: the self times asserted
  // below must come out whole.
  const ms = (k) => BigInt(t0) + BigInt(k) * 1_000_000n;
  await postOtlp(server.otlpHttp, otlpRequest(DEPS, 'frontend', [{ id: 1, name: 'GET /', startNs: ms(0), endNs: ms(9) }]));
  await postOtlp(server.otlpHttp, otlpRequest(DEPS, 'api', [{ id: 2, parent: 1, name: 'handle', startNs: ms(1), endNs: ms(8) }]));
  await postOtlp(server.otlpHttp, otlpRequest(DEPS, 'db', [
    { id: 3, parent: 2, name: 'query', startNs: ms(2), endNs: ms(3) },
    { id: 4, parent: 2, name: 'query', startNs: ms(4), endNs: ms(5) },
  ]));
  const twoMinAgo = (Date.now() - 120_000) * 1e6;
  await postOtlp(server.otlpHttp, otlpRequest(DONE, 'finished', [
    { id: 1, name: 'run', startNs: twoMinAgo - 1e9, endNs: twoMinAgo, attrs: { source: 'runtime' } },
    { id: 2, parent: 1, name: 'work', startNs: twoMinAgo - 9e8, endNs: twoMinAgo - 1e8, attrs: { source: 'agent' } },
  ]));
  browser = await launchBrowser();
  page = await newPage(browser, pageErrors);
});

after(() => shutdown({ browser, server, dataDir }));

const url = (path) => `${server.base}${path}`;

test('find: text, key=value and duration filters, highlighted, stepped with Enter and n/N', async () => {
  // bigTrace: op spans (150µs) carry subsystem sub-(k%4); sandbox spans do not.
  const want = findSpans.filter((s) => s.attrs.subsystem === 'sub-2').length;
  assert.ok(want > 10);
  await page.goto(url(`/trace/${traceIdHex(FIND)}`));
  await page.waitForSelector('.rows .row');
  await page.keyboard.press('/');
  assert.equal(await page.evaluate(() => document.activeElement.className), 'find-input', '/ focuses the find box');
  await page.keyboard.type('subsystem=sub-2 >100us');
  await page.waitForFunction((n) => document.querySelector('.find-count').textContent === `${n} matches`, want);
  assert.ok(await page.locator('.rows .row.match').count() > 0, 'matches in view are highlighted');
  assert.ok(await page.locator('.rows .row.no-match').count() > 0, 'the rest is dimmed');
  await page.keyboard.press('Enter');
  assert.equal(await page.textContent('.find-count'), `1 of ${want}`);
  assert.equal(await page.getAttribute('.row.selected', 'class').then((c) => c.includes('match')), true);
  await page.keyboard.press('Enter');
  assert.equal(await page.textContent('.find-count'), `2 of ${want}`);
  await page.keyboard.press('Shift+Enter');
  assert.equal(await page.textContent('.find-count'), `1 of ${want}`);
  await page.keyboard.press('Escape');
  await page.keyboard.press('n');
  assert.equal(await page.textContent('.find-count'), `2 of ${want}`);
  await page.keyboard.press('N');
  await page.keyboard.press('N');
  assert.equal(await page.textContent('.find-count'), `${want} of ${want}`, 'N wraps to the last match');
  assert.ok((await page.getAttribute('.row.selected', 'class')).includes('match'), 'the last match is selected');
  assert.match(page.url(), /find=subsystem%3Dsub-2/, 'the query is in the URL');

  await page.fill('.find-input', '>1ms');
  // Only the root and the 100 sandbox spans (4ms) last longer than an op (150µs).
  await page.waitForFunction(() => document.querySelector('.find-count').textContent === '101 matches');
  await page.fill('.find-input', '>10 parsecs');
  await page.waitForFunction(() => /duration filter/.test(document.querySelector('.find-error').textContent));
  await page.fill('.find-input', 'sandbox_id=sb-7');
  await page.waitForFunction(() => document.querySelector('.find-count').textContent === '1 match');
  await page.screenshot({ path: join(shots, 'find.png') });
});

test('span links are listed in the details and lead to the linked span, here or in its trace', async () => {
  const jaeger = await (await fetch(url(`/api/traces/${traceIdHex(LINKED)}`))).json();
  const refs = jaeger.data[0].spans.find((s) => s.operationName === 'process').references;
  assert.equal(refs.length, 3, `the parent and both links are references: ${JSON.stringify(refs)}`);
  await page.goto(url(`/trace/${traceIdHex(LINKED)}?span=${spanIdHex(3)}`));
  await page.waitForSelector('.details');
  assert.equal(await page.textContent('.details-title'), 'process');
  const items = await page.$$eval('.details .span-link', (els) => els.map((e) => e.textContent));
  assert.equal(items.length, 2, items.join(' | '));
  await page.click(`.details .span-link:has-text("first") a`);
  await page.waitForFunction(() => document.querySelector('.details-title').textContent === 'first');
  assert.match(page.url(), new RegExp(`/trace/${traceIdHex(LINKED)}\\?span=${spanIdHex(2)}$`));
  await page.goto(url(`/trace/${traceIdHex(LINKED)}?span=${spanIdHex(3)}`));
  await page.waitForSelector('.details');
  await page.click(`.details .span-link:has-text("${traceIdHex(TARGET)}") a`);
  await page.waitForURL(`**/trace/${traceIdHex(TARGET)}?span=${spanIdHex(2)}`);
  await page.waitForFunction(() => document.querySelector('.details-title')?.textContent === 'send');
});

test('the flame graph zooms into a span and back out, and leads to the timeline', async () => {
  await page.goto(url(`/trace/${traceIdHex(DEPS)}?view=flame`));
  await page.waitForSelector('.flame .flame-block');
  const names = await page.$$eval('.flame-block', (els) => els.map((e) => e.textContent));
  assert.deepEqual(names, ['GET /', 'handle', 'query', 'query']);
  const width = (name) => page.$eval(`.flame-block:has-text("${name}")`, (e) => parseFloat(e.style.width));
  assert.equal(await width('GET /'), 100);
  assert.ok(await width('handle') < 90);
  await page.screenshot({ path: join(shots, 'flame.png') });
  await page.click('.flame-block:has-text("handle")');
  await page.waitForFunction(() => document.querySelectorAll('.flame-block').length === 3);
  assert.equal(await width('handle'), 100, 'the zoomed span fills the width');
  assert.deepEqual(await page.$$eval('.flame-crumb', (els) => els.map((e) => e.textContent)), ['whole trace', 'GET /', 'handle']);
  await page.click('.flame-open');
  await page.waitForSelector('.details');
  assert.equal(await page.textContent('.details-title'), 'handle');
  await page.click('.tab[data-view=flame]');
  await page.click('.flame-crumb:text-is("whole trace")');
  assert.equal(await page.locator('.flame-block').count(), 4);
});

test('the system architecture page draws the service call graph from /api/dependencies', async () => {
  await page.goto(url('/dependencies?lookback=1d'));
  await page.waitForSelector('.deps-table, .deps-unavailable, .deps-empty, .error');
  assert.equal(await page.locator('.deps-unavailable').count(), 0, 'the server has /api/dependencies');
  const rows = await page.$$eval('.deps-table tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
  const calls = Object.fromEntries(rows.map(([p, c, n]) => [`${p}>${c}`, Number(n)]));
  assert.equal(calls['frontend>api'], 1, JSON.stringify(rows));
  assert.equal(calls['api>db'], 2, JSON.stringify(rows));
  assert.equal(await page.locator('.deps-graph .dep-node').count() >= 3, true);
  await page.screenshot({ path: join(shots, 'dependencies.png') });
});

test('a finished trace two minutes old is not live', async () => {
  await page.goto(url(`/trace/${traceIdHex(DONE)}`));
  await page.waitForSelector('.rows .row');
  assert.equal(await page.textContent('.live'), '');
});

test('self time in the statistics is the CLI\'s, and its help explains overlapping work', async () => {
  await page.goto(url(`/trace/${traceIdHex(DEPS)}?view=stats&group=operation`));
  await page.waitForSelector('.stats-table');
  const summary = await (await fetch(url(`/api/analysis/summary/${traceIdHex(DEPS)}`))).json();
  const viewer = await page.$$eval('.stats-table tbody tr', (trs) => Object.fromEntries(trs.map((tr) =>
    [tr.querySelector('.group-key').textContent, Number(tr.querySelector('.col-self').dataset.value)])));
  // handle (7ms) minus two 1ms queries; the root minus handle.
  assert.equal(viewer['api: handle'], 5000);
  assert.equal(viewer['frontend: GET /'], 2000);
  assert.equal(viewer['db: query'], 2000);
  // The CLI's `shoji trace summary`, served as JSON: the same numbers for every operation.
  const cli = Object.fromEntries(summary.data[0].by_operation.map((g) => [g.key, g.self_ns / 1000]));
  assert.deepEqual(viewer, cli);
  const help = await page.getAttribute('.stats-table th:has-text("Self time")', 'title');
  assert.match(help, /overlap each other are counted once/);
  assert.match(await page.textContent('.self-legend'), /more than 100%/);
});

test('times carry the browser\'s time zone', async () => {
  const ctx = await browser.newContext({ timezoneId: 'Asia/Kolkata', viewport: { width: 1400, height: 900 } });
  const p = await ctx.newPage();
  try {
    await p.goto(url(`/trace/${traceIdHex(DEPS)}?span=${spanIdHex(2)}`));
    await p.waitForSelector('.details');
    assert.match(await p.textContent('.meta-started'), /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC\+05:30$/);
    assert.match(await p.textContent('.details .ids'), /UTC\+05:30/);
    await p.goto(url('/search'));
    await p.waitForSelector('.result-time');
    assert.match(await p.textContent('.result-time'), /UTC\+05:30$/);
  } finally {
    await ctx.close();
  }
});

// Regression (issue 15): spans whose parents form a cycle vanished; the CLI shows them.
test('spans in a parent cycle are shown once each, the earliest as a root, as the CLI does', async () => {
  await page.goto(url(`/trace/${traceIdHex(CYCLE)}`));
  await page.waitForSelector('.rows .row');
  const rows = await page.$$eval('.rows .row', (els) => els.map((e) => [e.querySelector('.op').textContent, e.getAttribute('aria-level')]));
  assert.deepEqual(rows, [['root', '1'], ['loop-a', '1'], ['loop-b', '2']]);
});

// Regression (issue 15): leaving a trace page while it awaited the critical path built a
// timeline afterwards, whose window listeners lived on.
test('a trace page left while loading builds nothing and leaves no listener behind', async () => {
  await page.goto(url('/search'));
  await page.waitForSelector('.result');
  const cdp = await page.context().newCDPSession(page);
  const windowListeners = async () => {
    const { result } = await cdp.send('Runtime.evaluate', { expression: 'window' });
    const { listeners } = await cdp.send('DOMDebugger.getEventListeners', { objectId: result.objectId });
    return listeners.filter((l) => l.type === 'mousemove' || l.type === 'mouseup').length;
  };
  const baseline = await windowListeners();
  let release;
  const held = new Promise((r) => { release = r; });
  let asked = false;
  await page.route('**/api/analysis/critical-path/**', async (route) => {
    asked = true;
    await held;
    await route.continue();
  });
  try {
    await page.evaluate((path) => window.dispatchEvent(new CustomEvent('shoji:navigate', { detail: path })), `/trace/${traceIdHex(DEPS)}?crit=1`);
    await page.waitForFunction(() => document.querySelector('.trace-head'));
    for (let i = 0; i < 100 && !asked; i++) await page.waitForTimeout(20);
    assert.ok(asked, 'the page is waiting for the critical path');
    await page.evaluate(() => window.dispatchEvent(new CustomEvent('shoji:navigate', { detail: '/search' })));
    await page.waitForSelector('.search-form');
    release();
    await page.waitForTimeout(500);
    assert.equal(await windowListeners(), baseline, 'no timeline was built for the page that was left');
    assert.equal(await page.locator('.timeline').count(), 0);
  } finally {
    release();
    await page.unroute('**/api/analysis/critical-path/**');
    await cdp.detach();
  }
});

// Regression (issue 15): a trace of zero length divided by zero.
test('a trace of zero length draws, zooms and counts without NaN', async () => {
  await page.goto(url(`/trace/${traceIdHex(ZERO)}`));
  await page.waitForSelector('.rows .row');
  const styles = await page.$$eval('.rows .bar', (els) => els.map((e) => `${e.style.left} ${e.style.width}`));
  assert.equal(styles.length, 2);
  for (const st of styles) assert.doesNotMatch(st, /NaN|Infinity/, st);
  const ticks = await page.$$eval('.axis .tick', (els) => els.map((e) => e.textContent).join(' '));
  assert.doesNotMatch(ticks, /NaN/);
  const box = await page.locator('.minimap').boundingBox();
  await page.mouse.move(box.x + box.width * 0.2, box.y + 10);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.6, box.y + 20, { steps: 3 });
  const win = await page.$eval('.minimap-window', (e) => `${e.style.left} ${e.style.width}`);
  await page.mouse.up();
  assert.doesNotMatch(win, /NaN|Infinity/, win);
  await page.click('.tab[data-view=stats]');
  const pct = await page.$$eval('.stats-table .col-selfPct', (els) => els.map((e) => e.textContent));
  for (const p of pct) assert.doesNotMatch(p, /NaN|Infinity/);
  await page.click('.tab[data-view=flame]');
  await page.waitForSelector('.flame-note');
  assert.match(await page.textContent('.flame-note'), /^0 spans drawn, 2 too narrow/);
});

test('no view threw a script error', () => {
  assert.deepEqual(pageErrors, []);
});
