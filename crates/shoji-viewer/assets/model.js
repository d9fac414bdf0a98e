// A Jaeger-model trace turned into what the views need: a span tree in time order, links to
// other spans, and groupings for the statistics, the graph and the search results. No DOM here:
// `node --test` runs this module's tests without a browser (tests/unit/).
//
// Self time is not computed here: the server's `/api/viewer/traces/{id}` sends each span's
// `selfTime`, from the same function that `shoji trace summary` uses (shoji-trace's
// `analysis::self_times`), so the viewer and the CLI cannot disagree. A span without it (a
// Jaeger-model trace from elsewhere) has `selfTime` null.

/** Trace ids compare as 32 lowercase hex digits (Jaeger zero-extends 64-bit ids). */
export function normTraceId(id) {
  return String(id || '').toLowerCase().padStart(32, '0');
}

/**
 * A span. Its tags and attributes are made when first asked for: a 100,000-span trace is
 * drawn long before anyone reads most of them.
 */
class Span {
  constructor(id, parentId, name, process, start, duration, selfTime, source, error) {
    this.id = id;
    this.parentId = parentId;
    this.name = name;
    this.process = process;
    this.service = process.serviceName;
    this.source = source;
    this.start = start;
    this.duration = duration;
    this.end = start + duration;
    this.selfTime = selfTime;
    this.error = error;
    this.links = NO_LINKS;
    this.logs = NONE;
    this.warnings = NONE;
    this.parent = null;
    this.children = NONE;
    this.depth = 0;
    this.index = 0;
    this.subtreeEnd = this.end;
    this.tagSrc = null; // [{key, value}], or (compact form) null with the fields below
    this.doc = null; // the compact document: tags[tagFrom..tagTo] index into doc.values
    this.tagFrom = 0;
    this.tagTo = 0;
    this.tagCache = null;
    this.attrCache = null;
  }

  get tags() {
    if (!this.tagCache) {
      if (this.doc) {
        const { tags, values } = this.doc;
        this.tagCache = [];
        for (let i = this.tagFrom; i < this.tagTo; i += 2) this.tagCache.push({ key: String(values[tags[i]]), value: values[tags[i + 1]] });
      } else {
        this.tagCache = this.tagSrc || NONE;
      }
    }
    return this.tagCache;
  }

  get attrs() {
    if (!this.attrCache) {
      this.attrCache = {};
      for (const t of this.tags) this.attrCache[t.key] = t.value;
    }
    return this.attrCache;
  }
}

const NONE = Object.freeze([]);
const NO_LINKS = NONE;

function processSource(proc) {
  const pt = (proc.tags || []).find((x) => x.key === 'source');
  return pt ? String(pt.value) : 'other';
}

/** A Jaeger span's references: the parent (first CHILD_OF within the trace) and the links. */
function splitReferences(refs, traceId) {
  let parentId = null;
  const links = [];
  for (const ref of refs || []) {
    const refTrace = normTraceId(ref.traceID || traceId);
    const local = refTrace === traceId;
    if (parentId === null && ref.refType === 'CHILD_OF' && local) parentId = ref.spanID;
    else links.push({ type: ref.refType, traceId: refTrace, spanId: ref.spanID, local });
  }
  return { parentId, links };
}

/**
 * A trace in Jaeger's model (`/api/traces/{id}`, a file). Spans may carry `selfTime`
 * (microseconds); without it, self time is unknown (null).
 */
export function buildTrace(raw) {
  const processes = raw.processes || {};
  const traceId = normTraceId(raw.traceID);
  const spans = raw.spans.map((r) => {
    const proc = processes[r.processID] || { serviceName: '?', tags: [] };
    const tags = r.tags || [];
    let source = null;
    let error = false;
    for (const t of tags) {
      if (t.key === 'source') source = String(t.value);
      else if ((t.key === 'error' && t.value === true) || (t.key === 'otel.status_code' && t.value === 'ERROR')) error = true;
    }
    const { parentId, links } = splitReferences(r.references, traceId);
    const sp = new Span(r.spanID, parentId, r.operationName, proc, r.startTime, r.duration,
      Number.isFinite(r.selfTime) ? r.selfTime : null, source ?? processSource(proc), error);
    sp.tagSrc = tags;
    if (links.length) sp.links = links;
    if (r.logs && r.logs.length) sp.logs = r.logs;
    if (r.warnings && r.warnings.length) sp.warnings = r.warnings;
    return sp;
  });
  const byId = new Map(spans.map((sp) => [sp.id, sp]));
  return assemble(traceId, spans, spans.map((sp) => (sp.parentId ? byId.get(sp.parentId) : undefined)));
}

