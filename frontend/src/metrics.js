// The nodes' latest metrics. The tree route's reply leaves them out (the tree
// view draws none, and the server then reads no metric point for it, which at
// 10,000 nodes is most of a first request); the `metrics` route has them for
// the tree it sent (docs/http_api.md). The branch table, the node card and the
// search form read each node's `metrics`, which applyMetrics puts there. Pure.

/**
 * Whether the tab should ask the metrics route for `tree`'s metrics: a tree
 * reply with a `tree_key` (older servers sent the metrics in the tree), for
 * which `answer` (the last metrics answer) is not the answer.
 */
export function metricsWanted(tree, answer) {
  if (!tree || typeof tree.tree_key !== 'string') return false;
  return !answer || answer.experiment !== tree.experiment || answer.tree_key !== tree.tree_key;
}

/**
 * Puts `answer.metrics[id]` on each node of `tree` as its `metrics` (a node
 * that the answer does not name keeps what it has). An answer for an earlier
 * tree of the same experiment is applied as well: until the next answer a
 * node shows its metrics of a moment ago rather than none. Returns how many
 * nodes got metrics.
 */
export function applyMetrics(tree, answer) {
  if (!tree || !answer || answer.experiment !== tree.experiment) return 0;
  const metrics = answer.metrics;
  if (!metrics || typeof metrics !== 'object') return 0;
  let count = 0;
  for (const node of tree.nodes || []) {
    const m = metrics[node.id];
    if (m && typeof m === 'object') {
      node.metrics = m;
      count += 1;
    }
  }
  return count;
}
