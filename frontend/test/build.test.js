// The committed bundle (tb_retune/static/index.js) is what the sources build
// to: rebuild into a temporary file and compare byte for byte.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { DEFAULT_OUTFILE, build } from '../build.mjs';

test('tb_retune/static/index.js is up to date with frontend/src', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'retune-build-'));
  try {
    const fresh = await build(path.join(dir, 'index.js'));
    const built = readFileSync(fresh);
    const again = await build(path.join(dir, 'again.js'));
    assert.ok(built.equals(readFileSync(again)), 'the build is not deterministic');
    let committed;
    try {
      committed = readFileSync(DEFAULT_OUTFILE);
    } catch {
      assert.fail(`${DEFAULT_OUTFILE} is missing; run \`cd frontend && npm run build\``);
    }
    assert.ok(
      built.equals(committed),
      'tb_retune/static/index.js is stale: run `cd frontend && npm run build` and commit it',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the bundle is one self-contained ES module exporting render()', () => {
  const text = readFileSync(DEFAULT_OUTFILE, 'utf8');
  assert.match(text, /export \{[^}]*\brender\b[^}]*\}/);
  assert.doesNotMatch(text, /^\s*import\s/m, 'no import left: TensorBoard serves one file');
  assert.doesNotMatch(text, /https?:\/\/(?!www\.w3\.org)/, 'no URL to fetch at run time');
  assert.doesNotMatch(text, /\.innerHTML\s*=|insertAdjacentHTML|outerHTML\s*=/, 'no HTML parsing of strings');
});
