import assert from 'node:assert/strict';
import test from 'node:test';

import { bestRow, branchRows, changedFrom, defaultMetric, higherIsBetter, metricTags, sortRows } from '../src/branches.js';
import { bigTree, fixture } from './helpers.js';

test('one row per branch with its start, parent, changes, latest and best metrics', () => {
  const tree = fixture('tree_branchy');
  const rows = branchRows(tree);
  assert.equal(rows.length, tree.branches.length);
  const byName = new Map(rows.map((r) => [r.branch, r]));
  const s1 = byName.get('main-s1');
  const b = tree.branches.find((x) => x.name === 'main-s1');
  assert.equal(s1.start, b.start_step);
  assert.equal(s1.parent, b.parent_node);
  assert.equal(s1.latestNode, b.nodes[b.nodes.length - 1]);
  // What changed: the latest node's values against the parent node's.
  const nodes = new Map(tree.nodes.map((n) => [n.id, n]));
  const parent = nodes.get(b.parent_node);
  const latest = nodes.get(s1.latestNode);
  for (const [name, [old, now]] of Object.entries(s1.changed)) {
    assert.equal(old, parent.hyperparameters[name]);
    assert.equal(now, latest.hyperparameters[name]);
  }
  // Latest is the latest node's value, best the smallest loss over the branch's nodes.
  assert.equal(s1.metrics.loss.latest.value, latest.metrics.loss.value);
  const losses = b.nodes.map((id) => nodes.get(id).metrics.loss.value);
  assert.equal(s1.metrics.loss.best.value, Math.min(...losses));
  const accs = b.nodes.map((id) => nodes.get(id).metrics.accuracy.value);
  assert.equal(s1.metrics.accuracy.best.value, Math.max(...accs));
  // The branch the trainer was last on carries its state; the others ended.
  assert.equal(byName.get(tree.status.branch).state, tree.trainer.state);
  assert.equal(byName.get('main').state, 'ended');
  assert.equal(byName.get('main').parent, null);
});

test('metric tags, direction and the default metric', () => {
  assert.equal(higherIsBetter('val_accuracy'), true);
  assert.equal(higherIsBetter('auc'), true);
  assert.equal(higherIsBetter('val_loss'), false);
  assert.equal(higherIsBetter('mae'), false);
  const tags = metricTags(branchRows(fixture('tree_branchy')));
  assert.deepEqual(tags, ['loss', 'val_loss', 'accuracy', 'val_accuracy']);
  assert.equal(defaultMetric(tags), 'val_loss');
  assert.equal(defaultMetric(['accuracy']), 'accuracy');
  assert.equal(defaultMetric([]), null);
});

test('the best branch by a metric; sorting by any column, missing values last', () => {
  const rows = branchRows(fixture('tree_branchy'));
  const best = bestRow(rows, 'val_loss');
  for (const r of rows) assert.ok(r.metrics.val_loss.best.value >= best.metrics.val_loss.best.value);
  const bestAcc = bestRow(rows, 'val_accuracy');
  for (const r of rows) assert.ok(r.metrics.val_accuracy.best.value <= bestAcc.metrics.val_accuracy.best.value);
  assert.equal(bestRow(rows, 'nothing'), null);

  const byLoss = sortRows(rows, 'val_loss:best');
  assert.equal(byLoss[0], best);
  const desc = sortRows(rows, 'val_loss:best', true);
  assert.equal(desc[desc.length - 1], best);
  const byStart = sortRows(rows, 'start').map((r) => r.start);
  assert.deepEqual(byStart, [...byStart].sort((a, b) => a - b));
  // Natural order of names: main-s2 before main-s10.
  const names = sortRows(rows, 'branch').map((r) => r.branch);
  assert.ok(names.indexOf('main-s2') < names.indexOf('main-s10'));
  const withHole = [{ metrics: {}, branch: 'a' }, { metrics: { loss: { latest: { value: 1 } } }, branch: 'b' }];
  assert.deepEqual(sortRows(withHole, 'loss:latest', true).map((r) => r.branch), ['b', 'a']);
});

test('changedFrom compares with a tolerance and lists new names', () => {
  assert.deepEqual(changedFrom({ learning_rate: 0.001, momentum: 0.9 }, { learning_rate: 0.0010000001, momentum: 0.5 }), { momentum: [0.9, 0.5] });
  assert.deepEqual(changedFrom(null, { a: 1 }), { a: [null, 1] });
});

test('1,000 branches: rows built quickly', () => {
  const tree = bigTree(3000, 1000);
  const t0 = performance.now();
  const rows = branchRows(tree);
  sortRows(rows, 'loss:best');
  const ms = performance.now() - t0;
  assert.equal(rows.length, 1000);
  assert.ok(ms < 200, `${ms} ms`);
});
