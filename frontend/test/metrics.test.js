import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import test from 'node:test';

import { branchRows } from '../src/branches.js';
import { collapseTree } from '../src/groups.js';
import { applyMetrics, metricsWanted } from '../src/metrics.js';
import { loggedMetrics } from '../src/search.js';
import { FIXTURES, fixture, treeFixtures } from './helpers.js';

// The trees whose reply and metrics answer tests/make_frontend_fixtures.py writes (REPLY_FIXTURES).
const NAMES = treeFixtures().filter((name) => existsSync(path.join(FIXTURES, `${name}.reply.json`)));

test('the tree reply carries no metrics; with the metrics answer applied the table and the search form read what they did', () => {
  assert.deepEqual(NAMES, ['tree_long', 'tree_search', 'tree_small']);
  for (const name of NAMES) {
    const full = fixture(name);
    const reply = fixture(`${name}.reply`);
    const answer = fixture(`${name}.metrics`);
    assert.ok(reply.nodes.every((n) => !('metrics' in n)), name);
    assert.equal(answer.tree_key, reply.tree_key, name);
    assert.equal(applyMetrics(reply, answer), full.nodes.length, name);
    assert.deepEqual(branchRows(reply), branchRows(full), name);
    assert.deepEqual(loggedMetrics(reply), loggedMetrics(full), name);
  }
});

test('the tree is drawn the same from the reply alone: groups of changes and a search\'s trials', () => {
  for (const name of NAMES) {
    const full = collapseTree(fixture(name));
    const reply = collapseTree(fixture(`${name}.reply`));
    assert.deepEqual([...reply.groupOf], [...full.groupOf], name);
    assert.deepEqual(reply.tree.nodes.map((n) => [n.id, n.parent, n.label]), full.tree.nodes.map((n) => [n.id, n.parent, n.label]), name);
  }
  // Without the status' searches, the trials' own search records still make the group.
  const reply = fixture('tree_search.reply');
  const trials = reply.nodes.filter((n) => n.search);
  assert.ok(trials.length >= 6 && trials.every((n) => Object.keys(n.search).sort().join() === 'id,trial'));
  const alone = collapseTree({ ...reply, status: { ...reply.status, searches: {} } });
  assert.deepEqual([...new Set(alone.groupOf.values())], ['group:search:s-1']);
});

test('the metrics are asked for once per tree, and only where the tree reply has a key', () => {
  const reply = fixture('tree_small.reply');
  const answer = fixture('tree_small.metrics');
  assert.equal(metricsWanted(reply, null), true);
  assert.equal(metricsWanted(reply, answer), false);
  assert.equal(metricsWanted({ ...reply, tree_key: 'other' }, answer), true);
  assert.equal(metricsWanted({ ...reply, experiment: 'other' }, answer), true);
  assert.equal(metricsWanted(fixture('tree_small'), null), false); // an older server: metrics in the tree
  assert.equal(metricsWanted(null, null), false);
  // An answer for another experiment is never applied.
  const tree = fixture('tree_small.reply');
  assert.equal(applyMetrics(tree, { ...answer, experiment: 'other' }), 0);
  assert.ok(tree.nodes.every((n) => !n.metrics));
});
