// The Retune tab's views: DOM built from data. Every string from the server
// goes in through textContent / text nodes / setAttribute (see dom.js).

import { chartModel } from './chart.js';
import { h, replaceChildren, s } from './dom.js';
import {
  diffRows,
  formatClock,
  formatMetric,
  formatSteps,
  formatValue,
  inputKind,
  metricRows,
} from './format.js';
import { NODE_H, NODE_W, branchColor, contains, cull, truncate, viewRect } from './layout.js';

// ---------------------------------------------------------------------------
// The page's frame.

/** Builds the tab's frame once; returns the elements the app fills in. */
export function buildShell(root) {
  const picker = h('select', { id: 'retune-experiment', class: 'picker', 'aria-label': 'Experiment' });
  const trainer = h('span', { class: 'trainer-pill level-none', role: 'status' });
  const scalars = h('a', { class: 'scalars-link', target: '_top', rel: 'noopener', hidden: true }, 'Open in Scalars ↗');
  const toolbar = h(
    'header',
    { class: 'toolbar' },
    h('span', { class: 'title' }, 'Retune'),
    h('label', { class: 'picker-label', for: 'retune-experiment' }, 'Experiment'),
    picker,
    trainer,
    h('span', { class: 'spacer' }),
    scalars,
  );
  const banners = h('div', { class: 'banners', 'aria-live': 'polite' });

  const links = s('g', { class: 'links' });
  const halo = makeHalo();
  const nodes = s('g', { class: 'nodes' });
  const layer = s('g', { class: 'viewport' }, links, halo, nodes);
  const svg = s('svg', { class: 'tree', role: 'group', 'aria-label': 'Experiment tree' }, layer);
  const tool = (label, title) => h('button', { type: 'button', class: 'tool', title, 'aria-label': title }, label);
  const tools = {
    fit: tool('Fit', 'Fit the tree to the view'),
    zoomIn: tool('+', 'Zoom in'),
    zoomOut: tool('−', 'Zoom out'),
    current: tool('Current', 'Show the current node'),
  };
  const treeTools = h('div', { class: 'tree-tools' }, tools.fit, tools.zoomIn, tools.zoomOut, tools.current);
  const legend = h('div', { class: 'legend' });
  const treeMessage = h('div', { class: 'tree-message', hidden: true });
  const treePane = h('section', { class: 'tree-pane' }, svg, treeTools, legend, treeMessage);

  const nodeCard = h('section', { class: 'card node-card', 'aria-label': 'Selected node' });
  const formCard = h('section', { class: 'card form-card', 'aria-label': 'Set hyperparameters' });
  const logCard = h('section', { class: 'card log-card', 'aria-label': 'Trainer' });
  const side = h('aside', { class: 'side' }, nodeCard, formCard, logCard);

  const app = h('div', { class: 'retune-app' }, toolbar, banners, h('main', { class: 'body' }, treePane, side));
  replaceChildren(root, app);
  return { app, picker, trainer, scalars, banners, svg, layer, links, halo, nodes, tools, legend, treeMessage, nodeCard, formCard, logCard };
}

/** Fills the experiment picker, keeping the element (and its focus). */
export function renderPicker(select, experiments, selected) {
  const names = experiments.map((e) => e.name);
  const current = [...select.options].map((o) => o.value);
  if (names.length !== current.length || names.some((n, i) => n !== current[i])) {
    replaceChildren(
      select,
      experiments.map((e) => h('option', { value: e.name, text: e.name === '.' ? '. (the logdir)' : e.name })),
    );
  }
  if (selected !== null && select.value !== selected) select.value = selected;
  select.disabled = experiments.length === 0;
}

export function renderTrainerPill(el, summary) {
  el.setAttribute('class', `trainer-pill level-${summary.level}`);
  replaceChildren(el, h('span', { class: 'dot', 'aria-hidden': 'true' }), summary.text);
}

