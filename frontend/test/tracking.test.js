import assert from 'node:assert/strict';
import test from 'node:test';

import { RequestTracker } from '../src/tracking.js';
import { fixture } from './helpers.js';

const noop = { onShow: () => {}, onDismiss: () => {} };

test('a request with a revision: pending, then rejected with the trainer\'s error', () => {
  const tree = fixture('tree_small');
  const t = new RequestTracker();
  t.add({ kind: 'hyperparameters', values: { momentum: 0.95 }, experiment: 'digits', what: 'momentum=0.95' }, { revision: 'w-1' });
  const live = { ...tree.status, state: 'training' };
  t.statusReply = { ...live, requests: { 'w-1': 'pending' } };
  t.track('digits', tree);
  assert.match(t.bannerItems('digits', tree, noop)[0].text, /^Written: momentum=0.95; waiting for the trainer/);
  assert.deepEqual([...t.pendingNames('digits')], ['momentum']);
  // An older server: no `requests`, the rule runs here on `control`.
  t.statusReply = { ...live, control: { revision: 'w-1', result: 'rejected', error: 'momentum: must be <= 1' } };
  t.track('digits', tree);
  const [item] = t.bannerItems('digits', tree, noop);
  assert.equal(item.kind, 'error');
  assert.equal(item.text, 'The trainer rejected momentum=0.95: momentum: must be <= 1');
  assert.equal(t.pendingNames('digits').size, 0);
});

test('no trainer: a warning that it is taken when training runs again; unchanged; tree warnings', () => {
  const tree = { ...fixture('tree_small'), warnings: ['a', 'b', 'c', 'd', 'e', 'f', 'g'] };
  const t = new RequestTracker();
  t.add({ kind: 'stop', experiment: 'digits', what: 'stop' }, { revision: 'w-2' });
  t.add({ kind: 'hyperparameters', values: {}, experiment: 'digits', what: 'lr=1' }, { revision: 'w-3' });
  t.statusReply = { ...tree.status, state: 'finished', requests: { 'w-2': 'no_trainer', 'w-3': 'unchanged' } };
  t.track('digits', tree);
  const items = t.bannerItems('digits', tree, noop);
  assert.equal(items[0].kind, 'warn');
  assert.match(items[0].text, /the trainer is not running; it takes it when training runs again/);
  assert.match(items[1].text, /nothing to change/);
  assert.deepEqual(items.slice(2).map((i) => i.text), ['a', 'b', 'c', 'd', 'e', '…and 2 more warnings about this tree.']);
  // Another experiment's requests are not shown.
  assert.equal(t.bannerItems('other', null, noop).length, 0);
});
