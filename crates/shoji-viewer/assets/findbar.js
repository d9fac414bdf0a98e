// The trace page's find box: matches highlighted in the timeline, a count, and next/previous
// (Enter and Shift+Enter in the box, n and N elsewhere, / to focus). The language is find.js's.

import { h } from './dom.js';
import { parseQuery, findSpans } from './find.js';

export class FindBar {
  /**
   * opts.onChange(text): the query changed (the page keeps it in the URL); opts.onGo(span):
   * show this match; opts.onMatches(Set|null): highlight these spans.
   */
  constructor(text, opts) {
    this.opts = opts;
    this.trace = null;
    this.matches = [];
    this.current = -1;
    this.input = h('input', {
      class: 'find-input',
      type: 'text',
      value: text,
      placeholder: 'find: text, key=value, >10ms   (/)',
      'aria-label': 'find spans',
      oninput: () => { clearTimeout(this.timer); this.timer = setTimeout(() => this.run(true), 120); },
      onkeydown: (e) => {
        if (e.key === 'Enter') { e.preventDefault(); clearTimeout(this.timer); this.run(false); this.step(e.shiftKey ? -1 : 1); }
        if (e.key === 'Escape') this.input.blur();
      },
    });
    this.count = h('span', { class: 'find-count', 'aria-live': 'polite' });
    this.error = h('span', { class: 'find-error', role: 'alert' });
    this.el = h('div', { class: 'find-bar' },
      this.input,
      h('button', { class: 'find-prev', title: 'previous match (Shift+Enter, N)', onclick: () => this.step(-1) }, '↑'),
      h('button', { class: 'find-next', title: 'next match (Enter, n)', onclick: () => this.step(1) }, '↓'),
      this.count, this.error,
      h('span', { class: 'muted find-help' }, 'words are ANDed: text in names, attributes and events · key=value · >10ms <=2s'));
  }

  setTrace(trace) {
    this.trace = trace;
    const cur = this.matches[this.current];
    this.run(false);
    if (cur) this.current = this.matches.findIndex((sp) => sp.id === cur.id);
    this.showCount();
  }

  run(changed) {
    if (!this.trace) return;
    const text = this.input.value;
    if (changed) this.opts.onChange(text.trim());
    if (text === this.lastText && this.lastTrace === this.trace) return;
    [this.lastText, this.lastTrace] = [text, this.trace];
    const q = parseQuery(text);
    this.error.textContent = q.error || '';
    this.matches = findSpans(this.trace, q.terms);
    this.current = -1;
    this.showCount();
    this.opts.onMatches(this.matchSet());
  }

  matchSet() {
    return this.input.value.trim() ? new Set(this.matches) : null;
  }

  step(dir) {
    if (!this.matches.length) return;
    const n = this.matches.length;
    this.current = this.current < 0 ? (dir > 0 ? 0 : n - 1) : (this.current + dir + n) % n;
    this.showCount();
    this.opts.onGo(this.matches[this.current]);
  }

  showCount() {
    const n = this.matches.length;
    this.count.textContent = !this.input.value.trim() ? ''
      : n === 0 ? 'no match' : this.current >= 0 ? `${this.current + 1} of ${n}` : n === 1 ? '1 match' : `${n} matches`;
  }

  destroy() {
    clearTimeout(this.timer);
  }

  focus() {
    this.input.focus();
    this.input.select();
  }
}
