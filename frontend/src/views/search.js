// The search card: "Search from here" (the form that writes a search from the
// selected node's checkpoint) and, for each search of the experiment, its
// progress and its trials ranked. The list is drawn again when the searches
// change; the form is built when it is opened, so a refresh keeps what the
// person typed.

import { h, replaceChildren } from '../dom.js';
import { formatMetric, shortName } from '../format.js';
import {
  MODES, PRUNERS, SAMPLERS, THEN, defaultDimension, loggedMetrics, progressText, rankedTrials, searchList,
  searchable, settingsText,
} from '../search.js';

const DEFAULT_TRIALS = 8;
const DEFAULT_STEPS = 200;

function select(name, options, value, label) {
  return h('select', { name, 'aria-label': label }, options.map((o) => h('option', { value: o, text: o, selected: o === value ? true : null })));
}

function field(label, input) {
  return h('label', { class: 'search-field' }, h('span', {}, label), input);
}

/** The checkpoint steps a search can start from: the node's, else its branch's within the node. */
export function fromSteps(node, branch) {
  const own = Array.isArray(node.checkpoints) ? node.checkpoints : [];
  if (own.length) return [...own].sort((a, b) => a - b);
  const all = (branch && Array.isArray(branch.checkpoints)) ? branch.checkpoints : [];
  const end = node.end_step ?? Infinity;
  return all.filter((s) => s >= node.start_step && s <= end).sort((a, b) => a - b);
}

export class SearchPanelView {
  /**
   * @param {HTMLElement} el the card
   * @param {object} redraw the app's Redraw
   * @param {{onSubmit: Function, onOpenBranch: Function}} handlers
   */
  constructor(el, redraw, { onSubmit, onOpenBranch }) {
    this.el = el;
    this.redraw = redraw;
    this.onSubmit = onSubmit;
    this.onOpenBranch = onOpenBranch;
    this.open = h('button', { type: 'button', class: 'search-open', onclick: () => this.openForm() }, 'Search from here');
    this.hint = h('p', { class: 'muted search-hint' });
    this.formBox = h('div', { class: 'search-form-box', hidden: true });
    this.message = h('p', { class: 'search-message', role: 'status', 'aria-live': 'polite' });
    this.list = h('div', { class: 'search-list' });
    replaceChildren(el, h('h2', {}, 'Search'), h('div', { class: 'search-actions' }, this.open, this.hint), this.formBox, this.message, this.list);
    this.node = null;
    this.inputs = null;
  }

  /** Draws the card for `tree` and the selected `node` (as the server sent it) on `branch`. */
  render(tree, node, branch, writable) {
    this.tree = tree;
    this.node = node;
    this.branch = branch;
    const steps = node ? fromSteps(node, branch) : [];
    this.open.disabled = !node || !writable || !steps.length;
    this.hint.textContent = !node
      ? 'Select a node to search from its checkpoint.'
      : !writable ? 'The logdir is read-only here.'
        : !steps.length ? `Node ${node.id} has no checkpoint to start trials from.`
          : `Try settings from ${node.id}'s checkpoint (${steps.map(String).join(', ')}).`;
    const searches = searchList(tree);
    this.redraw.ifChanged('searches', [searches], () => this.renderList(searches));
  }

  renderList(searches) {
    replaceChildren(this.list, searches.map((e) => this.searchElement(e)));
  }

  searchElement(e) {
    const trials = rankedTrials(e);
    const source = e.source && e.source.branch ? ` from ${e.source.branch}@${e.source.step}` : '';
    const objective = e.objective && e.objective.metric ? ` · ${e.objective.metric} (${e.objective.mode || 'min'})` : '';
    const rows = trials.map((t) => h('tr', { class: ['trial-row', `trial-${t.state}`, t.best ? 'best' : null], 'data-trial': t.number },
      h('td', { class: 'num' }, t.rank === null ? '–' : String(t.rank)),
      h('td', { class: 'num' }, String(t.number)),
      h('td', { class: 'num', title: t.value === null ? null : String(t.value) }, t.value === null ? '–' : formatMetric(t.value)),
      h('td', { class: `state state-${t.state}`, title: t.lost ? 'its process died or stopped; it ran again as another trial' : null },
        `${t.lost ? 'lost' : t.state}${t.best ? ' ★' : ''}${t.baseline ? ' (base)' : ''}${t.retryOf !== null ? ` (retry of ${t.retryOf})` : ''}`),
      h('td', { class: 'settings', title: settingsText(t.hyperparameters) }, settingsText(t.hyperparameters, shortName) || '–'),
      h('td', {}, t.branch
        ? h('button', { type: 'button', class: 'link-button trial-link', onclick: () => this.onOpenBranch(t.branch) }, t.branch)
        : '–'),
      h('td', { class: 'worker' }, t.worker || '–')));
    return h('div', { class: `search-entry search-${e.state || 'running'}`, 'data-search': e.id },
      h('h3', {}, `${e.id} · ${e.state || 'running'}${source}${objective}`),
      h('p', { class: 'search-progress' }, progressText(e)),
      e.outcome ? h('p', { class: 'muted' }, String(typeof e.outcome === 'string' ? e.outcome : JSON.stringify(e.outcome))) : null,
      h('div', { class: 'trials-box' }, h('table', { class: 'kv trials' },
        h('thead', {}, h('tr', {}, ['#', 'trial', 'value', 'state', 'settings', 'branch', 'worker'].map((c) => h('th', {}, c)))),
        h('tbody', {}, rows))));
  }

