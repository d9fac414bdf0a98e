// Time to first render of big traces in headless Chromium, and scrolling through the biggest: a
// benchmark that prints figures (scripts/bench-viewer.sh runs it; docs/benchmarks.md has them).
//
// usage: node bench.js [--spans 10000,100000] [--runs 5] [--baseline OTHER_SHOJI_BINARY]
//
// With --baseline, a second server runs that binary over its own copy of the same traces, and
// every page load alternates between the two: before/after figures under the same load.

import { parseArgs } from 'node:util';
import {
  tempDataDir, startServer, launchBrowser, cleanup, postOtlp, otlpRequest, traceIdHex, bigTrace, shojiBin,
} from './harness.js';

const { values } = parseArgs({
  options: {
    spans: { type: 'string', default: '10000,100000' },
    runs: { type: 'string', default: '5' },
    baseline: { type: 'string' },
  },
});
const sizes = [100, ...values.spans.split(',').map(Number)];
const runs = Number(values.runs);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const pctl = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * p))]; };
// Well under the receiver's default request limit (64 MiB).
const CHUNK = 10_000;

const builds = [{ label: 'this build', bin: shojiBin() }];
if (values.baseline) builds.unshift({ label: 'baseline', bin: values.baseline });
const ids = sizes.map((_, i) => 0x100 * (i + 1));
let browser = null;
try {
  for (const b of builds) {
    b.dir = tempDataDir();
    b.server = await startServer(b.dir, b.bin);
  }
  // The same spans (same times) into every server.
  for (let i = 0; i < sizes.length; i++) {
    const spans = bigTrace(ids[i], sizes[i], 3_600_000);
    for (let k = 0; k < spans.length; k += CHUNK) {
      const req = otlpRequest(ids[i], 'bench', spans.slice(k, k + CHUNK));
      for (const b of builds) await postOtlp(b.server.otlpHttp, req);
    }
  }
  browser = await launchBrowser();
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  for (const b of builds) {
    b.firstRender = sizes.map(() => []);
    b.apiTime = sizes.map(() => []);
    b.pageTime = sizes.map(() => []);
    b.apiBytes = sizes.map(() => 0);
  }
  // Alternate sizes and builds so that all see the same machine load.
  for (let r = 0; r < runs; r++) {
    for (let i = 0; i < sizes.length; i++) {
      for (const b of builds) {
        await page.goto(`${b.server.base}/trace/${traceIdHex(ids[i])}`);
        const [ms, api, bytes, end] = await page.evaluate(() => new Promise((ok) => {
          const look = () => {
            const m = performance.getEntriesByName('shoji:first-paint')[0];
            const res = performance.getEntriesByType('resource').find((e) => e.name.includes('/api/viewer/traces/'));
            if (m) ok([m.startTime, res ? res.responseEnd - res.requestStart : NaN, res ? res.encodedBodySize : NaN, res ? res.responseEnd : NaN]);
            else setTimeout(look, 5);
          };
          look();
        }));
        b.firstRender[i].push(ms);
        b.apiTime[i].push(api);
        b.pageTime[i].push(ms - end);
        b.apiBytes[i] = bytes;
      }
    }
  }
  // Scroll the biggest trace from top to bottom, 10 rows per frame, and time every frame
  // (at most 2,000 frames).
  const big = sizes.length - 1;
  const last = builds[builds.length - 1];
  await page.goto(`${last.server.base}/trace/${traceIdHex(ids[big])}`);
  await page.waitForSelector('.rows .row');
  const frames = await page.evaluate(() => new Promise((ok) => {
    const el = document.querySelector('.rows');
    const times = [];
    let prev = performance.now();
    const step = () => {
      const now = performance.now();
      times.push(now - prev);
      prev = now;
      if (el.scrollTop + el.clientHeight >= el.scrollHeight - 1 || times.length > 2000) { ok(times.slice(1)); return; }
      el.scrollTop += 240;
      requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  }));
  const version = await browser.version();
  const all = (xs) => xs.map((x) => x.toFixed(0)).join(' ');
  console.log(`viewer benchmark: headless Chromium ${version}, ${runs} runs each, alternating`);
  for (const b of builds) {
    console.log(`${b.label} (${b.bin}):`);
    for (let i = 0; i < sizes.length; i++) {
      console.log(`  time to first render, ${String(sizes[i]).padStart(6)} spans: median ${median(b.firstRender[i]).toFixed(0)} ms  (all, first visit first: ${all(b.firstRender[i])})` +
        `; API request median ${median(b.apiTime[i]).toFixed(0)} ms, ${(b.apiBytes[i] / 1e6).toFixed(2)} MB` +
        `; page after the answer median ${median(b.pageTime[i]).toFixed(0)} ms`);
    }
    console.log(`  ratio ${sizes[big]}/100 spans: ${(median(b.firstRender[big]) / median(b.firstRender[0])).toFixed(2)}`);
  }
  if (builds.length === 2) {
    const [a, b] = builds;
    for (let i = 0; i < sizes.length; i++) {
      console.log(`this build / baseline, ${String(sizes[i]).padStart(6)} spans: first render ${(median(b.firstRender[i]) / median(a.firstRender[i])).toFixed(2)}` +
        `, API request ${(median(b.apiTime[i]) / median(a.apiTime[i])).toFixed(2)}`);
    }
  }
  console.log(`scrolling ${sizes[big]} spans (${last.label}): ${frames.length} frames, median ${median(frames).toFixed(1)} ms, p95 ${pctl(frames, 0.95).toFixed(1)} ms, over 50 ms: ${frames.filter((f) => f > 50).length}`);
} finally {
  if (browser) await browser.close();
  for (const b of builds) {
    if (b.server) await b.server.stop();
    if (b.dir) cleanup(b.dir);
  }
}
