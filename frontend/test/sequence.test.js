import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Sequencer, sequenced } from '../src/sequence.js';

function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((a, b) => {
    resolve = a;
    reject = b;
  });
  return { promise, resolve, reject };
}

test('only the newest request of a channel is current', () => {
  const seq = new Sequencer();
  const a = seq.begin('tree', { experiment: 'a' });
  const b = seq.begin('tree', { experiment: 'b' });
  const n = seq.begin('node', { experiment: 'b', node: 'x' });
  assert.equal(seq.isCurrent(a), false);
  assert.equal(seq.isCurrent(b), true);
  assert.equal(seq.isCurrent(n), true, 'channels are independent');
  assert.equal(seq.accepts(b, { experiment: 'b' }), true);
  assert.equal(seq.accepts(b, { experiment: 'a' }), false, 'the person moved to another experiment');
  assert.equal(seq.accepts(n, { experiment: 'b', node: 'y' }), false, 'the person picked another node');
  seq.cancel('node');
  assert.equal(seq.isCurrent(n), false);
});

test('an answer that arrives after a newer request is dropped', async () => {
  const seq = new Sequencer();
  let experiment = 'a';
  const slow = deferred();
  const fast = deferred();
  const first = sequenced(seq, 'tree', { experiment: 'a' }, () => slow.promise, () => ({ experiment }));
  experiment = 'b';
  const second = sequenced(seq, 'tree', { experiment: 'b' }, () => fast.promise, () => ({ experiment }));
  fast.resolve('tree of b');
  slow.resolve('tree of a');
  assert.deepEqual(await second, { ok: true, value: 'tree of b' });
  assert.deepEqual(await first, { ok: false, stale: true });
});

test('errors of stale requests are dropped, errors of current ones reported', async () => {
  const seq = new Sequencer();
  const ctx = () => ({});
  const failing = deferred();
  const stale = sequenced(seq, 'node', {}, () => failing.promise, ctx);
  const current = sequenced(seq, 'node', {}, () => Promise.reject(new Error('404')), ctx);
  failing.reject(new Error('late'));
  assert.deepEqual(await stale, { ok: false, stale: true });
  const r = await current;
  assert.equal(r.ok, false);
  assert.equal(r.error.message, '404');
});

test('an answer for an experiment the person left is dropped even if no newer request was made', async () => {
  const seq = new Sequencer();
  let experiment = 'a';
  const d = deferred();
  const p = sequenced(seq, 'tree', { experiment: 'a' }, () => d.promise, () => ({ experiment }));
  experiment = 'b';
  d.resolve('tree of a');
  assert.deepEqual(await p, { ok: false, stale: true });
});