/** Banners: `{kind: 'info'|'ok'|'error'|'warn', text, action?: {label, onclick}, onclose?}`. */
export function renderBanners(el, items) {
  replaceChildren(
    el,
    items.map((b) =>
      h(
        'div',
        { class: `banner banner-${b.kind}`, role: b.kind === 'error' ? 'alert' : 'status' },
        b.kind === 'info' ? h('span', { class: 'spinner', 'aria-hidden': 'true' }) : null,
        h('span', { class: 'banner-text' }, b.text),
        b.action ? h('button', { type: 'button', class: 'link-button', onclick: b.action.onclick }, b.action.label) : null,
        b.onclose
          ? h('button', { type: 'button', class: 'close', 'aria-label': 'Dismiss', onclick: b.onclose }, '×')
          : null,
      ),
    ),
  );
}

// ---------------------------------------------------------------------------
// The tree.

let nodeTemplate = null;

function template() {
  if (nodeTemplate) return nodeTemplate;
  // As few elements per node as possible: a 1,000-node tree is 5,000 elements.
  // The tooltip (<title>) is added on first hover, the selection halo is one
  // shared element.
  nodeTemplate = s(
    'g',
    { class: 'node', tabindex: '0', role: 'button' },
    s('rect', { class: 'card', width: NODE_W, height: NODE_H, rx: 4 }),
    s('rect', { class: 'stripe', width: 5, height: NODE_H, rx: 2 }),
    s('text', { class: 'label', x: 13, y: 17 }),
    s('text', { class: 'sub', x: 13, y: 32 }),
  );
  return nodeTemplate;
}

/** The tooltip of a node's <g>, made when the pointer first rests on it. */
export function ensureTooltip(g, node) {
  if (!g || g.querySelector('title')) return;
  const steps = formatSteps(node.start_step, node.end_step);
  g.insertBefore(s('title', { text: `${node.label}\n${node.branch} · ${steps}${node.current ? ' · current' : ''}` }), g.firstChild);
}

/** The one selection halo, drawn around the card at `item` (or hidden). */
export function placeHalo(halo, item) {
  if (!item) {
    halo.setAttribute('visibility', 'hidden');
    return;
  }
  halo.setAttribute('visibility', 'visible');
  halo.setAttribute('transform', `translate(${item.x - 5},${item.y - 5})`);
}

export function makeHalo() {
  return s('rect', { class: 'halo', width: NODE_W + 10, height: NODE_H + 10, rx: 8, visibility: 'hidden', 'pointer-events': 'none' });
}

/** What a node's element shows; an element whose key is unchanged is kept. */
function nodeKey(item) {
  const n = item.node;
  return `${item.x},${item.y},${item.color},${n.current ? 1 : 0},${n.start_step},${n.end_step},${n.branch}\u0000${n.label}`;
}

/** A node's <g>, cloned from the template and filled in with setAttribute/textContent. */
function nodeElement(item, selectedId) {
  const n = item.node;
  const g = template().cloneNode(true);
  g.setAttribute('transform', `translate(${item.x},${item.y})`);
  g.setAttribute('data-id', n.id);
  const steps = formatSteps(n.start_step, n.end_step);
  g.setAttribute('aria-label', `${n.label} (${n.branch}, ${steps})${n.current ? ', current' : ''}`);
  const [card, stripe, label, sub] = g.childNodes;
  card.setAttribute('stroke', item.color);
  stripe.setAttribute('fill', item.color);
  label.textContent = truncate(n.label, 29);
  sub.textContent = truncate(`${n.branch} · ${steps}`, 34);
  if (n.current) {
    g.setAttribute('class', 'node current');
    card.setAttribute('fill', item.color);
    g.appendChild(s('circle', { class: 'current-dot', cx: NODE_W - 10, cy: 10, r: 4, fill: item.color }));
  }
  if (n.id === selectedId) g.classList.add('selected');
  return g;
}

