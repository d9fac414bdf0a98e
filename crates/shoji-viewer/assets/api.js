// The Jaeger-compatible query API and Shoji's analysis API, served by `shoji trace serve`.

export class ApiError extends Error {}

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
    throw new ApiError(`${path}: HTTP ${res.status}, not JSON`);
  }
  if (!res.ok || (body.errors && body.errors.length)) {
    const msg = body.errors && body.errors.length ? body.errors[0].msg : `HTTP ${res.status}`;
    throw new ApiError(msg);
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
  trace: async (id) => (await get(`/api/traces/${enc(id)}`))[0],
  criticalPath: (id) => get(`/api/analysis/critical-path/${enc(id)}`),
  diff: async (a, b) => (await get(`/api/analysis/diff/${enc(a)}/${enc(b)}`))[0],
};
