// The search model (src/search.js) and the search groups of the tree
// (src/groups.js), on fixtures written by tests/make_frontend_fixtures.py.
import assert from 'node:assert/strict';
import test from 'node:test';

import { branchRows } from '../src/branches.js';
import { SEARCH_GROUP_PREFIX, collapseTree } from '../src/groups.js';
import {
  buildSearchRequest, defaultDimension, defaultMode, loggedMetrics, progressText, rankedTrials, searchList,
  searchProgress, searchable, trialBranches,
} from '../src/search.js';
import { fixture } from './helpers.js';

const cases = fixture('search_cases');

for (const c of cases.cases) {
  test(`search form: ${c.name}`, () => {
    const fields = { ...c.fields, mode: c.fields.mode ?? null };
    const { request, errors } = buildSearchRequest(fields, { from: cases.from, hyperparameters: cases.known, metrics: cases.metrics });
    if (c.error === null) {
      assert.deepEqual(errors, []);
      assert.deepEqual(request, c.request);
    } else {
      assert.equal(request, undefined);
      assert.ok(errors.length >= 1, 'an error');
      // The same key as the Python schema names first (search.trials, search.space.momentum.high, ...).
      const key = errors[0].split(':')[0];
      assert.equal(key, c.error, errors[0]);
    }
  });
}

test('search form: text that is no number names the key', () => {
  const base = cases.cases[0].fields;
  const space = { learning_rate: { ...base.space.learning_rate, low: 'abc' } };
  const { errors } = buildSearchRequest({ ...base, space }, { hyperparameters: cases.known, metrics: cases.metrics });
  assert.match(errors[0], /^search\.space\.learning_rate\.low: must be a number/);
  const none = buildSearchRequest({ ...base, space: {} }, { hyperparameters: cases.known, metrics: cases.metrics });
  assert.match(none.errors[0], /^search\.space: /);
});

test('defaults: a log range around the learning rate, choices for booleans', () => {
  assert.deepEqual(defaultDimension('learning_rate', 0.01), { on: true, kind: 'range', low: '0.001', high: '0.1', log: true, step: '' });
  assert.equal(defaultDimension('nesterov', false).kind, 'choices');
  // momentum 0.9 * 10 is out of its range: the high stays the value.
  assert.equal(defaultDimension('momentum', 0.9).high, '0.9');
  assert.deepEqual(searchable({ learning_rate: 0.1, name: 'SGD', nesterov: true }), ['learning_rate', 'nesterov']);
  assert.equal(defaultMode('val_loss'), 'min');
  assert.equal(defaultMode('val_accuracy'), 'max');
  assert.equal(defaultMode('score_x'), null);
});

const tree = fixture('tree_search');
const entry = searchList(tree)[0];

test('progress of a running search', () => {
  assert.equal(entry.id, 's-1');
  const p = searchProgress(entry);
  assert.deepEqual([p.done, p.running, p.pruned, p.failed, p.total], [4, 1, 1, 0, 8]);
  assert.match(progressText(entry), /^done 4 \/ 8 · running 1 · pruned 1 · best val_loss 1\.6\d* \(trial 3\)$/);
  assert.deepEqual(loggedMetrics(tree).slice(0, 1), ['loss']);
  assert.ok(loggedMetrics(tree).includes('val_loss'));
});

test('trials ranked: complete by value, then running, pruned', () => {
  const ranked = rankedTrials(entry);
  const complete = ranked.filter((t) => t.state === 'complete');
  assert.deepEqual(complete.map((t) => t.rank), [1, 2, 3, 4]);
  for (let i = 1; i < complete.length; i++) assert.ok(complete[i - 1].value <= complete[i].value);
  assert.equal(ranked[0].number, entry.best.number);
  assert.ok(ranked[0].best);
  assert.deepEqual(ranked.slice(4).map((t) => t.state), ['running', 'pruned']);
  // max: the order turns round.
  const max = rankedTrials({ ...entry, objective: { metric: 'val_loss', mode: 'max' } }).filter((t) => t.rank !== null);
  assert.equal(max[0].number, complete[complete.length - 1].number);
});

