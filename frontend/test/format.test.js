import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  changeLabel,
  diffRows,
  formatAge,
  formatG,
  formatMetric,
  formatSteps,
  formatValue,
  metricRows,
  parseAssignments,
  parseNumberInput,
  sameValue,
  shortNumber,
  trainerSummary,
  validateForm,
} from '../src/format.js';
import { fixture, treeFixtures } from './helpers.js';

test('formatG matches Python %g', () => {
  const cases = [
    [0.001, '0.001'],
    [0.0003, '0.0003'],
    [1e-5, '1e-05'],
    [3e-4, '0.0003'],
    [0.9, '0.9'],
    [1234567, '1.23457e+06'],
    [123456, '123456'],
    [-2.5, '-2.5'],
    [0, '0'],
    [9.9999999, '10'],
    [1 / 3, '0.333333'],
  ];
  for (const [v, want] of cases) assert.equal(formatG(v), want, `formatG(${v})`);
  assert.equal(formatG(0.00012345678, 4), '0.0001235');
  assert.equal(formatG(Infinity), 'inf');
});

test('shortNumber matches tb_retune.tree.short_number', () => {
  assert.equal(shortNumber(0.001), '1e-3');
  assert.equal(shortNumber(0.0003), '3e-4');
  assert.equal(shortNumber(0.9), '0.9');
  assert.equal(shortNumber(0.95), '0.95');
  assert.equal(shortNumber(12), '12');
  assert.equal(shortNumber(0), '0');
  assert.equal(shortNumber(null), 'null');
  assert.equal(shortNumber(true), 'true');
  assert.equal(shortNumber(2.5e-7), '2.5e-7');
});

test('changeLabel reproduces the server labels of every changed node in the fixtures', () => {
  let checked = 0;
  for (const name of treeFixtures()) {
    for (const node of fixture(name).nodes) {
      if (node.restore || node.parent === null) continue;
      assert.equal(changeLabel(node.diff, node.start_step), node.label, `${name}: ${node.id}`);
      checked++;
    }
  }
  assert.ok(checked > 30, `only ${checked} nodes checked`);
});

test('diffRows lists the changes in name order, with full names and values', () => {
  const rows = diffRows({ momentum: [0.9, 0.5], learning_rate: [0.001, 0.0003] });
  assert.deepEqual(
    rows.map((r) => r.text),
    ['learning_rate 0.001 → 0.0003', 'momentum 0.9 → 0.5'],
  );
  assert.equal(rows[0].short, 'lr');
  assert.deepEqual(diffRows({}), []);
  assert.deepEqual(diffRows(null), []);
  assert.equal(diffRows({ weight_decay: [null, 0.01] })[0].text, 'weight_decay null → 0.01');
});

test('formatValue, formatMetric, formatSteps, formatAge', () => {
  assert.equal(formatValue(null), 'null');
  assert.equal(formatValue(false), 'false');
  assert.equal(formatValue(0.0003), '0.0003');
  assert.equal(formatValue('SGD'), 'SGD');
  assert.equal(formatMetric(0.312345), '0.3123');
  assert.equal(formatMetric(1.4984605312347412), '1.498');
  assert.equal(formatMetric(12345.6), '1.235e+04');
  assert.equal(formatMetric(0.0000123), '1.23e-05');
  assert.equal(formatMetric(null), '–');
  assert.equal(formatMetric(NaN), 'nan');
  assert.equal(formatSteps(1200, 2400), 'steps 1200–2400');
  assert.equal(formatSteps(0, 0), 'step 0');
  assert.equal(formatAge(42.4), '42 s');
  assert.equal(formatAge(125), '2 min 5 s');
  assert.equal(formatAge(3600 * 2 + 60 * 4), '2 h 4 min');
  assert.equal(formatAge(null), 'a while');
});

test('metricRows pairs train and val metrics, loss first', () => {
  const node = fixture('tree_small').nodes[0];
  const rows = metricRows(node.metrics);
  assert.deepEqual(rows.map((r) => r.name), ['loss', 'accuracy']);
  assert.equal(rows[0].train.value, node.metrics.loss.value);
  assert.equal(rows[0].val.value, node.metrics.val_loss.value);
  assert.deepEqual(metricRows({}), []);
  assert.deepEqual(metricRows({ val_only: { step: 1, value: 2 } })[0], { name: 'only', train: null, val: { step: 1, value: 2 } });
});

test('trainerSummary says training, finished, not responding', () => {
  const small = fixture('tree_small');
  assert.deepEqual(trainerSummary(small.trainer, small.status), { level: 'ok', text: 'Training at step 600, branch main-s2' });
  const branchy = fixture('tree_branchy');
  assert.equal(trainerSummary(branchy.trainer, branchy.status).level, 'done');
  assert.match(trainerSummary(branchy.trainer, branchy.status).text, /^Finished at step \d+$/);
  const stale = trainerSummary({ alive: false, state: 'not_responding', age_s: 95 }, { step: 10 });
  assert.deepEqual(stale, { level: 'warn', text: 'Not responding for 1 min 35 s (last at step 10)' });
  assert.equal(trainerSummary(null, null).level, 'none');
  assert.equal(trainerSummary({ state: 'failed' }, { step: 3 }).level, 'error');
});

