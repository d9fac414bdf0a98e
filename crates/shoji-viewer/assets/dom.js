// DOM helpers. Every string that reaches the page goes through a text node or a property that
// takes text (textContent, value, title): span names and attribute values come from untrusted
// guests, so nothing here ever hands a string to an API that parses markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function fill(el, props, children) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.setAttribute('class', v);
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k in el && !(el instanceof SVGElement)) el[k] = v;
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** h('div', {class: 'x'}, 'text', child...) builds an HTML element; strings become text nodes. */
export function h(tag, props, ...children) {
  return fill(document.createElement(tag), props, children);
}

/** Like h, in the SVG namespace. */
export function s(tag, props, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), props, children);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** Microseconds as the shortest readable duration: 950µs, 12.3ms, 1.52s, 2m3s. */
export function fmtDuration(us) {
  if (!Number.isFinite(us)) return '';
  const a = Math.abs(us);
  const sign = us < 0 ? '-' : '';
  if (a < 1000) return `${sign}${Math.round(a)}µs`;
  if (a < 1e6) return `${sign}${trim(a / 1000)}ms`;
  if (a < 60e6) return `${sign}${trim(a / 1e6)}s`;
  const m = Math.floor(a / 60e6);
  return `${sign}${m}m${Math.round((a - m * 60e6) / 1e6)}s`;
}

function trim(x) {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

/** The browser's UTC offset at a moment, as `UTC+09:00` (`UTC` when zero). */
export function fmtZone(us) {
  const off = -new Date(us / 1000).getTimezoneOffset();
  if (off === 0) return 'UTC';
  const a = Math.abs(off);
  return `UTC${off < 0 ? '-' : '+'}${String(Math.floor(a / 60)).padStart(2, '0')}:${String(a % 60).padStart(2, '0')}`;
}

/**
 * Unix microseconds as the browser's local date and time with milliseconds; with
 * `{zone: true}`, followed by the UTC offset, so a shared screenshot says which clock it is.
 */
export function fmtTime(us, { zone = false } = {}) {
  const d = new Date(us / 1000);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  const t = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  return zone ? `${t} ${fmtZone(us)}` : t;
}

/** The span sources Shoji stamps, their colours and legend labels. */
export const SOURCES = [
  ['runtime', 'host runtime'],
  ['hypervisor', 'hypervisor and guest boot'],
  ['agent', 'guest agent'],
  ['other', 'other'],
];

export function sourceClass(source) {
  return SOURCES.some(([k]) => k === source) ? `src-${source}` : 'src-other';
}

export function legend() {
  return h('div', { class: 'legend', 'aria-label': 'span colours by source' },
    SOURCES.map(([k, label]) => h('span', { class: 'legend-item' },
      h('span', { class: `swatch ${sourceClass(k)}` }), label)));
}

/** An in-app link: a real href (open in new tab, copy, share) that navigates without reload. */
export function link(href, props, ...children) {
  return h('a', {
    href,
    ...props,
    onclick: (e) => {
      if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      window.dispatchEvent(new CustomEvent('shoji:navigate', { detail: href }));
    },
  }, ...children);
}

export function errorBox(err) {
  return h('div', { class: 'error', role: 'alert' }, String(err && err.message ? err.message : err));
}

/** How self time is computed, for tooltips and the statistics legend. */
export const SELF_TIME_HELP =
  'Self time: the span\'s duration minus the time during which at least one child (or work a ' +
  'child started, until its last descendant ends) was running. Children that overlap each ' +
  'other are counted once, so concurrent work is not subtracted twice. Concurrent spans each ' +
  'keep their own self time, so self times can add up to more than the trace\'s duration, and ' +
  'the Self % column to more than 100%. Computed by the server, as `shoji trace summary` does.';