test('trials run by workers: where each ran, and a lost trial neither counted nor ranked', () => {
  const trials = [
    { number: 0, state: 'complete', value: 0.5, baseline: true, worker: { host: 'a', pid: 1 } },
    { number: 1, state: 'failed', value: null, interrupted: true, worker: { host: 'b', pid: 2 } },
    { number: 2, state: 'complete', value: 0.4, retry_of: 1, worker: { host: 'a', pid: 1 } },
    { number: 3, state: 'running', value: null, worker: { host: 'c', pid: 3 } },
  ];
  const e = { objective: { metric: 'val_loss', mode: 'min' }, total: 4, trials, best: { number: 2, value: 0.4 } };
  const p = searchProgress(e);
  assert.deepEqual([p.done, p.running, p.pruned, p.failed], [2, 1, 0, 0]);
  const ranked = rankedTrials(e);
  assert.deepEqual(ranked.map((t) => [t.number, t.worker]), [[2, 'a:1'], [0, 'a:1'], [3, 'c:3'], [1, 'b:2']]);
  assert.deepEqual(ranked.filter((t) => t.lost).map((t) => t.number), [1]);
  assert.equal(ranked[0].retryOf, 1);
  assert.equal(ranked[0].rank, 1);
});

test('the trials of a search are one group, closed and open', () => {
  const closed = collapseTree(tree, new Set());
  const gid = `${SEARCH_GROUP_PREFIX}s-1`;
  const group = closed.tree.nodes.find((n) => n.id === gid);
  assert.ok(group, 'the search group');
  assert.equal(group.parent, 'main-1');
  assert.equal(group.group.members.length, 6);
  assert.equal(group.group.select, 'main-s-1-t3-1');
  assert.match(group.group.where, /★ trial 3/);
  assert.ok(!closed.tree.nodes.some((n) => !n.group && n.branch.includes('-s-1-t')));
  const ids = new Set(closed.tree.nodes.map((n) => n.id));
  for (const n of closed.tree.nodes) if (n.parent) assert.ok(ids.has(n.parent), `${n.id}'s parent is drawn`);
  const open = collapseTree(tree, new Set([gid]));
  const trials = open.tree.nodes.filter((n) => n.branch.includes('-s-1-t'));
  assert.equal(trials.length, 6);
  assert.deepEqual(trials.filter((n) => n.searchBest).map((n) => n.id), ['main-s-1-t3-1']);
  assert.equal(open.groupOf.get('main-s-1-t0-1'), gid);
});

test('the branch table marks the trials and the best trial', () => {
  const rows = branchRows(tree);
  const trials = rows.filter((r) => r.trial !== null);
  assert.deepEqual(trials.map((r) => r.trial), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(rows.filter((r) => r.trialBest).map((r) => r.branch), ['main-s-1-t3']);
  assert.equal(trialBranches(tree).get('main-s-1-t0').search, 's-1');
});

test('a tree without searches has no search groups', () => {
  const small = fixture('tree_small');
  assert.deepEqual(searchList(small), []);
  assert.equal(collapseTree(small).tree.nodes.filter((n) => n.group && n.group.search).length, 0);
});

test('a search request without a revision is done once its id is in the status', async () => {
  const { requestProgress } = await import('../src/model.js');
  const t = structuredClone(tree);
  const sentAt = t.status.heartbeat + 10;
  assert.equal(requestProgress({ kind: 'search', id: 's-new', sentAt }, t).state, 'waiting');
  assert.equal(requestProgress({ kind: 'search', id: 's-1', sentAt }, t).state, 'done');
  t.status.errors = [{ time: sentAt + 1, message: 'search.objective.metric: search s-new: its first trial logged no "val_auc"' }];
  const failed = requestProgress({ kind: 'search', id: 's-new', sentAt }, t);
  assert.equal(failed.state, 'failed');
  assert.match(failed.message, /s-new/);
});