/**
 * Draws a laid-out tree into the `links` and `nodes` layers of the SVG. Only
 * what is in or near the view is in the page (see layout.cull): `update()`
 * after each pan or zoom mounts the nodes that come into view and drops
 * those far out of it. Edges are one <path> per colour and style.
 */
export class TreeView {
  constructor(linksLayer, nodesLayer) {
    this.linksLayer = linksLayer;
    this.nodesLayer = nodesLayer;
    this.layout = null;
    this.mounted = new Map();
    this.keys = new Map(); // id -> nodeKey() of the element drawn
    this.rendered = null; // the world rectangle drawn last
    this.selected = null;
  }

  /**
   * Shows a new layout. Nodes drawn before that look the same in the new
   * one (same place, label, steps...) keep their element, and with it the
   * focus and the pointer's hover; the others are dropped.
   */
  setLayout(layout) {
    this.layout = layout;
    this.rendered = null;
    const keep = new Map();
    for (const [id, g] of this.mounted) {
      const item = layout ? layout.index.get(id) : null;
      if (item && this.keys.get(id) === nodeKey(item)) keep.set(id, g);
      else {
        g.remove();
        this.keys.delete(id);
      }
    }
    this.mounted = keep;
    this.linksLayer.textContent = '';
  }

  /**
   * Draws what the view `t` of size `width` x `height` shows, with one view
   * of margin around it; does nothing while the view stays inside what was
   * drawn last at about the same scale.
   */
  update(t, width, height, force = false) {
    if (!this.layout) return;
    const view = viewRect(t, width, height, 0);
    const r = this.rendered;
    if (!force && r && contains(r.rect, view) && t.k > r.k * 0.6) return;
    const t0 = performance.now();
    const rect = viewRect(t, width, height, 1);
    this.rendered = { rect, k: t.k };
    const { nodes, links } = cull(this.layout, rect);

    const groups = new Map();
    for (const link of links) {
      const key = `${link.color}|${link.restore ? 1 : 0}`;
      if (!groups.has(key)) groups.set(key, { color: link.color, restore: link.restore, d: [] });
      groups.get(key).d.push(link.path);
    }
    const linkFrag = document.createDocumentFragment();
    for (const g of groups.values()) {
      linkFrag.appendChild(s('path', { class: g.restore ? 'link restore' : 'link', d: g.d.join(''), stroke: g.color }));
    }
    replaceChildren(this.linksLayer, linkFrag);

    const keep = new Set();
    const frag = document.createDocumentFragment();
    for (const item of nodes) {
      keep.add(item.id);
      if (this.mounted.has(item.id)) continue;
      const g = nodeElement(item, this.selected);
      this.mounted.set(item.id, g);
      this.keys.set(item.id, nodeKey(item));
      frag.appendChild(g);
    }
    for (const [id, g] of this.mounted) {
      if (keep.has(id)) continue;
      if (g.contains(document.activeElement)) continue; // never drop the focused node
      g.remove();
      this.mounted.delete(id);
      this.keys.delete(id);
    }
    this.nodesLayer.appendChild(frag);
    // For benchmarks: the cost of the last (re)draw and how many nodes are in the page.
    globalThis.__retuneLastUpdateMs = performance.now() - t0;
    globalThis.__retuneMountedNodes = this.mounted.size;
  }

  /** Marks `id` as the selected node. */
  select(id) {
    const old = this.selected !== null ? this.mounted.get(this.selected) : null;
    if (old) old.classList.remove('selected');
    this.selected = id;
    const g = id !== null ? this.mounted.get(id) : null;
    if (g) g.classList.add('selected');
  }

  /** The <g> of a node, if it is drawn. */
  element(id) {
    return this.mounted.get(id) || null;
  }
}

