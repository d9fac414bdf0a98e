// A Jaeger-model trace turned into what the views need: a span tree in time order, each span's
// self time, and groupings for the statistics, the graph and the search results.

function tagValue(tags, key) {
  const t = tags && tags.find((x) => x.key === key);
  return t ? t.value : undefined;
}

/**
 * Builds the tree. A span whose parent is not in the trace (not yet arrived, or lost) becomes a
 * root, so nothing is hidden; roots and siblings are ordered by start time.
 */
export function buildTrace(raw) {
  const processes = raw.processes || {};
  const spans = raw.spans.map((r) => {
    const proc = processes[r.processID] || { serviceName: '?', tags: [] };
    const attrs = {};
    for (const t of r.tags || []) attrs[t.key] = t.value;
    const source = String(attrs.source ?? tagValue(proc.tags, 'source') ?? 'other');
    return {
      id: r.spanID,
      name: r.operationName,
      service: proc.serviceName,
      source,
      start: r.startTime,
      duration: r.duration,
      end: r.startTime + r.duration,
      tags: r.tags || [],
      attrs,
      logs: r.logs || [],
      process: proc,
      warnings: r.warnings || [],
      parentId: null,
      parent: null,
      children: [],
      depth: 0,
      selfTime: r.duration,
      error: attrs.error === true || attrs['otel.status_code'] === 'ERROR',
    };
  });
  const byId = new Map(spans.map((sp) => [sp.id, sp]));
  const raws = new Map(raw.spans.map((r) => [r.spanID, r]));
  const roots = [];
  for (const sp of spans) {
    const ref = (raws.get(sp.id).references || []).find((x) => x.refType === 'CHILD_OF') ||
      (raws.get(sp.id).references || [])[0];
    sp.parentId = ref ? ref.spanID : null;
    const parent = ref && ref.spanID !== sp.id ? byId.get(ref.spanID) : undefined;
    if (parent) {
      sp.parent = parent;
      parent.children.push(sp);
    } else {
      roots.push(sp);
    }
  }
  const byStart = (a, b) => a.start - b.start || a.name.localeCompare(b.name);
  roots.sort(byStart);
  // Depth-first order without recursion: a 10,000-deep chain must not overflow the stack.
  const order = [];
  const stack = [...roots].reverse();
  while (stack.length) {
    const sp = stack.pop();
    sp.depth = sp.parent ? sp.parent.depth + 1 : 0;
    sp.index = order.length;
    order.push(sp);
    sp.children.sort(byStart);
    for (let i = sp.children.length - 1; i >= 0; i--) stack.push(sp.children[i]);
  }
  // A child's extent runs to the end of its subtree (see selfTime); children follow parents.
  for (const sp of order) sp.subtreeEnd = sp.end;
  for (let i = order.length - 1; i >= 0; i--) {
    const sp = order[i];
    if (sp.parent) sp.parent.subtreeEnd = Math.max(sp.parent.subtreeEnd, sp.subtreeEnd);
  }
  for (const sp of order) sp.selfTime = selfTime(sp);
  let start = Infinity;
  let end = -Infinity;
  let maxDepth = 0;
  for (const x of order) {
    start = Math.min(start, x.start);
    end = Math.max(end, x.end);
    maxDepth = Math.max(maxDepth, x.depth);
  }
  const services = [...new Set(spans.map((x) => x.service))].sort();
  return {
    id: raw.traceID,
    spans: order,
    byId,
    roots,
    start,
    end,
    duration: end - start,
    services,
    maxDepth,
    errors: spans.filter((x) => x.error).length,
    root: roots.reduce((best, r) => (!best || r.end > best.end ? r : best), null),
  };
}

/**
 * A span's duration minus the time covered by its children (clipped to the span). A child
 * covers until its whole subtree ends: work it started that outlives it (the guest booting
 * under a `vm.start` that returned once QEMU ran) is not the parent's own time. Same rule as
 * `shoji trace summary`.
 */
export function selfTime(sp) {
  if (!sp.children.length) return sp.duration;
  const iv = sp.children
    .map((c) => [Math.max(c.start, sp.start), Math.min(c.subtreeEnd ?? c.end, sp.end)])
    .filter(([a, b]) => b > a)
    .sort((x, y) => x[0] - y[0]);
  let covered = 0;
  let [cs, ce] = [null, null];
  for (const [a, b] of iv) {
    if (ce === null || a > ce) {
      if (ce !== null) covered += ce - cs;
      [cs, ce] = [a, b];
    } else if (b > ce) {
      ce = b;
    }
  }
  if (ce !== null) covered += ce - cs;
  return Math.max(0, sp.duration - covered);
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
    g.self += sp.selfTime;
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
    n.self += sp.selfTime;
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
