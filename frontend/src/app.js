// The Retune tab's app: its state, the selection, and which view draws
// what. The views live in views/, the loading of the routes in loading.js,
// the person's writes in actions.js, the refresh loop in poll.js.

import * as actions from './actions.js';
import { scalarsUrl, tensorboardRoot, trainerSummary } from './format.js';
import { GROUP_PREFIX, collapseTree } from './groups.js';
import { NODE_H, branchColor, layoutTree } from './layout.js';
import * as loading from './loading.js';
import { experimentRuns } from './model.js';
import { Poller } from './poll.js';
import { Redraw } from './redraw.js';
import { Sequencer } from './sequence.js';
import { layoutSteps } from './step_layout.js';
import { RequestTracker } from './tracking.js';
import { branchRows } from './branches.js';
import { BranchTableView } from './views/branch_table.js';
import { FormView } from './views/form.js';
import { renderLog } from './views/log.js';
import { NodeCardView } from './views/node_card.js';
import { saveNote } from './notes.js';
import { SearchPanelView } from './views/search.js';
import { buildShell, renderBanners, renderPicker, renderTrainerPill } from './views/shell.js';
import { TreeView, ensureTooltip, placeHalo, renderLegend } from './views/tree.js';
import { PanZoom, initialTransform, legibleFit } from './zoom.js';

/** Below this scale the cards' text is hidden (it would be unreadable). */
const TEXT_MIN_SCALE = 0.4;

export class RetuneApp {
  constructor(root, api) {
    this.api = api;
    this.seq = new Sequencer();
    this.requests = new RequestTracker();
    this.redraw = new Redraw();
    this.ui = buildShell(root);
    this.state = {
      experiments: [],
      experiment: null,
      tree: null,
      metrics: null, // the metrics route's last answer: the nodes' metrics (loading.js)
      layout: null,
      selected: null,
      details: null,
      detailsError: null,
      loadError: null,
      configOpen: false,
      mode: 'tree', // 'tree' | 'steps' | 'table'
      expanded: new Set(), // ids of the groups of changes that the person opened
      groupOf: new Map(), // node id -> the id of the group it is in
    };
    this.treeView = new TreeView(this.ui.links, this.ui.nodes);
    this.nodeCard = new NodeCardView(this.ui.nodeCard, this.redraw);
    this.form = new FormView(this.ui.formCard, this.redraw, {
      onSubmit: () => actions.submitForm(this),
      onReset: () => this.renderForm(),
    });
    this.searchPanel = new SearchPanelView(this.ui.searchCard, this.redraw, {
      onSubmit: () => actions.search(this),
      onOpenBranch: (name) => this.openBranch(name),
    });
    this.table = new BranchTableView(this.ui.tableBox, {
      redraw: this.redraw,
      tbRoot: tensorboardRoot(window.location.href),
      onOpen: (row) => this.selectNode(row.latestNode),
    });
    this.viewFor = new Map(); // experiment -> transform, so switching back keeps the zoom
    this.tbRoot = tensorboardRoot(window.location.href);
    this.poller = new Poller(() => this.refresh(), { element: this.ui.app, idle: () => Boolean(this.state.tree) });

    this.zoom = new PanZoom(this.ui.svg, this.ui.layer, (t) => {
      this.ui.svg.classList.toggle('lod-low', t.k < TEXT_MIN_SCALE);
      if (this.state.experiment !== null) this.viewFor.set(this.viewKey(), t);
      const [w, hgt] = this.zoom.size();
      this.treeView.update(t, w, hgt);
    });
    this.bindTree();
    for (const [mode, button] of Object.entries(this.ui.views)) button.addEventListener('click', () => this.setMode(mode));
    this.setMode('tree');
    this.ui.picker.addEventListener('change', () => this.selectExperiment(this.ui.picker.value));
    this.ui.stop.addEventListener('click', () => actions.stop(this));
    this.nodeCard.empty('Loading…');
  }

