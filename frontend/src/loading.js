// The loading of the plugin's routes into the app's state: the experiments,
// the selected experiment's tree, its nodes' metrics, the selected node. Each
// request is sequenced (a late answer for another experiment or node is
// dropped, sequence.js); what is drawn from an answer is the app's.

import { applyMetrics, metricsWanted } from './metrics.js';
import { sequenced } from './sequence.js';

const STORAGE_KEY = 'tb-retune.experiment';

/** The experiment the tab showed last (kept in localStorage), or null. */
export function rememberedExperiment() {
  try {
    return window.localStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

/** Keeps `name` as the experiment to show next time (storage may be off: then for this page only). */
export function rememberExperiment(name) {
  try {
    window.localStorage.setItem(STORAGE_KEY, name);
  } catch {
    // Storage may be off; the choice then lasts for this page only.
  }
}

export async function loadExperiments(app) {
  const r = await sequenced(app.seq, 'experiments', {}, () => app.api.experiments(), () => ({}));
  if (r.stale) return;
  if (!r.ok) {
    app.state.loadError = r.error.message;
    app.renderChrome();
    return;
  }
  const body = r.value;
  app.state.loadError = null;
  const experiments = Array.isArray(body.experiments) ? body.experiments : [];
  app.state.experiments = experiments;
  const names = experiments.map((e) => e.name);
  if (app.state.experiment === null || !names.includes(app.state.experiment)) {
    const remembered = rememberedExperiment();
    const pick = names.includes(remembered) ? remembered : names[0] ?? null;
    if (pick !== app.state.experiment) app.switchTo(pick);
  }
  app.renderChrome();
}

export async function loadTree(app) {
  const experiment = app.state.experiment;
  const r = await sequenced(app.seq, 'tree', { experiment }, () => app.api.tree(experiment),
    () => ({ experiment: app.state.experiment }));
  if (r.stale) return;
  if (!r.ok) {
    app.state.loadError = `Cannot load the tree of ${experiment}: ${r.error.message}`;
    app.renderChrome();
    return;
  }
  const tree = r.value.body;
  app.state.loadError = null;
  app.state.tree = tree;
  applyMetrics(tree, app.state.metrics); // the last answer's, until the next one
  await app.requests.load(app.api, app.seq, experiment);
  app.requests.track(experiment, tree);
  // Redraw only when what the tree shows changed (not the trainer's age).
  const drew = app.redraw.ifChanged('tree', app.treeDeps(), () => app.renderTreeView());
  if (app.state.selected === null || !app.reveal(app.state.selected)) {
    const nodes = tree.nodes || [];
    const first = nodes.find((n) => n.current) || nodes[nodes.length - 1];
    app.state.selected = first ? first.id : null;
    if (first) app.reveal(first.id); // the current node may be a trial of a closed search
    app.markSelected();
  }
  app.renderChrome();
  // A new drawing of the tree goes on screen first; the side panel follows a frame later.
  if (drew) await afterPaint();
  if (app.state.tree !== tree) return; // another tree or experiment came meanwhile: its load draws it
  app.renderSide();
  await Promise.all([loadNode(app), loadMetrics(app)]);
}

/** Resolves once the next frame is painted, or after `ms` at the latest (a hidden page paints none). */
export function afterPaint(ms = 100) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    requestAnimationFrame(() => setTimeout(() => {
      clearTimeout(timer);
      resolve();
    }, 0));
  });
}

/** The metrics of the tree's nodes (the tree reply leaves them out), once per tree. */
export async function loadMetrics(app) {
  const experiment = app.state.experiment;
  const tree = app.state.tree;
  if (experiment === null || !metricsWanted(tree, app.state.metrics)) return;
  const r = await sequenced(app.seq, 'metrics', { experiment }, () => app.api.metrics(experiment),
    () => ({ experiment: app.state.experiment }));
  if (r.stale || !r.ok) return; // the tree is drawn without them; the next refresh asks again
  app.state.metrics = r.value;
  if (applyMetrics(app.state.tree, r.value)) app.renderSide();
}

export async function loadNode(app) {
  const experiment = app.state.experiment;
  const id = app.state.selected;
  const item = app.selectedItem();
  if (experiment === null || !item) return;
  // Ask again only when the node changed (a running node grows).
  const deps = [experiment, id, item.node.start_step, item.node.end_step];
  if (!app.redraw.changed('node-details', deps) && app.state.details) return;
  const r = await sequenced(app.seq, 'node', { experiment, node: id }, () => app.api.node(experiment, id),
    () => ({ experiment: app.state.experiment, node: app.state.selected }));
  if (r.stale) return;
  if (!r.ok) {
    app.state.detailsError = r.error.message;
    app.renderSide();
    return;
  }
  app.state.details = r.value;
  app.state.detailsError = null;
  app.redraw.mark('node-details', deps);
  app.renderSide();
}