/** A legend of the branches: colour chip and name; a click selects the branch's first node. */
export function renderLegend(el, branches, onPick, limit = 12) {
  const shown = branches.slice(0, limit);
  replaceChildren(
    el,
    shown.map((b) =>
      h(
        'button',
        { type: 'button', class: 'legend-item', title: `Branch ${b.name}: show its first node`, onclick: () => onPick(b) },
        h('span', { class: 'chip', style: `background:${branchColor(b.color)}` }),
        h('span', { class: 'legend-name' }, b.name),
      ),
    ),
    branches.length > limit ? h('span', { class: 'legend-more' }, `+${branches.length - limit} more`) : null,
  );
  el.hidden = branches.length === 0;
}

// ---------------------------------------------------------------------------
// The selected node.

/** The small loss chart as an <svg>. */
export function renderChart(series, { start, end, checkpoints, color, width = 340, height = 130 }) {
  const m = chartModel(series, { width, height, start, end, checkpoints });
  const svg = s('svg', {
    class: 'chart',
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': 'Loss of the branch up to this node, with checkpoints',
  });
  if (m.empty) {
    svg.appendChild(s('text', { class: 'chart-empty', x: width / 2, y: height / 2, 'text-anchor': 'middle' }, 'No loss logged yet'));
    return svg;
  }
  const { plot } = m;
  if (m.band) {
    svg.appendChild(
      s('rect', { class: 'band', x: m.band.x0, y: plot.top, width: Math.max(1, m.band.x1 - m.band.x0), height: plot.bottom - plot.top }),
    );
  }
  for (const t of m.yTicks) {
    svg.appendChild(s('line', { class: 'grid', x1: plot.left, x2: plot.right, y1: t.y, y2: t.y }));
    svg.appendChild(s('text', { class: 'tick', x: plot.left - 4, y: t.y + 3, 'text-anchor': 'end' }, t.label));
  }
  svg.appendChild(s('line', { class: 'axis', x1: plot.left, x2: plot.right, y1: plot.bottom, y2: plot.bottom }));
  for (const t of m.xTicks) {
    svg.appendChild(s('text', { class: 'tick', x: t.anchor === 'end' ? plot.right : t.x, y: plot.bottom + 13, 'text-anchor': t.anchor }, t.label));
  }
  for (const c of m.markers) {
    svg.appendChild(
      s(
        'path',
        { class: 'ckpt', d: `M${c.x},${plot.bottom - 7}l-3.5,6h7z` },
        s('title', { text: `checkpoint at step ${c.step}` }),
      ),
    );
  }
  for (const line of m.lines) {
    svg.appendChild(
      s('path', { class: line.dashed ? 'series val' : 'series', d: line.path, stroke: color },
        s('title', { text: line.name })),
    );
    svg.appendChild(s('circle', { class: 'series-end', cx: line.last.x, cy: line.last.y, r: 2.5, fill: color }));
  }
  return svg;
}