  bindTree() {
    const nodeOf = (e) => {
      const g = e.target.closest && e.target.closest('g.node');
      return g || null;
    };
    this.ui.nodes.addEventListener('click', (e) => {
      const g = nodeOf(e);
      if (g) this.activate(g.getAttribute('data-id'));
    });
    this.ui.nodes.addEventListener('pointerover', (e) => {
      const g = nodeOf(e);
      const item = g && this.state.layout ? this.state.layout.index.get(g.getAttribute('data-id')) : null;
      if (item) ensureTooltip(g, item.node);
    });
    this.ui.nodes.addEventListener('keydown', (e) => {
      if (e.key !== 'Enter' && e.key !== ' ') return;
      const g = nodeOf(e);
      if (!g) return;
      e.preventDefault();
      this.activate(g.getAttribute('data-id'));
    });
    this.ui.tools.fit.addEventListener('click', () => {
      if (!this.state.layout) return;
      const item = this.selectedItem() || this.state.layout.nodes.find((n) => n.node.current) || null;
      this.zoom.fit(this.state.layout.bounds, item ? { x: item.x + item.w / 2, y: item.y + NODE_H / 2 } : null);
    });
    this.ui.tools.collapse.addEventListener('click', () => {
      this.state.expanded = new Set();
      this.relayout();
      // A selection inside a group that is closed now moves to the group's parent, so the group stays closed.
      const group = this.state.layout && this.state.layout.index.get(this.state.groupOf.get(this.state.selected));
      if (group && group.node.parent) this.selectNode(group.node.parent);
    });
    this.ui.tools.zoomIn.addEventListener('click', () => this.zoom.zoomBy(1.4));
    this.ui.tools.zoomOut.addEventListener('click', () => this.zoom.zoomBy(1 / 1.4));
    this.ui.tools.current.addEventListener('click', () => this.showCurrent());
  }

  // -------------------------------------------------------------------------
  // Data.

  start() {
    // The experiment shown last: its tree is asked for beside the list of experiments.
    const remembered = loading.rememberedExperiment();
    if (remembered) this.state.experiment = remembered;
    this.poller.now();
  }

  /**
   * One refresh: experiments, then the selected experiment's tree and node;
   * an experiment whose tree is not loaded yet (the first refresh, another
   * experiment picked) has its tree asked for at the same time as the list.
   */
  async refresh() {
    const asked = this.state.experiment;
    if (asked !== null && this.state.tree === null) {
      await Promise.all([this.loadExperiments(), this.loadTree()]);
      // The list named no such experiment (the tab switched to another): its tree now.
      if (this.state.experiment !== null && this.state.experiment !== asked) await this.loadTree();
      return;
    }
    await this.loadExperiments();
    if (this.state.experiment !== null) await this.loadTree();
  }

  loadExperiments() {
    return loading.loadExperiments(this);
  }

  loadTree() {
    return loading.loadTree(this);
  }

  loadNode() {
    return loading.loadNode(this);
  }

  selectedItem() {
    const { layout, selected } = this.state;
    return layout && selected !== null ? layout.index.get(selected) || null : null;
  }

  // -------------------------------------------------------------------------
  // Selection.

  /** Shows the tree (`tree`), the step-axis layout (`steps`) or the branch table (`table`). */
  setMode(mode) {
    this.state.mode = mode;
    const table = mode === 'table';
    for (const [m, button] of Object.entries(this.ui.views)) button.setAttribute('aria-pressed', String(m === mode));
    this.ui.tableBox.hidden = !table;
    this.ui.svg.style.display = table ? 'none' : '';
    this.ui.treeTools.hidden = table;
    this.ui.legend.style.visibility = table ? 'hidden' : '';
    if (table) this.renderTable();
    else if (this.state.tree && !this.redraw.ifChanged('tree', this.treeDeps(), () => this.renderTreeView())) this.zoom.apply();
  }

  /** The key of the remembered view: one per experiment and layout. */
  viewKey() {
    return `${this.state.experiment}\u0000${this.state.mode === 'steps' ? 'steps' : 'tree'}`;
  }

  /** A click on a node: a group opens (and its first node is selected), a node is selected. */
  activate(id) {
    if (id && id.startsWith(GROUP_PREFIX)) {
      const group = this.state.layout && this.state.layout.index.get(id);
      if (!group) return;
      this.state.expanded.add(id);
      this.relayout();
      this.selectNode(group.node.group.select || group.node.group.first);
      return;
    }
    this.selectNode(id);
  }

  /** Lays the tree out again (groups opened or closed, another layout). */
  relayout() {
    if (!this.state.tree) return;
    this.redraw.forget('tree');
    this.redraw.ifChanged('tree', this.treeDeps(), () => this.renderTreeView());
  }

