// The tab's frame: toolbar (experiment picker, trainer pill, links),
// banners, the tree pane and the side panel. Text only through
// textContent / setAttribute (see dom.js).

import { h, replaceChildren, s } from '../dom.js';
import { makeHalo } from './tree.js';

/** Builds the tab's frame once; returns the elements the app fills in. */
export function buildShell(root) {
  const picker = h('select', { id: 'retune-experiment', class: 'picker', 'aria-label': 'Experiment' });
  const trainer = h('span', { class: 'trainer-pill level-none', role: 'status' });
  const scalars = h('a', { class: 'scalars-link', target: '_top', rel: 'noopener', hidden: true }, 'Open in Scalars ↗');
  const stop = h('button', { type: 'button', class: 'stop-button', hidden: true, title: 'End the training after its current batch (with a final checkpoint)' }, 'Stop');
  const toolbar = h(
    'header',
    { class: 'toolbar' },
    h('span', { class: 'title' }, 'Retune'),
    h('label', { class: 'picker-label', for: 'retune-experiment' }, 'Experiment'),
    picker,
    trainer,
    stop,
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
    collapse: tool('Collapse', 'Collapse runs of changes into groups again'),
  };
  const treeTools = h('div', { class: 'tree-tools' }, tools.fit, tools.zoomIn, tools.zoomOut, tools.current, tools.collapse);
  const legend = h('div', { class: 'legend' });
  const treeMessage = h('div', { class: 'tree-message', hidden: true });
  const viewButton = (mode, label, title) =>
    h('button', { type: 'button', class: 'view-button', 'data-mode': mode, title, 'aria-pressed': 'false' }, label);
  const views = {
    tree: viewButton('tree', 'Tree', 'The experiment tree: one card per node'),
    steps: viewButton('steps', 'Steps', 'On the step axis, like Scalars: one lane per branch'),
    table: viewButton('table', 'Branches', 'A table of the branches: sort by any column to find the best'),
  };
  const viewSwitch = h('div', { class: 'view-switch', role: 'group', 'aria-label': 'View' }, Object.values(views));
  const tableBox = h('div', { class: 'table-box', hidden: true, role: 'region', 'aria-label': 'Branches' });
  const treePane = h('section', { class: 'tree-pane' }, svg, tableBox, viewSwitch, treeTools, legend, treeMessage);

  const nodeCard = h('section', { class: 'card node-card', 'aria-label': 'Selected node' });
  const formCard = h('section', { class: 'card form-card', 'aria-label': 'Set hyperparameters' });
  const logCard = h('section', { class: 'card log-card', 'aria-label': 'Trainer' });
  const searchCard = h('section', { class: 'card search-card', 'aria-label': 'Search' });
  const side = h('aside', { class: 'side' }, nodeCard, searchCard, formCard, logCard);

  const app = h('div', { class: 'retune-app' }, toolbar, banners, h('main', { class: 'body' }, treePane, side));
  replaceChildren(root, app);
  return {
    app, picker, trainer, stop, scalars, banners, svg, layer, links, halo, nodes, tools, views, tableBox, treeTools,
    legend, treeMessage, treePane, nodeCard, searchCard, formCard, logCard,
  };
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

