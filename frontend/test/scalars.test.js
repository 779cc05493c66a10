import assert from 'node:assert/strict';
import { test } from 'node:test';

import { escapeRegex, runsRegex, scalarsUrl, tensorboardRoot } from '../src/format.js';
import { fixture } from './helpers.js';

const OTHER_RUNS = ['digits2/main', 'digits/main-s1/extra', 'xdigits/main', 'digits/main-s10', 'main', 'sweeps/b/main'];

test('runsRegex matches exactly the runs of each fixture experiment', () => {
  for (const name of ['tree_small', 'tree_branchy', 'tree_root']) {
    const runs = fixture(name).branches.map((b) => b.run);
    const source = runsRegex(runs);
    for (const flags of ['', 'i', 'u']) {
      const re = new RegExp(source, flags);
      for (const run of runs) assert.ok(re.test(run), `${name}: ${source} matches ${run}`);
      for (const run of OTHER_RUNS.filter((r) => !runs.includes(r))) {
        if (flags === 'i') continue;
        assert.ok(!re.test(run), `${name}: ${source} does not match ${run}`);
      }
    }
  }
  assert.equal(runsRegex(['digits/main', 'digits/main-s1']), '^digits/(main|main-s1)$');
  assert.equal(runsRegex(['main']), '^main$');
  assert.equal(runsRegex([]), '^$');
});

test('run names with regex characters are escaped', () => {
  const runs = ['exp (1)/a+b', 'exp (1)/c.d', 'exp (1)/x<img src=x onerror=alert(1)>'];
  const re = new RegExp(runsRegex(runs), 'u');
  for (const r of runs) assert.ok(re.test(r));
  assert.ok(!re.test('exp (1)/aab'));
  assert.ok(!re.test('exp (1)/cxd'));
  assert.equal(escapeRegex('a.b*c'), 'a\\.b\\*c');
});

test('scalarsUrl opens the time series dashboard with the run filter', () => {
  const url = scalarsUrl('http://127.0.0.1:6006/', ['digits/main', 'digits/main-s1']);
  assert.equal(url, 'http://127.0.0.1:6006/?runFilter=%5Edigits%2F%28main%7Cmain-s1%29%24#timeseries');
  const parsed = new URL(url);
  assert.equal(parsed.searchParams.get('runFilter'), '^digits/(main|main-s1)$');
  assert.equal(parsed.hash, '#timeseries');
  const tagged = new URL(scalarsUrl('http://h/', ['a'], { tagFilter: 'loss' }));
  assert.equal(tagged.searchParams.get('tagFilter'), 'loss');
});

test('tensorboardRoot finds the root from the plugin frame, also under a path prefix', () => {
  assert.equal(tensorboardRoot('http://127.0.0.1:6006/data/plugin_entry.html?name=retune'), 'http://127.0.0.1:6006/');
  assert.equal(tensorboardRoot('https://h.example/tb/x/data/plugin_entry.html?name=retune'), 'https://h.example/tb/x/');
  assert.equal(tensorboardRoot('http://h/some/page.html'), 'http://h/');
});
