import assert from 'node:assert/strict';
import { test } from 'node:test';

import { chartModel, niceTicks, thin } from '../src/chart.js';
import { fixture } from './helpers.js';

test('niceTicks gives round values inside the range', () => {
  assert.deepEqual(niceTicks(0, 1000, 4), [0, 200, 400, 600, 800, 1000]);
  assert.deepEqual(niceTicks(0.31, 1.02, 4), [0.4, 0.6, 0.8, 1]);
  assert.deepEqual(niceTicks(5, 5), [5]);
  assert.deepEqual(niceTicks(NaN, 1), []);
});

test('chartModel draws the loss of a node fixture with its checkpoints and range', () => {
  const tree = fixture('tree_small');
  const details = fixture('tree_small.node-main-s2-3');
  const branch = tree.branches.find((b) => b.name === details.branch);
  const m = chartModel(details.series, {
    width: 340,
    height: 130,
    start: details.start_step,
    end: details.end_step,
    checkpoints: branch.checkpoints,
  });
  assert.equal(m.empty, false);
  assert.deepEqual(m.lines.map((l) => l.name), ['loss', 'val_loss']);
  assert.equal(m.lines[0].path.split(/[ML]/).filter(Boolean).length, details.series.loss.length);
  assert.equal(m.markers.length, branch.checkpoints.filter((s) => s >= details.series.loss[0][0]).length);
  for (const mk of m.markers) assert.ok(mk.x >= m.plot.left && mk.x <= m.plot.right);
  assert.ok(m.band.x0 < m.band.x1 && m.band.x1 <= m.plot.right);
  assert.ok(m.yTicks.length >= 2, 'at least two y ticks');
  assert.ok(m.xTicks.length >= 2, 'at least two x ticks');
  assert.equal(m.xTicks[m.xTicks.length - 1].anchor, 'end', 'the last step label is right-aligned');
  for (const line of m.lines) assert.doesNotMatch(line.path, /NaN|Infinity/);
});

test('chartModel skips non-finite points and says when there is nothing', () => {
  assert.equal(chartModel({}, { width: 100, height: 50 }).empty, true);
  assert.equal(chartModel({ loss: [[0, NaN]] }, { width: 100, height: 50 }).empty, true);
  const one = chartModel({ loss: [[5, 1]] }, { width: 100, height: 50 });
  assert.equal(one.empty, false);
  assert.doesNotMatch(one.lines[0].path, /NaN/);
});

test('thin keeps the ends and at most max points', () => {
  const pts = Array.from({ length: 1000 }, (_, i) => [i, i]);
  const t = thin(pts, 100);
  assert.equal(t.length, 100);
  assert.deepEqual(t[0], [0, 0]);
  assert.deepEqual(t[99], [999, 999]);
});