function section(title, ...children) {
  return h('div', { class: 'section' }, h('h3', {}, title), ...children);
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
 * @param {(step: number) => void} p.onRestore
 * @param {(id: string) => void} p.onSelect
 * @param {boolean} p.configOpen
 * @param {(open: boolean) => void} p.onConfigToggle
 */
export function renderNodeCard(el, p) {
  const n = p.node;
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
  const label = h('div', { class: 'node-label' }, n.label);
  const scalars = h(
    'a',
    { class: 'branch-link', href: p.branchHref, target: '_top', rel: 'noopener' },
    `Open branch ${n.branch} in Scalars ↗`,
  );

  // Chart.
  let chart;
  if (p.details && p.details.series) {
    chart = renderChart(p.details.series, {
      start: n.start_step,
      end: n.end_step,
      checkpoints: (p.branch && p.branch.checkpoints) || n.checkpoints,
      color: p.color,
    });
  } else {
    chart = h('div', { class: 'chart-placeholder' }, p.detailsError ? `Loss not available: ${p.detailsError}` : 'Loading loss…');
  }
  const chartLegend = h(
    'div',
    { class: 'chart-legend' },
    h('span', { class: 'key key-loss', style: `border-color:${p.color}` }), 'loss ',
    h('span', { class: 'key key-val', style: `border-color:${p.color}` }), 'val_loss ',
    h('span', { class: 'key key-ckpt' }), 'checkpoint ',
    h('span', { class: 'key key-band' }), 'this node',
  );

  // Metrics.
  const rows = metricRows(n.metrics);
  const metrics = rows.length
    ? h(
        'table',
        { class: 'kv metrics' },
        h('thead', {}, h('tr', {}, h('th', {}, 'metric'), h('th', {}, 'train'), h('th', {}, 'val'))),
        h(
          'tbody',
          {},
          rows.map((r) =>
            h(
              'tr',
              {},
              h('td', {}, r.name),
              h('td', { class: 'num', title: r.train && r.train.step !== null ? `step ${r.train.step}` : null }, r.train ? formatMetric(r.train.value) : '–'),
              h('td', { class: 'num', title: r.val && r.val.step !== null ? `step ${r.val.step}` : null }, r.val ? formatMetric(r.val.value) : '–'),
            ),
          ),
        ),
      )
    : h('p', { class: 'muted' }, 'No metrics logged in this node yet.');

  // Hyperparameters, with what changed from the parent.
  const diff = n.diff || {};
  const hpNames = Object.keys(n.hyperparameters || {}).sort();
  const hps = hpNames.length
    ? h(
        'table',
        { class: 'kv hps' },
        h(
          'tbody',
          {},
          hpNames.map((name) => {
            const changed = Object.prototype.hasOwnProperty.call(diff, name);
            return h(
              'tr',
              { class: changed ? 'changed' : null },
              h('td', {}, name),
              h('td', { class: 'num' }, formatValue(n.hyperparameters[name])),
            );
          }),
        ),
      )
    : h('p', { class: 'muted' }, 'No hyperparameters recorded.');
  const changes = diffRows(diff);
  const diffView = changes.length
    ? h('ul', { class: 'diff' }, changes.map((r) =>
        h('li', {}, h('span', { class: 'hp-name' }, r.name), ' ',
          h('span', { class: 'old' }, formatValue(r.old)), ' → ',
          h('span', { class: 'new' }, formatValue(r.new)))))
    : h('p', { class: 'muted' }, n.parent ? (n.restore ? `Same values as ${n.parent} (restored, nothing changed).` : 'Nothing changed.') : 'The root node: the values training started with.');

  // Checkpoints.
  const steps = [...(n.checkpoints || [])].sort((a, b) => a - b);
  const restore = steps.length
    ? [
        h('label', { class: 'then-set' }, h('span', {}, 'Then set (optional)'), p.restoreInput),
        h(
          'ul',
          { class: 'checkpoints' },
          steps.map((step) =>
            h(
              'li',
              {},
              h('span', { class: 'ckpt-step' }, `step ${step}`),
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
              ),
            ),
          ),
        ),
        p.restoreMessage,
      ]
    : [h('p', { class: 'muted' }, 'No checkpoint in this node yet.'), p.restoreMessage];

  // Configuration.
  let config = null;
  if (n.has_config || (p.details && p.details.config)) {
    const body = p.details
      ? h('pre', { class: 'config' }, p.details.config ? JSON.stringify(p.details.config, null, 2) : 'No configuration was captured at this node.')
      : h('p', { class: 'muted' }, 'Loading…');
    config = h('details', { class: 'config-details', open: p.configOpen, ontoggle: (e) => p.onConfigToggle(e.target.open) },
      h('summary', {}, 'Captured configuration'), body);
  }

  replaceChildren(
    el,
    header,
    label,
    meta,
    scalars,
    h('div', { class: 'chart-box' }, chart, chartLegend),
    section('Latest metrics', metrics),
    section('Hyperparameters', hps),
    section('Changed from parent', diffView),
    section('Checkpoints', ...restore),
    config,
  );
}

export function renderNoNode(el, text) {
  replaceChildren(el, h('p', { class: 'muted' }, text));
}