/**
 * A trace in the compact form of `/api/viewer/traces/{id}`: strings and tag values sent once
 * in `values`, spans as columns. About a tenth of Jaeger's JSON, and every span has its self
 * time from the server.
 */
export function buildTraceCompact(doc) {
  const traceId = normTraceId(doc.traceID);
  const values = doc.values;
  const at = (s) => values.indexOf(s);
  const [kSource, kError, kStatus, vErrorStatus] = [at('source'), at('error'), at('otel.status_code'), at('ERROR')];
  const vTrue = values.indexOf(true);
  const procSources = doc.processes.map(processSource);
  const n = doc.spanCount;
  const spans = new Array(n);
  for (let i = 0; i < n; i++) {
    const proc = doc.processes[doc.process[i]] || { serviceName: '?', tags: [] };
    const tags = doc.tags;
    const [from, to] = [doc.tagStart[i], doc.tagStart[i + 1]];
    let source = null;
    let error = false;
    for (let k = from; k < to; k += 2) {
      const key = tags[k];
      if (key === kSource && kSource >= 0) source = String(values[tags[k + 1]]);
      else if ((key === kError && tags[k + 1] === vTrue) || (key === kStatus && tags[k + 1] === vErrorStatus)) error = true;
    }
    const sp = new Span(doc.spanIds.slice(i * 16, i * 16 + 16), null,
      String(values[doc.name[i]]), proc, doc.startBase + doc.start[i], doc.duration[i], doc.selfTime[i],
      source ?? procSources[doc.process[i]] ?? 'other', error);
    sp.doc = doc;
    sp.tagFrom = from;
    sp.tagTo = to;
    spans[i] = sp;
  }
  const parents = new Array(n);
  for (let i = 0; i < n; i++) {
    const p = doc.parent[i];
    if (p >= 0 && p < n) {
      spans[i].parentId = spans[p].id;
      parents[i] = spans[p];
    }
  }
  for (const [i, id] of Object.entries(doc.missingParents || {})) spans[i].parentId = id;
  for (const [i, refs] of Object.entries(doc.links || {})) {
    // The server has left the parent out: every reference here is a link.
    spans[i].links = refs.map((r) => {
      const refTrace = normTraceId(r.traceID || traceId);
      return { type: r.refType, traceId: refTrace, spanId: r.spanID, local: refTrace === traceId };
    });
  }
  for (const [i, logs] of Object.entries(doc.logs || {})) spans[i].logs = logs;
  for (const [i, w] of Object.entries(doc.warnings || {})) spans[i].warnings = w;
  return assemble(traceId, spans, parents);
}

/**
 * Builds the tree. A span whose parent is not in the trace (not yet arrived, or lost) becomes a
 * root, so nothing is hidden; roots and siblings are ordered by start time. Spans caught in a
 * parent cycle (a->b->a) are recovered as `shoji trace show` recovers them: taking spans in the
 * CLI's order (start, then longest first), the first span of every group no root reaches is cut
 * from its parent and made a root, after the other roots.
 */
function assemble(traceId, spans, parents) {
  const n = spans.length;
  for (let i = 0; i < n; i++) {
    const sp = spans[i];
    const parent = parents[i];
    if (parent && parent !== sp) {
      sp.parent = parent;
      if (parent.children === NONE) parent.children = [];
      parent.children.push(sp);
    }
  }
  const byStart = (a, b) => a.start - b.start || b.end - a.end || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const roots = spans.filter((sp) => !sp.parent);
  // Depth-first order without recursion: a 10,000-deep chain must not overflow the stack.
  const order = [];
  const walk = (from) => {
    const stack = [from];
    while (stack.length) {
      const sp = stack.pop();
      sp.depth = sp.parent ? sp.parent.depth + 1 : 0;
      sp.index = -1; // placed; numbered below
      order.push(sp);
      if (sp.children.length > 1) sp.children.sort(byStart);
      for (let i = sp.children.length - 1; i >= 0; i--) stack.push(sp.children[i]);
    }
  };
  roots.sort(byStart);
  for (const r of roots) walk(r);
  if (order.length < n) {
    for (const sp of [...spans].sort(byStart)) {
      if (sp.index === -1) continue;
      const p = sp.parent;
      p.children.splice(p.children.indexOf(sp), 1);
      sp.parent = null;
      roots.push(sp);
      walk(sp);
    }
  }
  for (let i = 0; i < order.length; i++) order[i].index = i;
  // A span's extent with its descendants.
  for (let i = order.length - 1; i >= 0; i--) {
    const sp = order[i];
    if (sp.parent && sp.subtreeEnd > sp.parent.subtreeEnd) sp.parent.subtreeEnd = sp.subtreeEnd;
  }
  let start = Infinity;
  let end = -Infinity;
  let maxDepth = 0;
  let errors = 0;
  const services = new Set();
  for (const x of order) {
    if (x.start < start) start = x.start;
    if (x.end > end) end = x.end;
    if (x.depth > maxDepth) maxDepth = x.depth;
    if (x.error) errors += 1;
    services.add(x.service);
  }
  if (!order.length) [start, end] = [0, 0];
  let byId = null;
  return {
    id: traceId,
    spans: order,
    /** Span by id; the index is made on first use (clicks, links), not for the first paint. */
    byId: { get: (id) => (byId || (byId = new Map(order.map((x) => [x.id, x])))).get(id) },
    roots,
    start,
    end,
    duration: end - start,
    // What the views divide by: never zero, so a trace of zero length still draws.
    span: Math.max(1, end - start),
    services: [...services].sort(),
    maxDepth,
    errors,
    hasSelfTime: order.length > 0 && order.every((x) => x.selfTime !== null),
    root: roots.reduce((best, r) => (!best || r.end > best.end ? r : best), null),
  };
}

