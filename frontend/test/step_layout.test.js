import assert from 'node:assert/strict';
import test from 'node:test';

import { NODE_H } from '../src/layout.js';
import { LANE_H, MIN_W, layoutSteps, stepScale, stepTicks } from '../src/step_layout.js';
import { fixture, treeFixtures } from './helpers.js';

test('x is the step, one lane per branch, a restore drawn at its step', () => {
  for (const name of treeFixtures()) {
    const tree = fixture(name);
    const layout = layoutSteps(tree);
    assert.equal(layout.nodes.length, tree.nodes.length);
    const lanes = new Map(layout.lanes.map((l) => [l.branch, l.y]));
    assert.equal(lanes.size, tree.branches.length);
    for (const item of layout.nodes) {
      assert.equal(item.x, item.node.start_step * layout.scale, `${name}: ${item.id} at its step`);
      assert.equal(item.y, lanes.get(item.node.branch));
      assert.ok(item.w >= MIN_W);
    }
    // Two nodes of one lane never overlap.
    const byLane = new Map();
    for (const item of layout.nodes) {
      if (!byLane.has(item.y)) byLane.set(item.y, []);
      byLane.get(item.y).push(item);
    }
    for (const list of byLane.values()) {
      list.sort((a, b) => a.x - b.x);
      for (let i = 1; i < list.length; i++) assert.ok(list[i - 1].x + list[i - 1].w <= list[i].x + MIN_W, `${name}: overlap in a lane`);
    }
    for (const link of layout.links) {
      if (!link.restore) continue;
      // The edge drops from the parent's lane at the child's first step.
      assert.equal(link.path, `M${link.target.x},${link.source.y + NODE_H}V${link.target.y + NODE_H / 2}`);
    }
  }
  assert.equal(LANE_H > NODE_H, true);
});

test('stepScale and stepTicks', () => {
  assert.equal(stepScale([100, 100, 100]), 1.4);
  assert.equal(stepScale([]), 1);
  assert.ok(stepScale([1, 1, 1]) <= 8);
  assert.deepEqual(stepTicks(0, 1000, 5), [0, 200, 400, 600, 800, 1000]);
  assert.deepEqual(stepTicks(150, 420, 3), [200, 300, 400]);
});
