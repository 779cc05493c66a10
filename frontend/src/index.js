// The Retune tab. TensorBoard loads this ES module into the tab's iframe
// (`/data/plugin_entry.html?name=retune`, base URL `plugin/retune/`) and
// calls `render()`.

import css from './style.css';
import { h } from './dom.js';
import { parseAssignments, scalarsUrl, tensorboardRoot, trainerSummary, validateForm, formatValue, sameValue } from './format.js';
import { NODE_H, NODE_W, branchColor, layoutTree } from './layout.js';
import { Api, experimentRuns, requestProgress } from './model.js';
import { Sequencer, sequenced } from './sequence.js';
import {
  buildForm,
  buildShell,
  ensureTooltip,
  placeHalo,
  renderBanners,
  renderLegend,
  renderLog,
  renderNoNode,
  renderNodeCard,
  renderPicker,
  renderTrainerPill,
  TreeView,
} from './views.js';
import { PanZoom, initialTransform } from './zoom.js';

/** How often the tab asks for fresh data, in milliseconds. */
export const REFRESH_MS = 3000;
const STORAGE_KEY = 'tb-retune.experiment';
/** Below this scale the cards' text is hidden (it would be unreadable). */
const TEXT_MIN_SCALE = 0.4;

/** What the drawing of a tree depends on: its nodes and branches. */
function treeSignature(tree) {
  return JSON.stringify([tree.nodes || [], tree.branches || []]);
}

class RetuneApp {
  constructor(root, api) {
    this.api = api;
    this.seq = new Sequencer();
    this.ui = buildShell(root);
    this.state = {
      experiments: [],
      experiment: null,
      tree: null,
      treeText: '',
      layout: null,
      selected: null,
      nodeKey: '',
      details: null,
      detailsError: null,
      loadError: null,
      requests: [], // written requests, {kind, id?, values?, experiment, sentAt, what, state, node?, message?}
      configOpen: false,
      formKey: '',
      formDirty: new Set(),
    };
    this.treeView = new TreeView(this.ui.links, this.ui.nodes);
    this.viewFor = new Map(); // experiment -> transform, so switching back keeps the zoom
    this.tbRoot = tensorboardRoot(window.location.href);
    this.timer = 0;

    this.zoom = new PanZoom(this.ui.svg, this.ui.layer, (t) => {
      this.ui.svg.classList.toggle('lod-low', t.k < TEXT_MIN_SCALE);
      if (this.state.experiment !== null) this.viewFor.set(this.state.experiment, t);
      const [w, hgt] = this.zoom.size();
      this.treeView.update(t, w, hgt);
    });

    // Persistent inputs, kept across re-renders of their cards.
    this.restoreInput = h('input', {
      type: 'text',
      class: 'restore-hps',
      placeholder: 'learning_rate=1e-4, momentum=0.8',
      autocomplete: 'off',
      spellcheck: 'false',
      'aria-label': 'Hyperparameters to set after the restore (optional)',
    });
    this.restoreMessage = h('div', { class: 'restore-message', role: 'status' });
    this.formError = h('div', { class: 'form-error', role: 'alert' });
    this.formMessage = h('div', { class: 'form-message', role: 'status' });

    this.ui.picker.addEventListener('change', () => this.selectExperiment(this.ui.picker.value));
    this.ui.nodes.addEventListener('click', (e) => {
      const g = e.target.closest && e.target.closest('g.node');
      if (g) this.selectNode(g.getAttribute('data-id'));
    });
    this.ui.nodes.addEventListener('pointerover', (e) => {
      const g = e.target.closest && e.target.closest('g.node');
      const item = g && this.state.layout ? this.state.layout.index.get(g.getAttribute('data-id')) : null;
      if (item) ensureTooltip(g, item.node);
    });
    this.ui.nodes.addEventListener('keydown', (e) => {
      if (e.key !== 'Enter' && e.key !== ' ') return;
      const g = e.target.closest && e.target.closest('g.node');
      if (!g) return;
      e.preventDefault();
      this.selectNode(g.getAttribute('data-id'));
    });
    this.ui.tools.fit.addEventListener('click', () => this.state.layout && this.zoom.fit(this.state.layout.bounds));
    this.ui.tools.zoomIn.addEventListener('click', () => this.zoom.zoomBy(1.4));
    this.ui.tools.zoomOut.addEventListener('click', () => this.zoom.zoomBy(1 / 1.4));
    this.ui.tools.current.addEventListener('click', () => this.showCurrent());
    this.visible = true;
    document.addEventListener('visibilitychange', () => {
      this.visible = document.visibilityState === 'visible';
      if (this.visible) this.refresh();
    });
    if (typeof IntersectionObserver === 'function') {
      new IntersectionObserver((entries) => {
        const shown = entries[entries.length - 1].isIntersecting;
        const was = this.visible;
        this.visible = shown && document.visibilityState !== 'hidden';
        if (this.visible && !was) this.refresh();
      }).observe(this.ui.app);
    }
    renderNoNode(this.ui.nodeCard, 'Loading…');
  }

