// The Jaeger-compatible query API and Shoji's analysis API, served by `shoji trace serve`.

export class ApiError extends Error {
  constructor(msg, status = 0) {
    super(msg);
    this.status = status;
  }
}

async function get(path) {
  let res;
  try {
    res = await fetch(path, { headers: { Accept: 'application/json' } });
  } catch (e) {
    throw new ApiError(`cannot reach the Shoji server (${e.message}); is \`shoji trace serve\` running?`);
  }
  let body = null;
  try {
    body = await res.json();
  } catch {
    throw new ApiError(`${path}: HTTP ${res.status}, not JSON`, res.status);
  }
  if (!res.ok || (body.errors && body.errors.length)) {
    const msg = body.errors && body.errors.length ? body.errors[0].msg : `HTTP ${res.status}`;
    throw new ApiError(msg, res.status);
  }
  return body.data;
}

const enc = encodeURIComponent;

export const api = {
  services: () => get('/api/services'),
  operations: (service) => get(`/api/services/${enc(service)}/operations`),
  /** params: URLSearchParams in Jaeger's search form. */
  search: (params) => get(`/api/traces?${params}`),
  /** The same search, one summary per trace (no spans): the result list. */
  searchSummaries: (params) => get(`/api/analysis/search?${params}`),
  /** One trace in Jaeger's model: the exchange format (the page's "JSON" link). */
  trace: async (id) => (await get(`/api/traces/${enc(id)}`))[0],
  /** One trace in the viewer's compact form, with self times (model.js buildTraceCompact). */
  viewerTrace: async (id) => (await get(`/api/viewer/traces/${enc(id)}`))[0],
  /** Jaeger's service call graph: [{parent, child, callCount}] over lookbackMs before endTs. */
  dependencies: (endTs, lookbackMs) => get(`/api/dependencies?endTs=${endTs}&lookback=${lookbackMs}`),
  criticalPath: (id) => get(`/api/analysis/critical-path/${enc(id)}`),
  diff: async (a, b) => (await get(`/api/analysis/diff/${enc(a)}/${enc(b)}`))[0],
};
