// Time to first render of a big trace in headless Chromium, and scrolling through it: a
// benchmark that prints figures (scripts/bench-viewer.sh runs it; docs/benchmarks.md has them).
//
// usage: node bench.js [--spans 10000] [--runs 7]

import { parseArgs } from 'node:util';
import {
  tempDataDir, startServer, launchBrowser, cleanup, postOtlp, otlpRequest, traceIdHex, bigTrace,
} from './harness.js';

const { values } = parseArgs({ options: { spans: { type: 'string', default: '10000' }, runs: { type: 'string', default: '7' } } });
const spans = Number(values.spans);
const runs = Number(values.runs);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const pctl = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * p))]; };

const dir = tempDataDir();
const server = await startServer(dir);
const browser = await launchBrowser();
try {
  const sizes = [[0x100, 100], [0x200, spans]];
  for (const [id, n] of sizes) await postOtlp(server.otlpHttp, otlpRequest(id, 'bench', bigTrace(id, n, 3_600_000)));
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const firstRender = { 100: [], [spans]: [] };
  const apiTime = { 100: [], [spans]: [] };
  // Alternate the small and the big trace so that both see the same machine load.
  for (let r = 0; r < runs; r++) {
    for (const [id, n] of sizes) {
      await page.goto(`${server.base}/trace/${traceIdHex(id)}`);
      const [ms, api] = await page.evaluate(() => new Promise((ok) => {
        const look = () => {
          const m = performance.getEntriesByName('shoji:first-paint')[0];
          const res = performance.getEntriesByType('resource').find((e) => e.name.includes('/api/traces/'));
          if (m) ok([m.startTime, res ? res.responseEnd - res.requestStart : NaN]); else setTimeout(look, 5);
        };
        look();
      }));
      firstRender[n].push(ms);
      apiTime[n].push(api);
    }
  }
  // Scroll the big trace from top to bottom, 10 rows per frame, and time every frame.
  await page.goto(`${server.base}/trace/${traceIdHex(0x200)}`);
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
  console.log(`viewer benchmark: headless Chromium ${version}, ${runs} runs each, alternating`);
  console.log(`time to first render, 100 spans:      median ${median(firstRender[100]).toFixed(0)} ms  (all: ${firstRender[100].map((x) => x.toFixed(0)).join(' ')})`);
  console.log(`time to first render, ${spans} spans: median ${median(firstRender[spans]).toFixed(0)} ms  (all: ${firstRender[spans].map((x) => x.toFixed(0)).join(' ')})`);
  console.log(`  of which the trace's API request (server and transfer): median ${median(apiTime[spans]).toFixed(0)} ms for ${spans} spans, ${median(apiTime[100]).toFixed(0)} ms for 100`);
  console.log(`ratio ${spans}/100 spans: ${(median(firstRender[spans]) / median(firstRender[100])).toFixed(2)}`);
  console.log(`scrolling ${spans} spans top to bottom: ${frames.length} frames, median ${median(frames).toFixed(1)} ms, p95 ${pctl(frames, 0.95).toFixed(1)} ms, over 50 ms: ${frames.filter((f) => f > 50).length}`);
} finally {
  await browser.close();
  await server.stop();
  cleanup(dir);
}
