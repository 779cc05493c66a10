// The selected node's card: what it is, its branch's loss, its metrics and
// hyperparameters, what changed from its parent, and the checkpoints that a
// restore can go back to, and its note. Built in parts, one function each.

import { h, replaceChildren } from '../dom.js';
import { diffRows, formatMetric, formatSteps, formatValue, metricRows } from '../format.js';
import { renderNoNode, section } from './common.js';
import { renderChart } from './loss_chart.js';
import { NoteEditor } from './note.js';

function headPart(n, p) {
  const header = h(
    'div',
    { class: 'node-head' },
    h('span', { class: 'chip', style: `background:${p.color}`, 'aria-hidden': 'true' }),
    h('h2', { class: 'node-id' }, n.id),
    n.current ? h('span', { class: 'badge' }, 'current') : null,
  );
  const parentLink = n.parent
    ? h('button', { type: 'button', class: 'link-button', onclick: () => p.onSelect(n.parent) }, n.parent)
    : null;
  const meta = h(
    'div',
    { class: 'meta' },
    h('span', {}, `branch ${n.branch}`),
    ' · ',
    h('span', {}, formatSteps(n.start_step, n.end_step)),
    parentLink ? [' · parent ', parentLink] : null,
  );
  // The full label, never cut: the tree's cards may shorten it.
  const label = h('div', { class: 'node-label' }, n.label);
  const scalars = h(
    'a',
    { class: 'branch-link', href: p.branchHref, target: '_top', rel: 'noopener' },
    `Open branch ${n.branch} in Scalars ↗`,
  );
  return [header, label, meta, scalars];
}

function chartPart(n, p) {
  const chart = p.details && p.details.series
    ? renderChart(p.details.series, {
        start: n.start_step,
        end: n.end_step,
        checkpoints: (p.branch && p.branch.checkpoints) || n.checkpoints,
        color: p.color,
      })
    : h('div', { class: 'chart-placeholder' }, p.detailsError ? `Loss not available: ${p.detailsError}` : 'Loading loss…');
  const legend = h(
    'div',
    { class: 'chart-legend' },
    h('span', { class: 'key key-loss', style: `border-color:${p.color}` }), 'loss ',
    h('span', { class: 'key key-val', style: `border-color:${p.color}` }), 'val_loss ',
    h('span', { class: 'key key-ckpt' }), 'checkpoint ',
    h('span', { class: 'key key-band' }), 'this node',
  );
  return h('div', { class: 'chart-box' }, chart, legend);
}

function metricsPart(n) {
  const rows = metricRows(n.metrics);
  if (!rows.length) return h('p', { class: 'muted' }, 'No metrics logged in this node yet.');
  const cell = (point) =>
    h('td', { class: 'num', title: point && point.step !== null ? `step ${point.step}` : null }, point ? formatMetric(point.value) : '–');
  return h(
    'table',
    { class: 'kv metrics' },
    h('thead', {}, h('tr', {}, h('th', {}, 'metric'), h('th', {}, 'train'), h('th', {}, 'val'))),
    h('tbody', {}, rows.map((r) => h('tr', {}, h('td', {}, r.name), cell(r.train), cell(r.val)))),
  );
}

function hyperparametersPart(n) {
  const diff = n.diff || {};
  const names = Object.keys(n.hyperparameters || {}).sort();
  if (!names.length) return h('p', { class: 'muted' }, 'No hyperparameters recorded.');
  return h(
    'table',
    { class: 'kv hps' },
    h(
      'tbody',
      {},
      names.map((name) =>
        h(
          'tr',
          { class: Object.prototype.hasOwnProperty.call(diff, name) ? 'changed' : null },
          h('td', {}, name),
          h('td', { class: 'num' }, formatValue(n.hyperparameters[name])),
        ),
      ),
    ),
  );
}

function diffPart(n) {
  const changes = diffRows(n.diff || {});
  if (changes.length) {
    return h('ul', { class: 'diff' }, changes.map((r) =>
      h('li', {}, h('span', { class: 'hp-name' }, r.name), ' ',
        h('span', { class: 'old' }, formatValue(r.old)), ' → ',
        h('span', { class: 'new' }, formatValue(r.new)))));
  }
  const text = !n.parent
    ? 'The root node: the values training started with.'
    : n.restore ? `Same values as ${n.parent} (restored, nothing changed).` : 'Nothing changed.';
  return h('p', { class: 'muted' }, text);
}

