// The viewer's router: every view is a URL (/search?…, /trace/<id>?…, /compare/<a>/<b>), so
// any view can be shared; the History API moves between them without reloading.

import { h, clear, link } from './dom.js';
import { searchPage } from './search.js';
import { tracePage } from './trace.js';
import { comparePage } from './compare.js';
import { depsPage } from './deps.js';

const root = document.getElementById('app');
let current = null;

function nav(url) {
  history.pushState(null, '', url);
  route();
}

function route() {
  if (current) current.destroy();
  current = null;
  const { pathname, searchParams } = new URL(window.location.href);
  const parts = pathname.split('/').filter(Boolean).map(decodeURIComponent);
  window.scrollTo(0, 0);
  if (parts.length === 0 || (parts[0] === 'search' && parts.length === 1)) {
    current = searchPage(root, searchParams, nav);
  } else if (parts[0] === 'trace' && parts.length === 2) {
    current = tracePage(root, parts[1], searchParams, nav);
  } else if (parts[0] === 'dependencies' && parts.length === 1) {
    current = depsPage(root, searchParams, nav);
  } else if (parts[0] === 'compare' && parts.length <= 3) {
    current = comparePage(root, parts[1], parts[2], nav);
  } else {
    clear(root).append(h('h1', {}, 'Not found'),
      h('p', {}, `No view at ${pathname}. `, link('/search', {}, 'Search for traces')));
    current = { destroy() {} };
  }
}

window.addEventListener('popstate', route);
window.addEventListener('shoji:navigate', (e) => nav(e.detail));
document.getElementById('nav').append(
  link('/search', { class: 'brand' }, 'Shoji'),
  link('/search', {}, 'Search'),
  link('/compare', {}, 'Compare'),
  link('/dependencies', {}, 'System architecture'),
  h('span', { class: 'keys', title: 'keyboard' }, 'keys: ↑↓ j k move · ←→ h l fold · / find · n N next, previous match · c critical path · Esc close'));
route();
