// The branch table's model: one row per branch of the tree answer (each
// search trial is a branch too), with what it changed from its parent and
// the latest and best value of each metric. Pure: no DOM.

import { sameValue } from './format.js';
import { trialBranches } from './search.js';

/** Metrics where a larger value is better (the rest: smaller is better, like loss). */
const HIGHER_IS_BETTER = /(acc|accuracy|auc|precision|recall|f1|iou|r2|score|top_\d+)$/i;

/** Whether a larger value of metric `tag` is better (`accuracy`, `val_auc`, ...). */
export function higherIsBetter(tag) {
  return HIGHER_IS_BETTER.test(String(tag).replace(/^val_/, ''));
}

/** `a` is better than `b` for metric `tag`. */
function better(tag, a, b) {
  return higherIsBetter(tag) ? a > b : a < b;
}

function valueOf(point) {
  if (point && typeof point === 'object') return typeof point.value === 'number' && Number.isFinite(point.value) ? point : null;
  return typeof point === 'number' && Number.isFinite(point) ? { value: point, step: null } : null;
}

/** The hyperparameters of `now` that differ from `before`: `{name: [old, new]}`. */
export function changedFrom(before, now) {
  const out = {};
  for (const name of Object.keys(now || {}).sort()) {
    const old = before ? before[name] : undefined;
    if (!sameValue(old, now[name])) out[name] = [old === undefined ? null : old, now[name]];
  }
  return out;
}

/**
 * One row per branch.
 *
 * - `parent`: the node the branch was restored from (null for `main`);
 *   `changed`: the hyperparameters in force on the branch (its latest node)
 *   that differ from that parent node's, for `main` from its first node's.
 * - `metrics[tag]`: `{latest, best}` points `{value, step}`: the latest is the
 *   branch's latest node's, the best the best of its nodes' values (each
 *   node holds its last logged value); better is smaller, or larger for
 *   accuracy-like metrics (see `higherIsBetter`).
 * - `state`: `training` (the trainer is on it now), the trainer's final state
 *   on its current branch (`finished`, `failed`, `stopped`, ...), or `ended`
 *   for a branch that training left.
 *
 * @param {object} tree the `tree` route's answer
 */
export function branchRows(tree) {
  const nodes = new Map();
  for (const n of (tree && tree.nodes) || []) nodes.set(n.id, n);
  const trainerState = (tree && tree.trainer && tree.trainer.state) || null;
  const trials = trialBranches(tree);
  const rows = [];
  for (const b of (tree && tree.branches) || []) {
    const own = (b.nodes || []).map((id) => nodes.get(id)).filter(Boolean);
    if (!own.length) continue;
    const first = own[0];
    const latest = own[own.length - 1];
    const parentId = b.parent_node || first.parent || null;
    const parent = parentId ? nodes.get(parentId) || null : null;
    const metrics = {};
    for (const n of own) {
      for (const [tag, raw] of Object.entries(n.metrics || {})) {
        const point = valueOf(raw);
        if (!point) continue;
        const m = metrics[tag] || (metrics[tag] = { latest: null, best: null });
        m.latest = point;
        if (!m.best || better(tag, point.value, m.best.value)) m.best = point;
      }
    }
    const current = own.some((n) => n.current);
    let state = 'ended';
    if (current) state = trainerState === 'not_responding' ? 'not responding' : trainerState && trainerState !== 'unknown' ? trainerState : 'current';
    rows.push({
      branch: b.name,
      run: b.run || latest.run || b.name,
      color: b.color,
      trial: typeof b.trial === 'number' ? b.trial : trials.has(b.name) ? trials.get(b.name).number : null,
      search: trials.has(b.name) ? trials.get(b.name).search : null,
      trialBest: trials.has(b.name) && trials.get(b.name).best,
      start: typeof b.start_step === 'number' ? b.start_step : first.start_step,
      last: typeof b.last_step === 'number' ? b.last_step : latest.end_step ?? latest.start_step,
      parent: parent ? parent.id : null,
      parentBranch: parent ? parent.branch : null,
      firstNode: first.id,
      latestNode: latest.id,
      nodes: own.length,
      hyperparameters: latest.hyperparameters || {},
      changed: changedFrom(parent ? parent.hyperparameters : first.hyperparameters, latest.hyperparameters),
      metrics,
      state,
      current,
    });
  }
  return rows;
}

/** The metric tags of the rows: `loss` first, then the others with their `val_` twins. */
export function metricTags(rows) {
  const tags = new Set();
  for (const r of rows) for (const t of Object.keys(r.metrics)) tags.add(t);
  const base = (t) => t.replace(/^val_/, '');
  return [...tags].sort((a, b) => {
    const la = base(a) === 'loss' ? 0 : 1;
    const lb = base(b) === 'loss' ? 0 : 1;
    return la - lb || (base(a) < base(b) ? -1 : base(a) > base(b) ? 1 : 0) || (a.startsWith('val_') ? 1 : 0) - (b.startsWith('val_') ? 1 : 0);
  });
}

/** The metric to find the best branch by, when the person chose none: `val_loss`, `loss`, or the first. */
export function defaultMetric(tags) {
  for (const t of ['val_loss', 'loss']) if (tags.includes(t)) return t;
  return tags[0] ?? null;
}

/** The best row by `tag`'s best value (null when no row has it). */
export function bestRow(rows, tag) {
  let best = null;
  for (const r of rows) {
    const m = r.metrics[tag];
    if (!m || !m.best) continue;
    if (!best || better(tag, m.best.value, best.metrics[tag].best.value)) best = r;
  }
  return best;
}

/**
 * A column's sort key of a row. Columns: `branch`, `start`, `parent`,
 * `changed`, `state`, `last`, `<tag>:latest`, `<tag>:best`.
 */
export function sortKey(row, column) {
  const colon = column.lastIndexOf(':');
  if (colon > 0) {
    const m = row.metrics[column.slice(0, colon)];
    const point = m ? m[column.slice(colon + 1)] : null;
    return point ? point.value : null;
  }
  if (column === 'changed') return Object.keys(row.changed).join(',');
  const v = row[column];
  return v === undefined ? null : v;
}

/**
 * The rows sorted by `column`, ascending or descending; rows without a value
 * last either way; ties keep the tree's order (stable).
 */
export function sortRows(rows, column, descending = false) {
  const keyed = rows.map((row, i) => ({ row, i, k: sortKey(row, column) }));
  keyed.sort((a, b) => {
    if (a.k === null && b.k === null) return a.i - b.i;
    if (a.k === null) return 1;
    if (b.k === null) return -1;
    let c;
    if (typeof a.k === 'number' && typeof b.k === 'number') c = a.k - b.k;
    else c = String(a.k).localeCompare(String(b.k), undefined, { numeric: true });
    return (descending ? -c : c) || a.i - b.i;
  });
  return keyed.map((x) => x.row);
}
