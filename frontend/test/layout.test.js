import assert from 'node:assert/strict';
import { test } from 'node:test';

import { NODE_H, NODE_W, PALETTE, branchColor, contains, cull, layoutTree, linkPath, truncate, viewRect } from '../src/layout.js';
import { bigTree, fixture, treeFixtures } from './helpers.js';

function overlaps(a, b) {
  return a.x < b.x + NODE_W && b.x < a.x + NODE_W && a.y < b.y + NODE_H && b.y < a.y + NODE_H;
}

function checkLayout(tree, name) {
  const layout = layoutTree(tree);
  assert.equal(layout.nodes.length, tree.nodes.length, `${name}: every node is placed`);
  assert.equal(layout.links.length, tree.nodes.filter((n) => n.parent).length, `${name}: one edge per parent`);
  // No two cards overlap (sweep by x column, then compare within a column).
  const columns = new Map();
  for (const n of layout.nodes) {
    if (!columns.has(n.x)) columns.set(n.x, []);
    columns.get(n.x).push(n);
  }
  for (const list of columns.values()) {
    list.sort((a, b) => a.y - b.y);
    for (let i = 1; i < list.length; i++) {
      assert.ok(!overlaps(list[i - 1], list[i]), `${name}: ${list[i - 1].id} overlaps ${list[i].id}`);
    }
  }
  for (const link of layout.links) {
    assert.ok(link.source.x + NODE_W < link.target.x, `${name}: ${link.target.id} is right of its parent`);
    assert.equal(link.restore, link.source.node.branch !== link.target.node.branch);
  }
  const { x0, y0, x1, y1 } = layout.bounds;
  for (const n of layout.nodes) {
    assert.ok(n.x >= x0 && n.x + NODE_W <= x1 && n.y >= y0 && n.y + NODE_H <= y1, `${name}: ${n.id} inside bounds`);
  }
  return layout;
}

test('layoutTree places every fixture tree without overlaps, children right of parents', () => {
  for (const name of treeFixtures()) checkLayout(fixture(name), name);
});

test('a branch reads as a straight line: its continuation stays on the parent row', () => {
  const tree = fixture('tree_small');
  const layout = layoutTree(tree);
  // main-1 has children main-2 (same branch) and main-s1-1 (restored branch):
  const main1 = layout.index.get('main-1');
  const kids = main1.node.children.map((id) => layout.index.get(id));
  const same = kids.find((k) => k.node.branch === 'main');
  const other = kids.find((k) => k.node.branch !== 'main');
  assert.ok(same.y < other.y, 'the continuation comes before the offshoot');
  // Colours come from the branch's index in the tree answer.
  for (const n of layout.nodes) {
    const b = tree.branches.find((x) => x.name === n.node.branch);
    assert.equal(n.color, branchColor(b.color));
  }
});

test('layoutTree survives odd input: empty, missing parents, cycles, duplicates', () => {
  assert.deepEqual(layoutTree({ nodes: [] }).bounds, { x0: 0, y0: 0, x1: 0, y1: 0 });
  assert.equal(layoutTree(null).nodes.length, 0);
  const node = (id, parent, branch = 'main') => ({ id, parent, branch, start_step: 0, children: [] });
  const orphan = layoutTree({ nodes: [node('a', null), node('b', 'gone')], branches: [] });
  assert.equal(orphan.nodes.length, 2, 'a node whose parent is unknown becomes a root');
  assert.equal(orphan.links.length, 0);
  const cycle = layoutTree({ nodes: [node('r', null), node('x', 'y'), node('y', 'x'), node('self', 'self')] });
  assert.deepEqual(cycle.nodes.map((n) => n.id).sort(), ['r', 'self'], 'nodes in a cycle are left out, a self-parent is a root');
  const dup = layoutTree({ nodes: [node('a', null), node('a', null)] });
  assert.equal(dup.nodes.length, 1);
});

test('1,000 nodes are laid out quickly', () => {
  const tree = bigTree(1000, 60);
  const t0 = performance.now();
  const layout = checkLayout(tree, 'big');
  const ms = performance.now() - t0;
  assert.equal(layout.nodes.length, 1000);
  assert.ok(ms < 500, `layout + checks of 1000 nodes took ${ms.toFixed(1)} ms`);
});

test('edges, colours and truncation', () => {
  assert.equal(linkPath({ x: 0, y: 0 }, { x: 300, y: 0 }), `M${NODE_W},${NODE_H / 2}H300`);
  assert.match(linkPath({ x: 0, y: 0 }, { x: 300, y: 100 }), /^M200,20C/);
  assert.equal(branchColor(0), PALETTE[0]);
  assert.equal(branchColor(PALETTE.length + 1), PALETTE[1]);
  assert.equal(branchColor(undefined), PALETTE[0]);
  assert.equal(truncate('short', 10), 'short');
  assert.equal(truncate('lr 1e-3 → 3e-4, mom 0.9 → 0.5 @ 1200', 20), 'lr 1e-3 → 3e-4, mom…');
});

test('viewRect and cull keep what the view shows, with a margin', () => {
  const t = { k: 0.5, x: 100, y: 50 };
  assert.deepEqual(viewRect(t, 1000, 600), { x0: -200, y0: -100, x1: 1800, y1: 1100 });
  assert.deepEqual(viewRect({ k: 1, x: 0, y: 0 }, 100, 50, 1), { x0: -100, y0: -50, x1: 200, y1: 100 });
  assert.ok(contains({ x0: 0, y0: 0, x1: 10, y1: 10 }, { x0: 1, y0: 1, x1: 9, y1: 10 }));
  assert.ok(!contains({ x0: 0, y0: 0, x1: 10, y1: 10 }, { x0: -1, y0: 1, x1: 9, y1: 9 }));

  const layout = layoutTree(bigTree(1000, 60));
  const all = cull(layout, layout.bounds);
  assert.equal(all.nodes.length, 1000);
  assert.equal(all.links.length, layout.links.length);
  const rect = { x0: 0, y0: 0, x1: 1200, y1: 800 };
  const some = cull(layout, rect);
  assert.ok(some.nodes.length > 0 && some.nodes.length < 1000);
  const inside = (n) => n.x + NODE_W >= rect.x0 && n.x <= rect.x1 && n.y + NODE_H >= rect.y0 && n.y <= rect.y1;
  assert.deepEqual(some.nodes.map((n) => n.id).sort(), layout.nodes.filter(inside).map((n) => n.id).sort());
  // Every edge between two kept nodes is kept.
  const kept = new Set(some.nodes.map((n) => n.id));
  for (const l of layout.links) {
    if (kept.has(l.source.id) && kept.has(l.target.id)) assert.ok(some.links.includes(l), `${l.target.id}`);
  }
});