// ---------------------------------------------------------------------------
// The hyperparameter form.

/**
 * Builds the form for the hyperparameters in force. Returns `{form, fields}`
 * where `fields` maps a name to its <input>.
 */
export function buildForm(el, { hyperparameters, onSubmit, onReset, onInput, error, message, writable }) {
  const names = Object.keys(hyperparameters).sort();
  const fields = new Map();
  const rows = names.map((name) => {
    const value = hyperparameters[name];
    const kind = inputKind(name, value);
    const id = `hp-${name}`;
    let input;
    if (kind === 'bool') {
      input = h('input', { type: 'checkbox', id, name, checked: Boolean(value), oninput: () => onInput(name) });
    } else if (kind === 'number') {
      input = h('input', {
        type: 'text',
        inputmode: 'decimal',
        autocomplete: 'off',
        spellcheck: 'false',
        id,
        name,
        value: value === null ? '' : formatValue(value),
        placeholder: value === null ? 'null (off)' : null,
        oninput: () => onInput(name),
      });
    } else {
      input = h('input', { type: 'text', id, name, value: formatValue(value), readonly: true, class: 'fixed', title: 'Fixed when the optimizer is built' });
    }
    fields.set(name, { input, kind });
    return h('div', { class: `field field-${kind}` }, h('label', { for: id }, name), input);
  });
  const submit = h('button', { type: 'submit', class: 'primary', disabled: !writable }, 'Apply');
  const reset = h('button', { type: 'button', onclick: onReset }, 'Reset');
  const form = h(
    'form',
    { class: 'hp-form', novalidate: true, onsubmit: (e) => { e.preventDefault(); onSubmit(); } },
    h('div', { class: 'fields' }, rows),
    error,
    h('div', { class: 'actions' }, submit, reset),
    message,
  );
  replaceChildren(
    el,
    h('h2', {}, 'Set hyperparameters'),
    h('p', { class: 'hint' }, 'Values in force now. Applied at the next batch after the trainer reads retune.json.'),
    form,
  );
  return { form, fields };
}

// ---------------------------------------------------------------------------
// The trainer's log: recent changes and errors.

export function renderLog(el, tree, summary) {
  const status = (tree && tree.status) || null;
  const trainer = (tree && tree.trainer) || null;
  const applied = status && Array.isArray(status.applied) ? status.applied.slice(-5).reverse() : [];
  const errors = status && Array.isArray(status.errors) ? status.errors.slice(-5).reverse() : [];
  const facts = [];
  if (status && typeof status.pid === 'number') facts.push(`pid ${status.pid}`);
  if (status && status.node) facts.push(`node ${status.node}`);
  if (trainer && typeof trainer.age_s === 'number') facts.push(`heartbeat ${Math.max(0, trainer.age_s).toFixed(1)} s ago`);
  replaceChildren(
    el,
    h('h2', {}, 'Trainer'),
    h('p', { class: `trainer-line level-${summary.level}` }, h('span', { class: 'dot', 'aria-hidden': 'true' }), summary.text),
    facts.length ? h('p', { class: 'muted small' }, facts.join(' · ')) : null,
    section(
      'Last errors',
      errors.length
        ? h('ul', { class: 'log errors' }, errors.map((e) =>
            h('li', {}, h('span', { class: 'time' }, formatClock(e.time)), ' ', h('span', { class: 'msg' }, String(e.message ?? '')))))
        : h('p', { class: 'muted' }, 'None.'),
    ),
    section(
      'Recent changes',
      applied.length
        ? h('ul', { class: 'log applied' }, applied.map((a) =>
            h('li', {}, h('span', { class: 'time' }, formatClock(a.time)), ' ',
              typeof a.step === 'number' ? h('span', { class: 'step' }, `@ ${a.step}`) : null, ' ',
              h('span', { class: 'msg' }, String(a.what ?? a.kind ?? '')))))
        : h('p', { class: 'muted' }, 'None yet.'),
    ),
  );
}