function checkpointsPart(n, p) {
  const steps = [...(n.checkpoints || [])].sort((a, b) => a - b);
  if (!steps.length) return [h('p', { class: 'muted' }, 'No checkpoint in this node yet.'), p.restoreMessage];
  const button = (step) =>
    h(
      'button',
      {
        type: 'button',
        class: 'restore',
        disabled: !p.writable,
        title: p.writable ? `Restore ${n.branch} at step ${step} and train on as a new branch` : 'The logdir is not writable',
        onclick: () => p.onRestore(step),
      },
      `Restore step ${step}`,
    );
  return [
    h('label', { class: 'then-set' }, h('span', {}, 'Then set (optional)'), p.restoreInput),
    h('ul', { class: 'checkpoints' }, steps.map((step) => h('li', {}, h('span', { class: 'ckpt-step' }, `step ${step}`), button(step)))),
    p.restoreMessage,
  ];
}

function configPart(n, p) {
  if (!n.has_config && !(p.details && p.details.config)) return null;
  const body = p.details
    ? h('pre', { class: 'config' }, p.details.config ? JSON.stringify(p.details.config, null, 2) : 'No configuration was captured at this node.')
    : h('p', { class: 'muted' }, 'Loading…');
  return h('details', { class: 'config-details', open: p.configOpen, ontoggle: (e) => p.onConfigToggle(e.target.open) },
    h('summary', {}, 'Captured configuration'), body);
}

/**
 * The selected node's card.
 *
 * @param {HTMLElement} el
 * @param {object} p
 * @param {object} p.node the node as in the tree answer
 * @param {object|null} p.details the node route's answer (config, series), or null while loading
 * @param {string|null} p.detailsError
 * @param {object} p.branch the node's branch (tree answer)
 * @param {string} p.color
 * @param {string} p.branchHref link to the branch in Scalars
 * @param {boolean} p.writable
 * @param {HTMLElement} p.restoreInput the persistent "then set" input
 * @param {HTMLElement} p.restoreMessage the persistent message line
 * @param {NoteEditor} [p.note] the persistent note editor
 * @param {() => void} [p.onSaveNote]
 * @param {(step: number) => void} p.onRestore
 * @param {(id: string) => void} p.onSelect
 * @param {boolean} p.configOpen
 * @param {(open: boolean) => void} p.onConfigToggle
 */
export function renderNodeCard(el, p) {
  const n = p.node;
  replaceChildren(
    el,
    ...headPart(n, p),
    p.note ? section('Note', p.note.show(n, { writable: p.writable, onSave: p.onSaveNote })) : null,
    chartPart(n, p),
    section('Latest metrics', metricsPart(n)),
    section('Hyperparameters', hyperparametersPart(n)),
    section('Changed from parent', diffPart(n)),
    section('Checkpoints', ...checkpointsPart(n, p)),
    configPart(n, p),
  );
}

/**
 * The node card of the side panel, with the inputs that outlive its
 * redraws (the "then set" field of a restore, its message line).
 */
export class NodeCardView {
  constructor(el, redraw) {
    this.el = el;
    this.redraw = redraw;
    this.restoreInput = h('input', {
      type: 'text',
      class: 'restore-hps',
      placeholder: 'learning_rate=1e-4, momentum=0.8',
      autocomplete: 'off',
      spellcheck: 'false',
      'aria-label': 'Hyperparameters to set after the restore (optional)',
    });
    this.restoreMessage = h('div', { class: 'restore-message', role: 'status' });
    this.note = new NoteEditor();
  }

  /** Shows only `text` (nothing selected, loading). */
  empty(text) {
    this.redraw.ifChanged('node-card', ['empty', text], () => renderNoNode(this.el, text));
  }

  /** Draws the card of `p.node` (see renderNodeCard) when what it shows changed. */
  render(p) {
    const deps = [p.node, p.branch, p.color, p.details, p.detailsError, p.writable, p.branchHref];
    this.redraw.ifChanged('node-card', deps, () => this.note.keepFocus(() =>
      renderNodeCard(this.el, { ...p, restoreInput: this.restoreInput, restoreMessage: this.restoreMessage, note: this.note })));
  }
}
