import assert from 'node:assert/strict';
import test from 'node:test';

import { controlRecord, requestState } from '../src/requests.js';
import { fixture } from './helpers.js';

test('requestState gives the Python rule\'s answer on every shared case', () => {
  const { cases } = fixture('request_cases');
  assert.ok(cases.length >= 10);
  for (const c of cases) {
    assert.equal(requestState(c.status, c.revision, { later: c.later }), c.expected, c.name);
  }
});

test('controlRecord takes only a record with a known result', () => {
  assert.equal(controlRecord(null), null);
  assert.equal(controlRecord({ control: { result: 'weird' } }), null);
  assert.equal(controlRecord({ control: [1] }), null);
  assert.deepEqual(controlRecord({ control: { result: 'applied', revision: 'w-1' } }), { result: 'applied', revision: 'w-1' });
});
