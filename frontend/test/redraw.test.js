import assert from 'node:assert/strict';
import test from 'node:test';

import { Redraw, keyOf } from '../src/redraw.js';

test('Redraw.ifChanged draws once per distinct state of each part', () => {
  const r = new Redraw();
  const drawn = [];
  assert.equal(r.ifChanged('tree', [{ id: 'a' }], () => drawn.push('tree 1')), true);
  assert.equal(r.ifChanged('tree', [{ id: 'a' }], () => drawn.push('tree 2')), false);
  assert.equal(r.ifChanged('form', [{ id: 'a' }], () => drawn.push('form 1')), true);
  assert.equal(r.ifChanged('tree', [{ id: 'b' }], () => drawn.push('tree 3')), true);
  assert.deepEqual(drawn, ['tree 1', 'form 1', 'tree 3']);
});

test('Redraw.forget makes the next draw happen; changed/mark for work that may fail', () => {
  const r = new Redraw();
  r.mark('node', ['x', 1]);
  assert.equal(r.changed('node', ['x', 1]), false);
  assert.equal(r.changed('node', ['x', 2]), true);
  r.forget('node');
  assert.equal(r.changed('node', ['x', 1]), true);
  r.mark('a', 'k');
  r.mark('b', 'k');
  r.forget();
  assert.equal(r.changed('a', 'k') && r.changed('b', 'k'), true);
  assert.equal(keyOf('text'), 'text');
  assert.equal(keyOf([1, 'a']), '[1,"a"]');
});
