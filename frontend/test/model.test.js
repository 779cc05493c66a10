import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Api, ApiError, experimentRuns, requestProgress } from '../src/model.js';
import { fixture } from './helpers.js';

const BASE = 'http://127.0.0.1:6006/data/plugin/retune/';

function fakeFetch(routes, calls) {
  return async (url, init = {}) => {
    calls.push({ url, init });
    const u = new URL(url);
    const [status, body] = routes[u.pathname] || [404, { error: 'no such route' }];
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    return { ok: status < 400, status, text: async () => text };
  };
}

test('Api builds URLs relative to the plugin base and returns bodies', async () => {
  const calls = [];
  const tree = fixture('tree_small');
  const api = new Api(BASE, fakeFetch({
    '/data/plugin/retune/experiments': [200, fixture('experiments')],
    '/data/plugin/retune/tree': [200, tree],
    '/data/plugin/retune/restore': [200, { written: { restore: { id: 'r-1' } }, id: 'r-1', control: {} }],
  }, calls));
  const ex = await api.experiments();
  assert.equal(ex.experiments[0].name, 'digits');
  const answer = await api.tree('sweeps/a & b');
  assert.deepEqual(answer.body, tree);
  assert.equal(typeof answer.text, 'string');
  assert.equal(calls[1].url, `${BASE}tree?experiment=sweeps%2Fa+%26+b`);
  const r = await api.restore('digits', 'main', 100, {});
  assert.equal(r.id, 'r-1');
  const post = calls[2];
  assert.equal(post.init.method, 'POST');
  assert.equal(post.init.headers['Content-Type'], 'application/json');
  assert.deepEqual(JSON.parse(post.init.body), { experiment: 'digits', branch: 'main', step: 100 });
});

test('Api turns the server error into an ApiError with its message', async () => {
  const api = new Api(BASE, fakeFetch({
    '/data/plugin/retune/hyperparameters': [400, { error: 'hyperparameters.momentum: must be >= 0 and <= 1, got 1.5' }],
    '/data/plugin/retune/tree': [502, '<html>bad gateway</html>'],
  }, []));
  await assert.rejects(api.setHyperparameters('digits', { momentum: 1.5 }), (e) => {
    assert.ok(e instanceof ApiError);
    assert.equal(e.status, 400);
    assert.equal(e.message, 'hyperparameters.momentum: must be >= 0 and <= 1, got 1.5');
    return true;
  });
  await assert.rejects(api.tree('x'), /the server answered 502: <html>bad gateway/);
  const down = new Api(BASE, async () => {
    throw new TypeError('Failed to fetch');
  });
  await assert.rejects(down.experiments(), /cannot reach TensorBoard \(Failed to fetch\)/);
});

test('requestProgress: a restore is done when a node carries its request id', () => {
  const tree = structuredClone(fixture('tree_small'));
  const request = { kind: 'restore', id: 'r-abc', sentAt: tree.status.heartbeat };
  assert.equal(requestProgress(request, tree).state, 'waiting');
  const first = tree.nodes.find((n) => n.id === 'main-s2-1');
  first.request_id = 'r-abc';
  const p = requestProgress(request, tree);
  assert.equal(p.state, 'done');
  assert.equal(p.node.branch, 'main-s2');
});

test('requestProgress: hyperparameters are done when in force, failed on a later error', () => {
  const tree = structuredClone(fixture('tree_small'));
  const inForce = tree.status.hyperparameters.learning_rate;
  const sentAt = tree.status.heartbeat;
  assert.equal(requestProgress({ kind: 'hyperparameters', values: { learning_rate: inForce }, sentAt }, tree).state, 'done');
  const wanted = { kind: 'hyperparameters', values: { learning_rate: inForce * 2 }, sentAt };
  assert.equal(requestProgress(wanted, tree).state, 'waiting', 'the fixture error is older than the write');
  tree.status.errors.push({ time: sentAt + 1, message: 'hyperparameters.learning_rate: boom' });
  assert.deepEqual(requestProgress(wanted, tree), { state: 'failed', message: 'hyperparameters.learning_rate: boom' });
  assert.equal(requestProgress(wanted, null).state, 'waiting');
});

test('experimentRuns takes the tree branches, else the experiments entry', () => {
  const tree = fixture('tree_small');
  assert.deepEqual(experimentRuns(tree, null), ['digits/main', 'digits/main-s1', 'digits/main-s2']);
  const entry = fixture('experiments').experiments[0];
  assert.deepEqual(experimentRuns(null, entry), entry.runs);
  assert.deepEqual(experimentRuns(null, null), []);
});