/** Every attribute key in the trace, for "group by". */
export function attributeKeys(trace) {
  const keys = new Set();
  for (const sp of trace.spans) for (const t of sp.tags) keys.add(t.key);
  return [...keys].sort();
}

/**
 * Statistics: spans grouped by operation (`service: name`) or by an attribute's value, with
 * count, total, self time, average and maximum (microseconds).
 */
export function groupStats(trace, by) {
  const groups = new Map();
  for (const sp of trace.spans) {
    let key;
    if (by === 'operation') key = `${sp.service}: ${sp.name}`;
    else if (by === 'service') key = sp.service;
    else key = sp.attrs[by] === undefined ? '(not set)' : String(sp.attrs[by]);
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { key, count: 0, total: 0, self: 0, max: 0, min: Infinity }));
    g.count += 1;
    g.total += sp.duration;
    g.self += sp.selfTime || 0;
    g.max = Math.max(g.max, sp.duration);
    g.min = Math.min(g.min, sp.duration);
  }
  return [...groups.values()].map((g) => ({ ...g, avg: g.total / g.count }));
}

/**
 * The graph view's nodes: spans merged by their path of operations from the root, so a
 * 10,000-span trace of repeated calls draws as a handful of nodes with counts.
 */
export function operationGraph(trace) {
  const nodes = [];
  const nodeOf = new Map();
  const nodeByKey = new Map();
  for (const sp of trace.spans) {
    const parentNode = sp.parent ? nodeOf.get(sp.parent.id) : null;
    const key = `${parentNode ? parentNode.n : -1}\u0000${sp.service}\u0000${sp.name}`;
    let n = nodeByKey.get(key);
    if (!n) {
      n = {
        n: nodes.length, name: sp.name, service: sp.service, source: sp.source, parent: parentNode,
        children: [], count: 0, total: 0, self: 0, firstSpan: sp.id,
      };
      nodes.push(n);
      nodeByKey.set(key, n);
      if (parentNode) parentNode.children.push(n);
    }
    n.count += 1;
    n.total += sp.duration;
    n.self += sp.selfTime || 0;
    nodeOf.set(sp.id, n);
  }
  return nodes;
}

/** One line of a search result, from the server's trace summary. */
export function resultFromSummary(x) {
  return {
    id: x.trace_id,
    name: `${x.root_service}: ${x.root_name}`,
    start: x.start_ns / 1000,
    duration: (x.end_ns - x.start_ns) / 1000,
    spanCount: x.span_count,
    complete: x.has_root,
    services: x.services,
  };
}

/** How long after its newest span ended a trace is still taken to be receiving spans. */
export const LIVE_WINDOW_US = 30e6;

/**
 * Whether a trace can still change, so the page polls it and shows the "live" badge: while a
 * span's parent has not arrived (a sandbox made by `shoji create` ends and exports its root only
 * at delete, however long that takes), or while its newest span ended less than LIVE_WINDOW_US
 * ago (exporters send in batches, and the guest's spans may follow the host's by seconds).
 * A complete trace that has been quiet for longer is final.
 */
export function isLive(trace, nowUs, windowUs = LIVE_WINDOW_US) {
  if (trace.roots.some((r) => r.parentId)) return true;
  return nowUs - trace.end < windowUs;
}