  /** What the drawn tree depends on: the server's key of the tree (else its nodes and branches), layout, open groups. */
  treeDeps() {
    const tree = this.state.tree;
    const drawn = typeof tree.tree_key === 'string' ? tree.tree_key : [tree.nodes || [], tree.branches || []];
    return [drawn, this.state.mode === 'steps', [...this.state.expanded].sort()];
  }

  /** Makes node `id` drawn: opens the group it is in. Returns whether it is in the layout now. */
  reveal(id) {
    const layout = this.state.layout;
    if (!layout) return false;
    if (layout.index.has(id)) return true;
    const group = this.state.groupOf.get(id);
    if (!group) return false;
    this.state.expanded.add(group);
    this.relayout();
    return this.state.layout.index.has(id);
  }

  switchTo(name) {
    Object.assign(this.state, {
      experiment: name, tree: null, metrics: null, layout: null, selected: null, details: null, detailsError: null,
      expanded: new Set(), groupOf: new Map(),
    });
    this.redraw.forget();
    this.form.clear();
    this.searchPanel.close();
    this.searchPanel.message.textContent = '';
    this.nodeCard.restoreMessage.textContent = '';
    this.requests.statusReply = null;
    this.seq.cancel('tree');
    this.seq.cancel('node');
    this.seq.cancel('metrics');
    this.seq.cancel('status');
    this.treeView.setLayout(null);
    placeHalo(this.ui.halo, null);
    this.nodeCard.empty('Loading…');
    this.ui.logCard.textContent = '';
  }

  selectExperiment(name) {
    if (name === this.state.experiment) return;
    loading.rememberExperiment(name);
    this.switchTo(name);
    this.renderChrome();
    this.poller.now();
  }

  selectNode(id, { reveal = false } = {}) {
    if (!this.reveal(id)) return;
    if (id !== this.state.selected) {
      Object.assign(this.state, { selected: id, details: null, detailsError: null });
      this.redraw.forget('node-details');
      this.nodeCard.restoreMessage.textContent = '';
      this.seq.cancel('node');
      this.markSelected();
      this.renderSide();
    }
    if (reveal) {
      const item = this.state.layout.index.get(id);
      this.zoom.center(item.x + item.w / 2, item.y + NODE_H / 2);
    }
    this.loadNode();
  }

  /** Selects the first node of branch `name` (a trial's node: its search group opens). */
  openBranch(name) {
    const branch = ((this.state.tree && this.state.tree.branches) || []).find((b) => b.name === name);
    if (branch && branch.nodes && branch.nodes.length) this.selectNode(branch.nodes[0], { reveal: true });
  }

  showCurrent() {
    const tree = this.state.tree;
    const current = tree && (tree.nodes || []).find((n) => n.current);
    if (current) this.selectNode(current.id, { reveal: true });
    else if (this.state.selected) this.selectNode(this.state.selected, { reveal: true });
  }

  // -------------------------------------------------------------------------
  // Written requests (tracking.js follows them).

  /** Records a request written into retune.json, to follow it until the trainer takes it. */
  addRequest(request, answer) {
    this.requests.add(request, answer);
    this.renderBanners();
  }

  setMessage(el, kind, text) {
    el.setAttribute('class', `${el.classList[0]} msg-${kind}`);
    el.textContent = text;
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
    // Stop: only while a trainer is alive and the logdir can be written.
    this.ui.stop.hidden = !(trainer && trainer.alive && tree && tree.writable !== false);
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
    const items = this.requests.bannerItems(this.state.experiment, this.state.tree, {
      onShow: (node) => this.selectNode(node.id, { reveal: true }),
      onDismiss: () => this.renderBanners(),
    });
    this.redraw.ifChanged('banners', items.map((b) => [b.kind, b.text, b.action ? b.action.label : null]),
      () => renderBanners(this.ui.banners, items));
  }

