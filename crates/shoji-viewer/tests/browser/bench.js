// Time to first render of big traces in headless Chromium, and scrolling through the biggest: a
// benchmark that prints figures (scripts/bench-viewer.sh runs it; docs/benchmarks.md has them).
//
// usage: node bench.js [--spans 10000,100000] [--runs 5]

import { parseArgs } from 'node:util';
import {
  tempDataDir, startServer, launchBrowser, cleanup, postOtlp, otlpRequest, traceIdHex, bigTrace,
} from './harness.js';

const { values } = parseArgs({ options: { spans: { type: 'string', default: '10000,100000' }, runs: { type: 'string', default: '5' } } });
const sizes = [100, ...values.spans.split(',').map(Number)];
const runs = Number(values.runs);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const pctl = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * p))]; };
// Under the receiver's default request limit (16 MiB) with room to spare.
const CHUNK = 10_000;

const dir = tempDataDir();
const server = await startServer(dir);
const browser = await launchBrowser();
try {
  const ids = sizes.map((_, i) => 0x100 * (i + 1));
  for (let i = 0; i < sizes.length; i++) {
    const spans = bigTrace(ids[i], sizes[i], 3_600_000);
    for (let k = 0; k < spans.length; k += CHUNK) {
      await postOtlp(server.otlpHttp, otlpRequest(ids[i], 'bench', spans.slice(k, k + CHUNK)));
    }
  }
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const firstRender = sizes.map(() => []);
  const apiTime = sizes.map(() => []);
  const apiBytes = sizes.map(() => 0);
  // Alternate the sizes so that all see the same machine load.
  for (let r = 0; r < runs; r++) {
    for (let i = 0; i < sizes.length; i++) {
      await page.goto(`${server.base}/trace/${traceIdHex(ids[i])}`);
      const [ms, api, bytes] = await page.evaluate(() => new Promise((ok) => {
        const look = () => {
          const m = performance.getEntriesByName('shoji:first-paint')[0];
          const res = performance.getEntriesByType('resource').find((e) => e.name.includes('/api/viewer/traces/'));
          if (m) ok([m.startTime, res ? res.responseEnd - res.requestStart : NaN, res ? res.encodedBodySize : NaN]);
          else setTimeout(look, 5);
        };
        look();
      }));
      firstRender[i].push(ms);
      apiTime[i].push(api);
      apiBytes[i] = bytes;
    }
  }
  // Scroll the biggest trace from top to bottom, 10 rows per frame, and time every frame
  // (at most 2,000 frames).
  const big = sizes.length - 1;
  await page.goto(`${server.base}/trace/${traceIdHex(ids[big])}`);
  await page.waitForSelector('.rows .row');
  const frames = await page.evaluate(() => new Promise((ok) => {
    const el = document.querySelector('.rows');
    const times = [];
    let last = performance.now();
    const step = () => {
      const now = performance.now();
      times.push(now - last);
      last = now;
      if (el.scrollTop + el.clientHeight >= el.scrollHeight - 1 || times.length > 2000) { ok(times.slice(1)); return; }
      el.scrollTop += 240;
      requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  }));
  const version = await browser.version();
  const all = (xs) => xs.map((x) => x.toFixed(0)).join(' ');
  console.log(`viewer benchmark: headless Chromium ${version}, ${runs} runs each, alternating`);
  for (let i = 0; i < sizes.length; i++) {
    console.log(`time to first render, ${String(sizes[i]).padStart(6)} spans: median ${median(firstRender[i]).toFixed(0)} ms  (all: ${all(firstRender[i])})` +
      `; API request median ${median(apiTime[i]).toFixed(0)} ms, ${(apiBytes[i] / 1e6).toFixed(2)} MB`);
  }
  console.log(`ratio ${sizes[big]}/100 spans: ${(median(firstRender[big]) / median(firstRender[0])).toFixed(2)}`);
  console.log(`scrolling ${sizes[big]} spans: ${frames.length} frames, median ${median(frames).toFixed(1)} ms, p95 ${pctl(frames, 0.95).toFixed(1)} ms, over 50 ms: ${frames.filter((f) => f > 50).length}`);
} finally {
  await browser.close();
  await server.stop();
  cleanup(dir);
}
