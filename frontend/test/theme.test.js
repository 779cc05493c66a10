import assert from 'node:assert/strict';
import test from 'node:test';

import { chooseTheme, parentDark } from '../src/theme.js';

function fakeWindow({ dark, tensorboard = true, crossOrigin = false }) {
  const body = { classList: { contains: (c) => c === 'dark-mode' && dark } };
  const parent = {};
  Object.defineProperty(parent, 'document', {
    get() {
      if (crossOrigin) throw new Error('SecurityError');
      return { body, querySelector: (sel) => (sel === 'tb-webapp' && tensorboard ? {} : null) };
    },
  });
  return { parent };
}

test('TensorBoard\'s own toggle wins; outside it, the browser\'s scheme', () => {
  assert.equal(chooseTheme(true, false), 'dark');
  assert.equal(chooseTheme(false, true), 'light');
  assert.equal(chooseTheme(null, true), 'dark');
  assert.equal(chooseTheme(null, false), 'light');
});

test('parentDark reads body.dark-mode of TensorBoard\'s page, null elsewhere', () => {
  assert.equal(parentDark(fakeWindow({ dark: true })), true);
  assert.equal(parentDark(fakeWindow({ dark: false })), false);
  assert.equal(parentDark(fakeWindow({ dark: true, tensorboard: false })), null);
  assert.equal(parentDark(fakeWindow({ dark: true, crossOrigin: true })), null);
  const top = {};
  top.parent = top;
  assert.equal(parentDark(top), null);
  assert.equal(parentDark(undefined), null);
});