  /** Builds the form for the selected node. */
  openForm() {
    const node = this.node;
    if (!node) return;
    const status = (this.tree && this.tree.status) || {};
    const current = status.hyperparameters || node.hyperparameters || {};
    const steps = fromSteps(node, this.branch);
    const metrics = loggedMetrics(this.tree);
    const metric = metrics.includes('val_loss') ? 'val_loss' : metrics.includes('loss') ? 'loss' : metrics[0] || '';
    const space = {};
    const rows = searchable(current).map((name) => {
      const d = defaultDimension(name, (node.hyperparameters || {})[name] ?? current[name]);
      const bool = d.kind === 'choices' && d.choices === 'true, false';
      const inputs = {
        on: h('input', { type: 'checkbox', name: `vary-${name}`, 'aria-label': `vary ${name}`, checked: d.on }),
        kind: bool ? null : select(`kind-${name}`, ['range', 'choices'], d.kind, `${name}: range or choices`),
        low: h('input', { type: 'text', name: `low-${name}`, value: d.low ?? '', size: 5, 'aria-label': `${name} low` }),
        high: h('input', { type: 'text', name: `high-${name}`, value: d.high ?? '', size: 5, 'aria-label': `${name} high` }),
        log: h('input', { type: 'checkbox', name: `log-${name}`, checked: Boolean(d.log), 'aria-label': `${name} log scale` }),
        step: h('input', { type: 'text', name: `step-${name}`, value: d.step ?? '', size: 3, placeholder: 'step', 'aria-label': `${name} step` }),
        choices: h('input', { type: 'text', name: `choices-${name}`, value: d.choices ?? '', size: 12, placeholder: 'a, b, c', 'aria-label': `${name} choices` }),
        bool,
      };
      space[name] = inputs;
      const rangeBox = bool ? null : h('span', { class: 'range-inputs' }, inputs.low, '–', inputs.high, h('label', {}, inputs.log, 'log'), inputs.step);
      const choiceBox = h('span', { class: 'choice-inputs' }, inputs.choices);
      if (inputs.kind) {
        // Only the inputs of the kind chosen are shown.
        const sync = () => {
          rangeBox.hidden = inputs.kind.value !== 'range';
          choiceBox.hidden = inputs.kind.value === 'range';
        };
        inputs.kind.addEventListener('change', sync);
        sync();
      }
      return h('tr', { 'data-name': name }, h('td', { class: 'space-name' }, h('label', {}, inputs.on, name)),
        h('td', {}, inputs.kind || 'choices ', rangeBox, choiceBox));
    });
    this.inputs = {
      space,
      from: select('from', steps.map(String), String(steps[steps.length - 1]), 'checkpoint step to start from'),
      trials: h('input', { type: 'number', name: 'trials', min: 1, value: DEFAULT_TRIALS, 'aria-label': 'trials' }),
      steps: h('input', { type: 'number', name: 'steps_per_trial', min: 1, value: DEFAULT_STEPS, 'aria-label': 'steps per trial' }),
      metric: select('metric', metrics, metric, 'objective metric'),
      mode: select('mode', ['auto', ...MODES], 'auto', 'objective mode'),
      sampler: select('sampler', SAMPLERS, 'tpe', 'sampler'),
      pruner: select('pruner', PRUNERS, 'none', 'pruner'),
      then: select('then', THEN, 'best', 'then'),
    };
    const i = this.inputs;
    replaceChildren(this.formBox, h('form', { class: 'search-form', novalidate: true, onsubmit: (ev) => { ev.preventDefault(); this.onSubmit(); } },
      h('p', { class: 'muted' }, `From ${node.branch}, node ${node.id}. Trial 0 runs the source's own settings (the baseline).`),
      field('from step', i.from),
      h('table', { class: 'kv space' }, h('thead', {}, h('tr', {}, h('th', {}, 'vary'), h('th', {}, 'values'))), h('tbody', {}, rows)),
      h('div', { class: 'search-row' }, field('trials', i.trials), field('steps per trial', i.steps)),
      h('div', { class: 'search-row' }, field('objective', i.metric), field('mode', i.mode)),
      h('div', { class: 'search-row' }, field('sampler', i.sampler), field('pruner', i.pruner), field('then', i.then)),
      h('div', { class: 'form-buttons' },
        h('button', { type: 'submit', class: 'search-submit' }, 'Start search'),
        h('button', { type: 'button', onclick: () => this.close() }, 'Cancel'))));
    this.formNode = { branch: node.branch, id: node.id };
    this.formBox.hidden = false;
    this.message.textContent = '';
  }

  close() {
    this.formBox.hidden = true;
    replaceChildren(this.formBox);
    this.inputs = null;
  }

  /** The form's raw fields, for search.buildSearchRequest. */
  values() {
    const i = this.inputs;
    if (!i) return { space: {} };
    const space = {};
    for (const [name, x] of Object.entries(i.space)) {
      space[name] = {
        on: x.on.checked,
        kind: x.bool ? 'choices' : x.kind.value,
        low: x.low.value, high: x.high.value, log: x.log.checked, step: x.step.value, choices: x.choices.value,
      };
    }
    return {
      space,
      from: { branch: this.formNode.branch, step: Number(i.from.value) },
      trials: i.trials.value,
      steps_per_trial: i.steps.value,
      metric: i.metric.value,
      mode: i.mode.value === 'auto' ? null : i.mode.value,
      sampler: i.sampler.value,
      pruner: i.pruner.value,
      then: i.then.value,
    };
  }
}