  // -------------------------------------------------------------------------
  // Data.

  start() {
    this.refresh();
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), REFRESH_MS);
  }

  /** One refresh: experiments, then the selected experiment's tree and node. */
  async refresh() {
    clearTimeout(this.timer);
    // While TensorBoard shows another tab, the frame is hidden: ask nothing.
    if (!this.visible && this.state.tree) {
      this.schedule();
      return;
    }
    try {
      await this.loadExperiments();
      if (this.state.experiment !== null) await this.loadTree();
    } finally {
      this.schedule();
    }
  }

  async loadExperiments() {
    const r = await sequenced(this.seq, 'experiments', {}, () => this.api.experiments(), () => ({}));
    if (r.stale) return;
    if (!r.ok) {
      this.state.loadError = r.error.message;
      this.renderChrome();
      return;
    }
    const body = r.value;
    this.state.loadError = null;
    const experiments = Array.isArray(body.experiments) ? body.experiments : [];
    this.state.experiments = experiments;
    const names = experiments.map((e) => e.name);
    if (this.state.experiment === null || !names.includes(this.state.experiment)) {
      let remembered = null;
      try {
        remembered = window.localStorage.getItem(STORAGE_KEY);
      } catch {
        remembered = null;
      }
      const pick = names.includes(remembered) ? remembered : names[0] ?? null;
      if (pick !== this.state.experiment) this.switchTo(pick);
    }
    this.renderChrome();
  }

  async loadTree() {
    const experiment = this.state.experiment;
    const r = await sequenced(this.seq, 'tree', { experiment }, () => this.api.tree(experiment),
      () => ({ experiment: this.state.experiment }));
    if (r.stale) return;
    if (!r.ok) {
      this.state.loadError = `Cannot load the tree of ${experiment}: ${r.error.message}`;
      this.renderChrome();
      return;
    }
    const answer = r.value;
    this.state.loadError = null;
    // Redraw only when what the tree shows changed (not the trainer's age).
    const signature = treeSignature(answer.body);
    const changed = signature !== this.state.treeText;
    this.state.tree = answer.body;
    this.state.treeText = signature;
    this.trackRequests();
    if (changed) this.renderTreeView();
    if (this.state.selected === null || !this.state.layout.index.has(this.state.selected)) {
      const current = (answer.body.nodes || []).find((n) => n.current);
      const first = current || (answer.body.nodes || [])[answer.body.nodes.length - 1];
      this.state.selected = first ? first.id : null;
      this.markSelected();
    }
    this.renderChrome();
    this.renderSide();
    await this.loadNode();
  }

  async loadNode(force = false) {
    const experiment = this.state.experiment;
    const id = this.state.selected;
    if (experiment === null || id === null || !this.state.layout) return;
    const item = this.state.layout.index.get(id);
    if (!item) return;
    // Ask again only when the node changed (a running node grows).
    const key = `${experiment}\u0000${id}\u0000${item.node.end_step}\u0000${JSON.stringify(item.node.metrics)}`;
    if (!force && key === this.state.nodeKey && this.state.details) return;
    const r = await sequenced(this.seq, 'node', { experiment, node: id }, () => this.api.node(experiment, id),
      () => ({ experiment: this.state.experiment, node: this.state.selected }));
    if (r.stale) return;
    if (!r.ok) {
      this.state.detailsError = r.error.message;
      this.renderSide();
      return;
    }
    this.state.details = r.value;
    this.state.detailsError = null;
    this.state.nodeKey = key;
    this.renderSide();
  }

  // -------------------------------------------------------------------------
  // Person's actions.

  switchTo(name) {
    this.state.experiment = name;
    this.state.tree = null;
    this.state.treeText = '';
    this.state.layout = null;
    this.state.selected = null;
    this.state.details = null;
    this.state.detailsError = null;
    this.state.nodeKey = '';
    this.state.formKey = '';
    this.state.formDirty = new Set();
    this.formError.textContent = '';
    this.formMessage.textContent = '';
    this.restoreMessage.textContent = '';
    this.seq.cancel('tree');
    this.seq.cancel('node');
    this.treeView.setLayout(null);
    placeHalo(this.ui.halo, null);
    renderNoNode(this.ui.nodeCard, 'Loading…');
    this.nodeCardKey = '';
    this.ui.formCard.textContent = '';
    this.ui.logCard.textContent = '';
  }

  selectExperiment(name) {
    if (name === this.state.experiment) return;
    try {
      window.localStorage.setItem(STORAGE_KEY, name);
    } catch {
      // Storage may be off; the choice then lasts for this page only.
    }
    this.switchTo(name);
    this.renderChrome();
    this.refresh();
  }

  selectNode(id, { reveal = false } = {}) {
    if (!this.state.layout || !this.state.layout.index.has(id)) return;
    if (id !== this.state.selected) {
      this.state.selected = id;
      this.state.details = null;
      this.state.detailsError = null;
      this.state.nodeKey = '';
      this.restoreMessage.textContent = '';
      this.seq.cancel('node');
      this.markSelected();
      this.renderSide();
    }
    if (reveal) {
      const item = this.state.layout.index.get(id);
      this.zoom.center(item.x + NODE_W / 2, item.y + NODE_H / 2);
    }
    this.loadNode();
  }

  showCurrent() {
    const tree = this.state.tree;
    const current = tree && (tree.nodes || []).find((n) => n.current);
    if (current) this.selectNode(current.id, { reveal: true });
    else if (this.state.selected) this.selectNode(this.state.selected, { reveal: true });
  }

  async restore(step) {
    const experiment = this.state.experiment;
    const item = this.state.layout && this.state.layout.index.get(this.state.selected);
    if (!item) return;
    const branch = item.node.branch;
    const status = this.state.tree && this.state.tree.status;
    const parsed = parseAssignments(this.restoreInput.value, status && status.hyperparameters ? status.hyperparameters : null);
    if (parsed.error) {
      this.setMessage(this.restoreMessage, 'error', `Not written: ${parsed.error}`);
      return;
    }
    this.setMessage(this.restoreMessage, 'info', `Writing a restore of ${branch} at step ${step}…`);
    let answer;
    try {
      answer = await this.api.restore(experiment, branch, step, parsed.values);
    } catch (e) {
      if (experiment === this.state.experiment) this.setMessage(this.restoreMessage, 'error', `Not written: ${e.message}`);
      return;
    }
    const id = answer.id || (answer.written && answer.written.restore && answer.written.restore.id);
    const extra = Object.keys(parsed.values).length
      ? `, then ${Object.entries(parsed.values).map(([k, v]) => `${k}=${formatValue(v)}`).join(', ')}`
      : '';
    const what = `restore ${branch} @ ${step}${extra}`;
    this.state.requests.push({ kind: 'restore', id, experiment, sentAt: Date.now() / 1000, what, state: 'waiting' });
    if (experiment === this.state.experiment) {
      this.setMessage(this.restoreMessage, 'ok', `Wrote to retune.json: ${what} (request ${id}). The trainer will start a new branch.`);
    }
    this.renderBanners();
    this.refresh();
  }

  async submitForm() {
    const experiment = this.state.experiment;
    const status = this.state.tree && this.state.tree.status;
    const current = (status && status.hyperparameters) || {};
    const fields = {};
    for (const [name, f] of this.formFields || []) {
      if (f.kind === 'fixed') continue;
      fields[name] = f.kind === 'bool' ? f.input.checked : f.input.value;
    }
    const { changed, errors } = validateForm(fields, current);
    this.formMessage.textContent = '';
    if (errors.length) {
      this.formError.textContent = errors.join('; ');
      return;
    }
    this.formError.textContent = '';
    if (!Object.keys(changed).length) {
      this.setMessage(this.formMessage, 'info-static', 'Nothing to write: these are the values in force.');
      return;
    }
    let answer;
    try {
      answer = await this.api.setHyperparameters(experiment, changed);
    } catch (e) {
      if (experiment === this.state.experiment) this.formError.textContent = e.message;
      return;
    }
    const written = (answer.written && answer.written.hyperparameters) || changed;
    const what = Object.entries(written).map(([k, v]) => `${k}=${formatValue(v)}`).join(', ');
    this.state.requests.push({ kind: 'hyperparameters', values: written, experiment, sentAt: Date.now() / 1000, what, state: 'waiting' });
    if (experiment === this.state.experiment) {
      this.setMessage(this.formMessage, 'ok', `Wrote to retune.json: ${what}.`);
      this.state.formDirty = new Set();
    }
    this.renderBanners();
    this.refresh();
  }

  resetForm() {
    this.state.formDirty = new Set();
    this.state.formKey = '';
    this.formError.textContent = '';
    this.formMessage.textContent = '';
    this.renderForm();
  }

  setMessage(el, kind, text) {
    el.setAttribute('class', `${el.classList[0]} msg-${kind}`);
    el.textContent = text;
  }

  /** Updates the written requests from the latest tree (trainer status). */
  trackRequests() {
    const tree = this.state.tree;
    for (const r of this.state.requests) {
      if (r.experiment !== this.state.experiment || r.state !== 'waiting') continue;
      const p = requestProgress(r, tree);
      if (p.state === 'waiting') continue;
      r.state = p.state;
      r.node = p.node;
      r.message = p.message;
      r.doneAt = Date.now();
    }
    // Finished requests stay shown for a minute.
    const now = Date.now();
    this.state.requests = this.state.requests.filter((r) => r.state === 'waiting' || now - r.doneAt < 60000);
  }

  // -------------------------------------------------------------------------
  // Rendering.

  renderChrome() {
    const { experiments, experiment, tree } = this.state;
    renderPicker(this.ui.picker, experiments, experiment);
    const entry = experiments.find((e) => e.name === experiment) || null;
    const trainer = (tree && tree.trainer) || (entry && entry.trainer) || null;
    const status = (tree && tree.status) || entry;
    renderTrainerPill(this.ui.trainer, experiment === null ? { level: 'none', text: 'No experiment' } : trainerSummary(trainer, status));
    const runs = experimentRuns(tree, entry);
    if (runs.length) {
      this.ui.scalars.setAttribute('href', scalarsUrl(this.tbRoot, runs));
      this.ui.scalars.setAttribute('title', `TensorBoard's Scalars dashboard, showing the ${runs.length} branch${runs.length === 1 ? '' : 'es'} of ${experiment}`);
      this.ui.scalars.hidden = false;
    } else {
      this.ui.scalars.hidden = true;
    }
    let message = null;
    if (this.state.loadError) message = this.state.loadError;
    else if (experiments.length === 0) {
      message = 'No experiment in this logdir yet. Train with tb_retune.RetuneCallback(logdir=...) and the tree appears here.';
    } else if (tree && !(tree.nodes || []).length) message = `${experiment} has no tree nodes yet.`;
    this.ui.treeMessage.hidden = message === null;
    this.ui.treeMessage.textContent = message ?? '';
    this.renderBanners();
  }

  renderBanners() {
    const items = [];
    const tree = this.state.tree;
    const alive = tree && tree.trainer && tree.trainer.alive;
    for (const r of this.state.requests) {
      if (r.experiment !== this.state.experiment) continue;
      const dismiss = () => {
        this.state.requests = this.state.requests.filter((x) => x !== r);
        this.renderBanners();
      };
      if (r.state === 'waiting') {
        const hint = alive ? 'waiting for the trainer to pick it up…' : 'the trainer is not running; it will be picked up when training resumes on this experiment.';
        items.push({ kind: 'info', text: `Written: ${r.what}${r.id ? ` (${r.id})` : ''}; ${hint}` });
      } else if (r.state === 'done' && r.kind === 'restore' && r.node) {
        const node = r.node;
        items.push({
          kind: 'ok',
          text: `The trainer carried out ${r.what}: new branch ${node.branch}, from step ${node.start_step}.`,
          action: { label: `Show ${node.branch}`, onclick: () => this.selectNode(node.id, { reveal: true }) },
          onclose: dismiss,
        });
      } else if (r.state === 'done') {
        items.push({ kind: 'ok', text: `The trainer applied ${r.what}.`, onclose: dismiss });
      } else if (r.state === 'failed') {
        items.push({ kind: 'error', text: `The trainer refused ${r.what}: ${r.message}`, onclose: dismiss });
      }
    }
    const key = JSON.stringify(items.map((b) => [b.kind, b.text, b.action ? b.action.label : null]));
    if (key === this.bannersKey) return;
    this.bannersKey = key;
    renderBanners(this.ui.banners, items);
  }

  renderTreeView() {
    const t0 = performance.now();
    const tree = this.state.tree;
    const layout = layoutTree(tree);
    this.state.layout = layout;
    this.treeView.setLayout(layout);
    renderLegend(this.ui.legend, tree.branches || [], (b) => this.selectNode(b.nodes[0], { reveal: true }));
    const [w, hgt] = this.zoom.size();
    if (!this.viewFor.has(this.state.experiment)) {
      const current = layout.nodes.find((n) => n.node.current) || layout.nodes[layout.nodes.length - 1];
      const focus = current ? { x: current.x + NODE_W / 2, y: current.y + NODE_H / 2 } : null;
      this.zoom.t = initialTransform(layout.bounds, w, hgt, focus);
    } else {
      this.zoom.t = this.viewFor.get(this.state.experiment);
    }
    this.zoom.apply(); // draws the nodes in view (onChange -> treeView.update)
    this.markSelected();
    const ms = performance.now() - t0;
    window.__retuneLastRenderMs = ms;
    window.__retuneRenderCount = (window.__retuneRenderCount || 0) + 1;
    window.__retuneLastRenderNodes = layout.nodes.length;
    try {
      performance.measure('retune-render', { start: t0, end: t0 + ms });
    } catch {
      // Older browsers: the global above is enough.
    }
    // Time until the browser has laid out and painted the new tree.
    requestAnimationFrame(() => {
      setTimeout(() => {
        window.__retuneLastPaintMs = performance.now() - t0;
      }, 0);
    });
  }

  markSelected() {
    const id = this.state.selected;
    this.treeView.select(id);
    placeHalo(this.ui.halo, id !== null && this.state.layout ? this.state.layout.index.get(id) : null);
  }

  renderSide() {
    this.renderNode();
    this.renderForm();
    renderLog(this.ui.logCard, this.state.tree, trainerSummary(this.state.tree && this.state.tree.trainer, this.state.tree && this.state.tree.status));
  }

  renderNode() {
    const { layout, selected, tree } = this.state;
    const item = layout && selected !== null ? layout.index.get(selected) : null;
    if (!item) {
      this.nodeCardKey = '';
      renderNoNode(this.ui.nodeCard, tree ? 'Click a node of the tree to see its details.' : 'Loading…');
      return;
    }
    const branch = (tree.branches || []).find((b) => b.name === item.node.branch) || null;
    // Keep the chart's line colour and the branch link in step with the tree.
    const color = branch ? branchColor(branch.color) : item.color;
    // Rebuilt only when something it shows changed, so its buttons and
    // fields are not replaced under the person's pointer every refresh.
    const key = JSON.stringify([item.node, branch, color, this.state.details, this.state.detailsError, tree.writable]);
    if (key === this.nodeCardKey) return;
    this.nodeCardKey = key;
    renderNodeCard(this.ui.nodeCard, {
      node: item.node,
      details: this.state.details,
      detailsError: this.state.detailsError,
      branch,
      color,
      branchHref: scalarsUrl(this.tbRoot, [item.node.run || item.node.branch]),
      writable: tree.writable !== false,
      restoreInput: this.restoreInput,
      restoreMessage: this.restoreMessage,
      onRestore: (step) => this.restore(step),
      onSelect: (id) => this.selectNode(id, { reveal: true }),
      configOpen: this.state.configOpen,
      onConfigToggle: (open) => {
        this.state.configOpen = open;
      },
    });
  }

  renderForm() {
    const tree = this.state.tree;
    const status = tree && tree.status;
    const hps = status && status.hyperparameters && typeof status.hyperparameters === 'object' ? status.hyperparameters : null;
    if (!hps) {
      this.formFields = null;
      this.state.formKey = '';
      this.ui.formCard.textContent = '';
      this.ui.formCard.appendChild(h('h2', {}, 'Set hyperparameters'));
      this.ui.formCard.appendChild(h('p', { class: 'muted' }, tree ? 'The trainer has not reported its hyperparameters yet.' : 'Loading…'));
      return;
    }
    const writable = tree.writable !== false;
    const key = `${this.state.experiment}\u0000${Object.keys(hps).sort().join(',')}\u0000${writable}`;
    if (key !== this.state.formKey || !this.formFields) {
      const built = buildForm(this.ui.formCard, {
        hyperparameters: hps,
        writable,
        error: this.formError,
        message: this.formMessage,
        onSubmit: () => this.submitForm(),
        onReset: () => this.resetForm(),
        onInput: (name) => {
          this.state.formDirty.add(name);
          this.formError.textContent = '';
        },
      });
      this.formFields = built.fields;
      this.state.formKey = key;
    }
    // Fields the person has not touched follow the values in force; values
    // written and not yet applied stay shown until the trainer applies them.
    const written = new Set();
    for (const r of this.state.requests) {
      if (r.kind === 'hyperparameters' && r.state === 'waiting' && r.experiment === this.state.experiment) {
        for (const name of Object.keys(r.values || {})) written.add(name);
      }
    }
    for (const [name, f] of this.formFields) {
      if (this.state.formDirty.has(name) || written.has(name) || document.activeElement === f.input) continue;
      const value = hps[name];
      if (f.kind === 'bool') f.input.checked = Boolean(value);
      else {
        const text = value === null || value === undefined ? '' : formatValue(value);
        if (f.input.value !== text && !sameValue(Number(f.input.value), value)) f.input.value = text;
      }
    }
  }
}

let app = null;

/** Entry point called by TensorBoard's plugin frame. */
export async function render() {
  if (app) return;
  const style = document.createElement('style');
  style.textContent = css;
  document.head.appendChild(style);
  document.documentElement.lang = document.documentElement.lang || 'en';
  const root = document.createElement('div');
  root.className = 'retune-root';
  document.body.appendChild(root);
  app = new RetuneApp(root, new Api(document.baseURI));
  window.__retuneApp = app;
  app.start();
}
