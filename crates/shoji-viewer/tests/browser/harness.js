// Shared by the browser tests and the benchmark: a real `shoji trace serve` on free ports over a
// temporary data directory, Debian's Chromium driven by playwright-core, and OTLP/JSON helpers.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, '../../../..');

export function shojiBin() {
  const bin = process.env.SHOJI_BIN || join(repo, 'target/debug/shoji');
  if (!existsSync(bin)) throw new Error(`no shoji binary at ${bin}: build it (cargo build -p shoji-cli) or set SHOJI_BIN`);
  return bin;
}

export function tempDataDir() {
  return mkdtempSync(join(tmpdir(), 'shoji-viewer-test-'));
}

/** Runs `shoji ARGS` to completion with the data dir set; returns stdout. */
export function shoji(dataDir, args, opts = {}) {
  return execFileSync(shojiBin(), args, {
    env: { ...process.env, SHOJI_DATA_DIR: dataDir, RUST_LOG: 'warn' },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 120_000,
    ...opts,
  });
}

/**
 * Starts `shoji trace serve` (this build's, or `bin`) on free ports; resolves when it has
 * printed its addresses.
 */
export async function startServer(dataDir, bin = shojiBin()) {
  const child = spawn(bin, ['trace', 'serve', '--grpc-port', '0', '--http-port', '0', '--query-port', '0', '--zipkin-port', '0'], {
    env: { ...process.env, SHOJI_DATA_DIR: dataDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  const addrs = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`shoji trace serve printed no addresses in 20s; stderr: ${err}`)), 20_000);
    child.on('exit', (code) => fail(new Error(`shoji trace serve exited with ${code}: ${err}`)));
    child.stdout.on('data', (d) => {
      out += d;
      const query = /^query (http:\/\/\S+)\/$/m.exec(out);
      const otlp = /^otlp-http (http:\/\/\S+)$/m.exec(out);
      if (query && otlp) { clearTimeout(timer); ok({ base: query[1], otlpHttp: otlp[1] }); }
    });
  });
  return {
    ...addrs,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

export async function launchBrowser() {
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  if (!existsSync(executablePath)) throw new Error(`no Chromium at ${executablePath}: apt-get install chromium (scripts/test.sh does)`);
  return chromium.launch({
    executablePath,
    headless: true,
    // Root in a container has no user namespace sandbox; the rest keeps Chromium off the network.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage'],
  });
}

export function cleanup(dir) {
  rmSync(dir, { recursive: true, force: true });
}

/** A page of the size the screenshots use, recording uncaught script errors in `errors`. */
export async function newPage(browser, errors) {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('pageerror', (e) => errors.push(String(e)));
  return page;
}

/** Stops whatever a test file's set-up got as far as starting. */
export async function shutdown({ browser, server, dataDir }) {
  if (browser) await browser.close();
  if (server) await server.stop();
  if (dataDir) cleanup(dataDir);
}

const hex = (n, len) => n.toString(16).padStart(len, '0');
export const traceIdHex = (n) => hex(n, 32);
export const spanIdHex = (n) => hex(n, 16);

const attr = (key, value) => ({ key, value: typeof value === 'number' ? { intValue: String(value) } : { stringValue: String(value) } });

/**
 * An OTLP/JSON ExportTraceServiceRequest. spans: [{id, parent, name, startNs, endNs, attrs,
 * events, links: [{trace, span}]}] with numeric ids; service: resource service.name.
 */
export function otlpRequest(traceNum, service, spans) {
  return {
    resourceSpans: [{
      resource: { attributes: [attr('service.name', service)] },
      scopeSpans: [{
        scope: { name: 'shoji-viewer-tests' },
        spans: spans.map((sp) => ({
          traceId: traceIdHex(traceNum),
          spanId: spanIdHex(sp.id),
          parentSpanId: sp.parent ? spanIdHex(sp.parent) : '',
          name: sp.name,
          kind: 1,
          startTimeUnixNano: String(sp.startNs),
          endTimeUnixNano: String(sp.endNs),
          attributes: Object.entries(sp.attrs || {}).map(([k, v]) => attr(k, v)),
          events: (sp.events || []).map((e) => ({ timeUnixNano: String(e.timeNs), name: e.name, attributes: Object.entries(e.attrs || {}).map(([k, v]) => attr(k, v)) })),
          status: sp.error ? { code: 2, message: 'failed' } : {},
          links: (sp.links || []).map((l) => ({ traceId: traceIdHex(l.trace), spanId: spanIdHex(l.span), attributes: [] })),
        })),
      }],
    }],
  };
}

export async function postOtlp(otlpHttp, body) {
  const res = await fetch(otlpHttp, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`OTLP/HTTP POST answered ${res.status}: ${await res.text()}`);
}

/**
 * A synthetic trace of `n` spans shaped like many sandboxes: a root, 100 "sandbox" children,
 * each with a chain of calls, sources alternating, starting `agoMs` ago.
 */
export function bigTrace(traceNum, n, agoMs = 60_000) {
  const t0 = (Date.now() - agoMs) * 1e6;
  const spans = [{ id: 1, name: 'fleet', startNs: t0, endNs: t0 + n * 2e5 + 1e6, attrs: { source: 'runtime' } }];
  const perGroup = Math.ceil((n - 1) / 100);
  let id = 2;
  for (let g = 0; g < 100 && id <= n; g++) {
    const gid = id++;
    const gs = t0 + g * perGroup * 2e5;
    spans.push({ id: gid, parent: 1, name: 'sandbox', startNs: gs, endNs: gs + perGroup * 2e5, attrs: { source: 'runtime', sandbox_id: `sb-${g}` } });
    for (let k = 1; k < perGroup && id <= n; k++) {
      const s = gs + k * 2e5;
      spans.push({ id: id++, parent: gid, name: `op-${k % 7}`, startNs: s, endNs: s + 1.5e5, attrs: { source: ['runtime', 'agent', 'hypervisor'][k % 3], subsystem: `sub-${k % 4}` } });
    }
  }
  return spans;
}
