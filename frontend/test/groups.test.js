import assert from 'node:assert/strict';
import test from 'node:test';

import { GROUP_PREFIX, MIN_GROUP, collapseRuns, groupLabel } from '../src/groups.js';
import { layoutTree } from '../src/layout.js';
import { fixture, treeFixtures } from './helpers.js';

test('groupLabel says what changed overall, how many changes and where', () => {
  assert.equal(groupLabel({ learning_rate: [0.001, 0.002] }, 7, 910, 1720), 'lr 1e-3 → 2e-3 in 7 changes @ 910–1720');
  assert.equal(groupLabel({ learning_rate: [0.001, 0.002], momentum: [0.9, 0.5] }, 3, 10, 30),
    'lr 1e-3 → 2e-3, mom 0.9 → 0.5 in 3 changes @ 10–30');
  assert.equal(groupLabel({}, 4, 10, 40), '4 changes, back where they started @ 10–40');
});

test('runs of changes on a branch collapse into one group; first, last, current and restore sources stay', () => {
  const tree = fixture('tree_long');
  const { tree: shown, groupOf, groups } = collapseRuns(tree);
  assert.ok(groups.size > 0, 'tree_long has long runs');
  assert.ok(shown.nodes.length < tree.nodes.length);
  const byId = new Map(tree.nodes.map((n) => [n.id, n]));
  const restoreSources = new Set(tree.nodes.filter((n) => n.restore).map((n) => n.parent));
  for (const g of groups.values()) {
    const members = g.group.members;
    assert.ok(members.length >= MIN_GROUP);
    // Consecutive nodes of one branch, none of them special.
    for (let i = 0; i < members.length; i++) {
      const m = byId.get(members[i]);
      assert.equal(m.branch, g.branch);
      assert.ok(!m.current && !m.restore && m.reason === 'control');
      assert.ok(!restoreSources.has(m.id), `${m.id} has a restore from it`);
      if (i) assert.equal(m.parent, members[i - 1]);
    }
    const first = byId.get(members[0]);
    const last = byId.get(members[members.length - 1]);
    assert.equal(g.parent, first.parent);
    assert.equal(g.start_step, first.start_step);
    assert.equal(g.end_step, last.end_step);
    assert.deepEqual(g.hyperparameters, last.hyperparameters);
    // The label is what changed from before the run to its end.
    const before = byId.get(first.parent).hyperparameters;
    for (const [name, [a, b]] of Object.entries(g.diff)) {
      assert.equal(a, before[name]);
      assert.equal(b, last.hyperparameters[name]);
    }
    assert.match(g.label, new RegExp(`in ${members.length} changes @ ${first.start_step}–${last.start_step}$`));
    for (const id of members) assert.equal(groupOf.get(id), g.id);
  }
  // Every node is shown once, as itself or in its group; parents point at what is shown.
  const shownIds = new Set(shown.nodes.map((n) => n.id));
  for (const n of tree.nodes) assert.ok(shownIds.has(n.id) || shownIds.has(groupOf.get(n.id)), n.id);
  for (const n of shown.nodes) if (n.parent) assert.ok(shownIds.has(n.parent), `${n.id}'s parent ${n.parent}`);
  // The layout takes the grouped tree as any other.
  const layout = layoutTree(shown);
  assert.equal(layout.nodes.length, shown.nodes.length);
  for (const b of shown.branches) for (const id of b.nodes) assert.ok(shownIds.has(id));
});

test('an expanded group shows its members again; small trees are left alone', () => {
  const tree = fixture('tree_long');
  const { groups } = collapseRuns(tree);
  const first = [...groups.keys()][0];
  const open = collapseRuns(tree, new Set([first]));
  assert.ok(!open.tree.nodes.some((n) => n.id === first));
  for (const id of groups.get(first).group.members) assert.ok(open.tree.nodes.some((n) => n.id === id));
  const all = collapseRuns(tree, new Set(groups.keys()));
  assert.equal(all.tree.nodes.length, tree.nodes.length);
  assert.ok(first.startsWith(GROUP_PREFIX));
  for (const name of treeFixtures()) {
    const t = fixture(name);
    const r = collapseRuns(t);
    if (!r.groups.size) assert.equal(r.tree, t, `${name}: unchanged object when nothing groups`);
  }
});
