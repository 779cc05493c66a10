// The branch table: one row per branch, sortable by any column, the best
// branch by the chosen metric marked; a row opens the branch's latest node.

import { bestRow, defaultMetric, metricTags, sortRows } from '../branches.js';
import { h, replaceChildren } from '../dom.js';
import { diffRows, formatMetric, scalarsUrl, shortNumber } from '../format.js';
import { branchColor } from '../layout.js';

/** Height of a row and of the header, in CSS pixels (fixed: the view draws only the rows in view). */
const ROW_PX = 25;
const HEADER_PX = 40;
/** Rows drawn beyond the view on each side. */
const ROW_MARGIN = 8;

function changedText(changed) {
  return diffRows(changed).map((r) => `${r.short} ${shortNumber(r.old)} → ${shortNumber(r.new)}`).join(', ');
}

function columns(tags) {
  const cols = [
    { id: 'branch', label: 'branch' },
    { id: 'start', label: 'start', num: true, title: 'The step the branch starts at' },
    { id: 'parent', label: 'parent', title: 'The node the branch was restored from' },
    { id: 'changed', label: 'changed from parent', title: 'Hyperparameters in force on the branch that differ from its parent node' },
  ];
  for (const t of tags) {
    cols.push({ id: `${t}:latest`, label: `${t}`, sub: 'latest', num: true, title: `${t}: latest value on the branch` });
    cols.push({ id: `${t}:best`, label: `${t}`, sub: 'best', num: true, title: `${t}: best value on the branch` });
  }
  cols.push({ id: 'last', label: 'last step', num: true });
  cols.push({ id: 'state', label: 'state' });
  return cols;
}

function metricCell(point) {
  if (!point) return h('td', { class: 'num' }, '–');
  return h('td', { class: 'num', title: point.step !== null && point.step !== undefined ? `step ${point.step}` : null }, formatMetric(point.value));
}

/**
 * The table's view. `render(tree)` draws it when its rows, sort, metric or
 * selection changed (through the app's Redraw).
 */
export class BranchTableView {
  /**
   * @param {HTMLElement} el
   * @param {object} p
   * @param {import('../redraw.js').Redraw} p.redraw
   * @param {string} p.tbRoot TensorBoard's root URL, for the Scalars links
   * @param {(row: object) => void} p.onOpen
   */
  constructor(el, { redraw, tbRoot, onOpen }) {
    this.el = el;
    this.redraw = redraw;
    this.tbRoot = tbRoot;
    this.onOpen = onOpen;
    this.sort = { column: null, descending: false };
    this.metric = null;
    this.rows = [];
    this.selectedBranch = null;
    el.addEventListener('click', (e) => {
      const th = e.target.closest && e.target.closest('th[data-col]');
      if (th) {
        this.sortBy(th.getAttribute('data-col'));
        return;
      }
      if (e.target.closest && e.target.closest('a')) return; // the Scalars link
      const tr = e.target.closest && e.target.closest('tr[data-branch]');
      if (tr) this.open(tr.getAttribute('data-branch'));
    });
    el.addEventListener('keydown', (e) => {
      if (e.key !== 'Enter' && e.key !== ' ') return;
      const th = e.target.closest && e.target.closest('th[data-col]');
      const tr = e.target.closest && e.target.closest('tr[data-branch]');
      if (!th && !tr) return;
      e.preventDefault();
      if (th) this.sortBy(th.getAttribute('data-col'));
      else this.open(tr.getAttribute('data-branch'));
    });
  }

  open(name) {
    const row = this.rows.find((r) => r.branch === name);
    if (row) this.onOpen(row);
  }

  sortBy(column) {
    if (this.sort.column === column) this.sort = { column, descending: !this.sort.descending };
    else this.sort = { column, descending: false };
    this.draw(true);
  }

  /** @param {object[]} rows from branches.branchRows */
  render(rows, selectedBranch) {
    this.rows = rows;
    // What the rows hold, taken once per answer (not per sort or scroll).
    this.rowsKey = JSON.stringify(rows);
    this.selectedBranch = selectedBranch;
    this.draw(false);
  }

  draw(force) {
    const rows = this.rows;
    const tags = metricTags(rows);
    if (this.metric === null || !tags.includes(this.metric)) this.metric = defaultMetric(tags);
    const deps = [this.rowsKey, this.sort, this.metric, this.selectedBranch];
    if (force) this.redraw.forget('branch-table');
    this.redraw.ifChanged('branch-table', deps, () => this.build(tags));
  }