  renderTreeView() {
    const t0 = performance.now();
    const tree = this.state.tree;
    const grouped = collapseTree(tree, this.state.expanded);
    this.state.groupOf = grouped.groupOf;
    const layout = this.state.mode === 'steps' ? layoutSteps(grouped.tree) : layoutTree(grouped.tree);
    this.state.layout = layout;
    this.treeView.setLayout(layout);
    this.ui.svg.classList.toggle('steps', this.state.mode === 'steps');
    renderLegend(this.ui.legend, tree.branches || [], (b) => this.selectNode(b.nodes[0], { reveal: true }));
    const [w, hgt] = this.zoom.size();
    if (!this.viewFor.has(this.viewKey())) {
      const current = layout.nodes.find((n) => n.node.current) || layout.nodes[layout.nodes.length - 1];
      const focus = current ? { x: current.x + current.w / 2, y: current.y + NODE_H / 2 } : null;
      // The tree: readable around the current node; the step axis: as much of it as stays legible.
      this.zoom.t = this.state.mode === 'steps' ? legibleFit(layout.bounds, w, hgt, focus) : initialTransform(layout.bounds, w, hgt, focus);
    } else {
      this.zoom.t = this.viewFor.get(this.viewKey());
    }
    this.zoom.apply(); // draws the nodes in view (onChange -> treeView.update)
    this.markSelected();
    const ms = performance.now() - t0;
    window.__retuneLastRenderMs = ms;
    window.__retuneRenderCount = (window.__retuneRenderCount || 0) + 1;
    // The tree's nodes (those in a closed group included), and the cards laid out.
    window.__retuneLastRenderNodes = (tree.nodes || []).length;
    window.__retuneLastRenderCards = layout.nodes.length;
    try {
      performance.measure('retune-render', { start: t0, end: t0 + ms });
    } catch {
      // Older browsers: the global above is enough.
    }
    // Time until the browser has laid out and painted the new tree.
    requestAnimationFrame(() => {
      setTimeout(() => {
        const now = performance.now();
        window.__retuneLastPaintMs = now - t0;
        // On the page's clock (from the navigation's start): when this tree was first on screen.
        window.__retuneLastPaintAt = now;
      }, 0);
    });
  }

  markSelected() {
    const id = this.state.selected;
    this.treeView.select(id);
    placeHalo(this.ui.halo, this.selectedItem());
  }

  renderTable() {
    if (this.state.mode !== 'table') return;
    const item = this.selectedItem();
    this.table.render(this.state.tree ? branchRows(this.state.tree) : [], item ? item.node.branch : null);
  }

  renderSide() {
    this.renderTable();
    this.renderNode();
    this.renderSearch();
    this.renderForm();
    const tree = this.state.tree;
    renderLog(this.ui.logCard, tree, trainerSummary(tree && tree.trainer, tree && tree.status));
  }

  renderNode() {
    const { tree } = this.state;
    const item = this.selectedItem();
    if (!item) {
      this.nodeCard.empty(tree ? 'Click a node of the tree to see its details.' : 'Loading…');
      return;
    }
    const branch = (tree.branches || []).find((b) => b.name === item.node.branch) || null;
    // The node as the server sent it (in the drawing, a node after a closed group hangs from the group).
    let node = (tree.nodes || []).find((n) => n.id === item.id) || item.node;
    // Its metrics: from the metrics route (loading.js), else the node route's, until that answers.
    const details = this.state.details;
    if (!node.metrics && details && details.id === node.id && details.metrics) node = { ...node, metrics: details.metrics };
    this.nodeCard.render({
      node,
      details: this.state.details,
      detailsError: this.state.detailsError,
      branch,
      // Keep the chart's line colour and the branch link in step with the tree.
      color: branch ? branchColor(branch.color) : item.color,
      branchHref: scalarsUrl(this.tbRoot, [item.node.run || item.node.branch]),
      writable: tree.writable !== false,
      onRestore: (step) => actions.restore(this, step),
      onSaveNote: () => saveNote(this),
      onSelect: (id) => this.selectNode(id, { reveal: true }),
      configOpen: this.state.configOpen,
      onConfigToggle: (open) => {
        this.state.configOpen = open;
      },
    });
  }

  renderSearch() {
    const tree = this.state.tree;
    const item = this.selectedItem();
    const node = item && tree ? (tree.nodes || []).find((n) => n.id === item.id) || null : null;
    const branch = node ? (tree.branches || []).find((b) => b.name === node.branch) || null : null;
    this.searchPanel.render(tree, node, branch, Boolean(tree) && tree.writable !== false);
  }

  renderForm() {
    this.form.render(this.state.tree, this.state.experiment, this.requests.pendingNames(this.state.experiment));
  }
}