test('validateForm: finite numbers, learning_rate >= 0, booleans, only changes are sent', () => {
  const current = fixture('tree_small').status.hyperparameters;
  assert.deepEqual(Object.keys(current).sort(), ['learning_rate', 'momentum', 'nesterov', 'weight_decay']);
  let r = validateForm({ learning_rate: '5e-4', momentum: String(current.momentum), nesterov: true, weight_decay: '' }, current);
  assert.deepEqual(r.errors, []);
  assert.deepEqual(r.changed, { learning_rate: 0.0005, nesterov: true });
  r = validateForm({ learning_rate: '-1', momentum: 'abc', nesterov: false, weight_decay: 'inf' }, current);
  assert.deepEqual(r.errors, [
    'learning_rate: must be >= 0, got -1',
    'momentum: must be a number, got "abc"',
    'weight_decay: must be a finite number, got inf',
  ]);
  r = validateForm({ learning_rate: '0' }, current); // 0 freezes training: allowed, as in the trainer
  assert.deepEqual(r.errors, []);
  assert.deepEqual(r.changed, { learning_rate: 0 });
  r = validateForm({ learning_rate: '' }, current);
  assert.deepEqual(r.errors, ['learning_rate: enter a number']);
  r = validateForm({ learning_rate: '0x10' }, current);
  assert.equal(r.errors.length, 1);
  // The ranges are control.py's (control_schema.json): momentum <= 1 is checked here too.
  r = validateForm({ momentum: '1.5' }, current);
  assert.deepEqual(r.errors, ['momentum: must be >= 0 and <= 1, got 1.5']);
  r = validateForm({ weight_decay: '-0.1' }, current);
  assert.deepEqual(r.errors, ['weight_decay: must be >= 0 (or null to turn it off), got -0.1']);
  // The same value as in force, written differently, is no change.
  r = validateForm({ learning_rate: '0.000300' }, { learning_rate: 0.0003 });
  assert.deepEqual(r.changed, {});
});

test('parseNumberInput allows null only where a hyperparameter can be off', () => {
  assert.deepEqual(parseNumberInput('weight_decay', '', null), { value: null });
  assert.deepEqual(parseNumberInput('clipnorm', 'none', 1), { value: null });
  assert.ok('error' in parseNumberInput('momentum', '', 0.9));
  assert.deepEqual(parseNumberInput('momentum', ' .5 ', 0.9), { value: 0.5 });
  assert.ok('error' in parseNumberInput('momentum', 'NaN', 0.9));
});

test('parseAssignments reads name=value pairs or JSON for after a restore', () => {
  const current = { learning_rate: 0.001, momentum: 0.9, nesterov: false, weight_decay: null, name: 'SGD' };
  assert.deepEqual(parseAssignments('', current), { values: {} });
  assert.deepEqual(parseAssignments('learning_rate=1e-4, momentum: 0.8', current), {
    values: { learning_rate: 0.0001, momentum: 0.8 },
  });
  assert.deepEqual(parseAssignments('{"learning_rate": 0.01, "nesterov": true}', current), {
    values: { learning_rate: 0.01, nesterov: true },
  });
  assert.deepEqual(parseAssignments('nesterov=true', current), { values: { nesterov: true } });
  assert.match(parseAssignments('lr=1', current).error, /^lr: unknown hyperparameter; this optimizer has: learning_rate, momentum, nesterov, weight_decay$/);
  assert.match(parseAssignments('learning_rate=-1', current).error, /must be >= 0/);
  assert.match(parseAssignments('name=Adam', current).error, /cannot be changed/);
  assert.match(parseAssignments('{bad', current).error, /not valid JSON/);
  assert.match(parseAssignments('just words', current).error, /name=value/);
});

test('sameValue tolerates float32 round trips', () => {
  assert.ok(sameValue(0.0003, 0.0003000000142492354));
  assert.ok(!sameValue(0.0003, 0.0004));
  assert.ok(sameValue(null, undefined));
  assert.ok(!sameValue(true, 1));
});

test('the control schema comes from control.py: short names, nullables, fixed and ranges', async () => {
  const { SHORT_NAMES, NULLABLE, FIXED_AT_BUILD, RANGES, rangeError } = await import('../src/format.js');
  assert.equal(SHORT_NAMES.learning_rate, 'lr');
  assert.ok(NULLABLE.has('weight_decay') && NULLABLE.has('clipnorm') && !NULLABLE.has('learning_rate'));
  assert.ok(FIXED_AT_BUILD.has('use_ema'));
  assert.equal(RANGES.beta_1.max, 1);
  assert.equal(RANGES.beta_1.max_inclusive, false);
  assert.equal(rangeError('beta_1', 1), 'must be >= 0 and < 1');
  assert.equal(rangeError('beta_1', 0.5), null);
  assert.equal(rangeError('not_in_schema', -5), null);
});

test('shortNumber gives the same text from its cache, also once the cache has been emptied', async () => {
  const { shortNumber } = await import('../src/format.js');
  const first = [0.001, 0.0003, 0.9, 12, 1e-5, 123456].map(shortNumber);
  // More distinct values than the cache keeps: it is emptied on the way.
  for (let i = 0; i < 12000; i++) shortNumber(1 + i / 7);
  assert.deepEqual([0.001, 0.0003, 0.9, 12, 1e-5, 123456].map(shortNumber), first);
  assert.deepEqual(first, ['1e-3', '3e-4', '0.9', '12', '1e-5', '1.23e5']);
  assert.equal(shortNumber(1 + 5 / 7), '1.714');
});