  build(tags) {
    const t0 = performance.now();
    const rows = this.rows;
    const cols = columns(tags);
    const best = this.metric ? bestRow(rows, this.metric) : null;
    this.best = best;
    this.tags = tags;
    this.sorted = this.sort.column ? sortRows(rows, this.sort.column, this.sort.descending) : rows;

    const picker = h('select', { class: 'best-metric', 'aria-label': 'Best branch by metric' },
      tags.map((t) => h('option', { value: t, text: t })));
    if (this.metric) picker.value = this.metric;
    picker.addEventListener('change', () => {
      this.metric = picker.value;
      this.draw(true);
    });
    const head = h('tr', {}, cols.map((c) => {
      const on = this.sort.column === c.id;
      return h('th', {
        'data-col': c.id,
        class: c.num ? 'num sortable' : 'sortable',
        tabindex: '0',
        title: c.title ? `${c.title}; click to sort` : 'Click to sort',
        'aria-sort': on ? (this.sort.descending ? 'descending' : 'ascending') : 'none',
      }, c.label, c.sub ? h('span', { class: 'sub' }, c.sub) : null,
      on ? h('span', { class: 'sort-mark', 'aria-hidden': 'true' }, this.sort.descending ? ' ▼' : ' ▲') : null);
    }));
    this.body = h('tbody', {});
    this.window = null;
    replaceChildren(
      this.el,
      h('div', { class: 'table-tools' },
        h('span', {}, `${rows.length} branch${rows.length === 1 ? '' : 'es'}`),
        h('label', { class: 'best-label' }, 'Best by ', picker),
        best ? h('span', { class: 'muted' }, `: ${best.branch}`) : null),
      h('table', { class: 'branch-table' },
        h('colgroup', {}, cols.map((c) => h('col', { class: `col-${c.kind || (c.num ? 'num' : c.id)}` }))),
        h('thead', {}, head), this.body),
    );
    if (!this.scrollBound) {
      this.scrollBound = true;
      this.el.addEventListener('scroll', () => this.drawRows(false), { passive: true });
    }
    this.drawRows(true);
    globalThis.__retuneLastTableMs = performance.now() - t0;
    globalThis.__retuneTableRows = this.sorted.length;
    globalThis.__retuneTableDraws = (globalThis.__retuneTableDraws || 0) + 1;
  }

  /**
   * Puts in the page only the rows in and near the view (like the tree's
   * culling), with spacers above and below for the scroll bar: 1,000
   * branches cost what the view shows.
   */
  drawRows(force) {
    const total = this.sorted ? this.sorted.length : 0;
    const height = this.el.clientHeight || 600;
    const top = Math.max(0, this.el.scrollTop - HEADER_PX);
    const first = Math.max(0, Math.floor(top / ROW_PX) - ROW_MARGIN);
    const last = Math.min(total, Math.ceil((top + height) / ROW_PX) + ROW_MARGIN);
    const w = this.window;
    if (!force && w && first >= w.first && last <= w.last) return;
    const from = Math.max(0, first - ROW_MARGIN);
    const to = Math.min(total, last + ROW_MARGIN);
    this.window = { first: from, last: to };
    const span = this.tags.length * 2 + 6;
    const spacer = (n) => (n > 0 ? h('tr', { class: 'spacer', 'aria-hidden': 'true' }, h('td', { colspan: span, style: `height:${n * ROW_PX}px` })) : null);
    const frag = document.createDocumentFragment();
    const before = spacer(from);
    if (before) frag.appendChild(before);
    for (let i = from; i < to; i++) frag.appendChild(this.rowElement(this.sorted[i]));
    const after = spacer(total - to);
    if (after) frag.appendChild(after);
    replaceChildren(this.body, frag);
  }

  rowElement(r) {
    const changed = changedText(r.changed);
    const isBest = this.best === r;
    const cells = [
      h('td', { class: 'branch-cell' },
        h('span', { class: 'chip', style: `background:${branchColor(r.color)}`, 'aria-hidden': 'true' }),
        h('span', { class: 'branch-name', title: r.branch }, r.trial !== null ? `${r.branch} (trial ${r.trial})` : r.branch),
        r.trialBest ? h('span', { class: 'trial-best', title: `The best trial of search ${r.search}` }, '★ best trial') : null,
        isBest ? h('span', { class: 'best-badge', title: `Best branch by ${this.metric}` }, '★ best') : null,
        h('a', { class: 'row-scalars', href: scalarsUrl(this.tbRoot, [r.run]), target: '_top', rel: 'noopener', title: `Open ${r.branch} in Scalars` }, '↗')),
      h('td', { class: 'num' }, String(r.start)),
      h('td', { title: r.parent || null }, r.parent ?? '–'),
      h('td', { class: 'changed', title: changed || null }, changed || '–'),
    ];
    for (const t of this.tags) {
      const m = r.metrics[t];
      cells.push(metricCell(m && m.latest));
      cells.push(metricCell(m && m.best));
    }
    cells.push(h('td', { class: 'num' }, String(r.last)));
    cells.push(h('td', { class: `state state-${r.state.replace(/\s+/g, '-')}` }, r.state));
    const cls = ['branch-row', isBest ? 'best' : null, r.trial !== null ? 'trial-row' : null, r.branch === this.selectedBranch ? 'selected' : null].filter(Boolean).join(' ');
    return h('tr', { class: cls, 'data-branch': r.branch, tabindex: '0', title: `Open ${r.branch}'s latest node (${r.latestNode})` }, cells);
  }
}
