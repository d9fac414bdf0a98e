// Find in a trace: the query language of the trace page's find box. No DOM here.
//
// Words are ANDed. A word is one of:
//   text       any span whose name, service, span id, attribute key or value, or event field
//              contains it (case-insensitive); "quoted text" may hold spaces
//   key=value  an attribute (span or process) whose value, as text, is exactly `value`
//   >10ms      a duration filter: >, >=, <, <= with a number and a unit (us, µs, ms, s, m, h)

const UNITS = { us: 1, µs: 1, ms: 1e3, s: 1e6, m: 60e6, h: 3600e6 };

/** "1.5ms" as microseconds, or null. */
export function parseDuration(text) {
  const m = /^(\d+(?:\.\d+)?)(us|µs|ms|s|m|h)$/.exec(text.trim());
  return m ? Number(m[1]) * UNITS[m[2]] : null;
}

function words(text) {
  const out = [];
  const re = /"([^"]*)"|(\S+)/g;
  let m;
  while ((m = re.exec(text))) out.push(m[1] !== undefined ? { quoted: m[1] } : { word: m[2] });
  return out;
}

/**
 * Parses a query. Returns {terms, error}: error is a message for the first word that looks like
 * a filter but is not a valid one (`>10 parsecs`); terms is what could be parsed.
 */
export function parseQuery(text) {
  const terms = [];
  let error = null;
  for (const w of words(text || '')) {
    if (w.quoted !== undefined) {
      if (w.quoted) terms.push({ kind: 'text', text: w.quoted.toLowerCase() });
      continue;
    }
    const cmp = /^(>=|<=|>|<)(.*)$/.exec(w.word);
    if (cmp) {
      const us = parseDuration(cmp[2]);
      if (us === null) error = error || `${w.word}: a duration filter is like >10ms or <=2s (units us, ms, s, m, h)`;
      else terms.push({ kind: 'duration', op: cmp[1], us });
      continue;
    }
    const eq = w.word.indexOf('=');
    if (eq > 0) terms.push({ kind: 'attr', key: w.word.slice(0, eq), value: w.word.slice(eq + 1) });
    else terms.push({ kind: 'text', text: w.word.toLowerCase() });
  }
  return { terms, error };
}

const text = (v) => (typeof v === 'string' ? v : JSON.stringify(v));

function hasText(sp, needle) {
  if (sp.name.toLowerCase().includes(needle) || sp.service.toLowerCase().includes(needle) || sp.id.includes(needle)) return true;
  for (const t of sp.tags) if (t.key.toLowerCase().includes(needle) || text(t.value).toLowerCase().includes(needle)) return true;
  for (const l of sp.logs) for (const f of l.fields || []) if (text(f.value).toLowerCase().includes(needle)) return true;
  return false;
}

function attrIs(sp, key, value) {
  if (key in sp.attrs) return text(sp.attrs[key]) === value;
  const pt = (sp.process.tags || []).find((t) => t.key === key);
  if (pt) return text(pt.value) === value;
  return (key === 'service' || key === 'service.name') && sp.service === value;
}

function durationIs(sp, op, us) {
  switch (op) {
    case '>': return sp.duration > us;
    case '>=': return sp.duration >= us;
    case '<': return sp.duration < us;
    default: return sp.duration <= us;
  }
}

/** Whether a span matches every term. */
export function spanMatches(sp, terms) {
  for (const t of terms) {
    if (t.kind === 'text' && !hasText(sp, t.text)) return false;
    if (t.kind === 'attr' && !attrIs(sp, t.key, t.value)) return false;
    if (t.kind === 'duration' && !durationIs(sp, t.op, t.us)) return false;
  }
  return true;
}

/** The spans matching a parsed query, in tree order; none for an empty query. */
export function findSpans(trace, terms) {
  if (!terms.length) return [];
  return trace.spans.filter((sp) => spanMatches(sp, terms));
}
