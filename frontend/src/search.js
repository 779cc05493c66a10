// A search (issue 17), pure: the request that "Search from here" writes,
// checked with the rules of tb_retune/experiment/search.py (the same key
// names and limits, the value rules of control_schema.json), and the
// `searches[id]` entries of the status read back as progress, a ranked list
// of trials and the trial branches of each search.

import { FIXED_AT_BUILD, formatValue, inputKind, parseNumberInput, rangeError } from './format.js';

export const SAMPLERS = Object.freeze(['tpe', 'random', 'grid', 'qmc']);
export const PRUNERS = Object.freeze(['none', 'median', 'successive_halving', 'hyperband']);
export const THEN = Object.freeze(['best', 'source']);
export const MODES = Object.freeze(['min', 'max']);
export const MAX_TRIALS = 10000;
export const MAX_CHOICES = 100;

const MIN_SUFFIXES = ['loss', 'error', 'mae', 'mse', 'mape', 'msle', 'crossentropy', 'perplexity'];
const MAX_SUFFIXES = ['accuracy', 'acc', 'auc', 'precision', 'recall', 'f1', 'f1_score', 'iou'];

/** `min` for losses and errors, `max` for accuracies, null when unknown (search.default_mode). */
export function defaultMode(metric) {
  const name = metric.startsWith('val_') ? metric.slice(4) : metric;
  if (MIN_SUFFIXES.some((s) => name.endsWith(s))) return 'min';
  if (MAX_SUFFIXES.some((s) => name.endsWith(s))) return 'max';
  return null;
}

/** The hyperparameters a search can vary: those in force that the form can set. */
export function searchable(hyperparameters) {
  return Object.keys(hyperparameters || {})
    .filter((name) => !FIXED_AT_BUILD.has(name) && inputKind(name, hyperparameters[name]) !== 'fixed')
    .sort();
}

/** The editor's starting dimension for `name`: choices for a boolean, else a range around the value. */
export function defaultDimension(name, current) {
  if (inputKind(name, current) === 'bool') return { on: false, kind: 'choices', choices: 'true, false' };
  const v = typeof current === 'number' && Number.isFinite(current) ? current : null;
  if (v !== null && v > 0) {
    const high = rangeError(name, v * 10) === null ? v * 10 : v;
    return { on: name === 'learning_rate', kind: 'range', low: formatValue(v / 10), high: formatValue(high), log: true, step: '' };
  }
  return { on: false, kind: 'range', low: '0', high: v === null ? '' : formatValue(v), log: false, step: '' };
}

/** The metrics a branch logs, from its nodes' `metrics` (loss and val_* included). */
export function loggedMetrics(tree) {
  const names = new Set();
  for (const n of (tree && tree.nodes) || []) for (const tag of Object.keys(n.metrics || {})) names.add(tag);
  const status = tree && tree.status;
  if (status && Array.isArray(status.metrics)) for (const m of status.metrics) names.add(String(m));
  return [...names].sort((a, b) => (a === 'loss' ? -1 : b === 'loss' ? 1 : a.localeCompare(b)));
}

function count(where, raw, what, most) {
  const text = String(raw ?? '').trim();
  const value = Number(text);
  if (text === '' || !/^\d+$/.test(text)) return { error: `${where}: must be ${what} (an integer >= 1), got "${text}"` };
  if (value < 1 || value > most) return { error: `${where}: must be ${what} between 1 and ${most}, got ${value}` };
  return { value };
}

function oneValue(where, name, raw, current) {
  const parsed = parseNumberInput(name, raw, current);
  if (parsed.error) return { error: `${where}: ${parsed.error.replace(/^[^:]*: /, '')}` };
  if (parsed.value === null) return { error: `${where}: must be a number, got null` };
  return parsed;
}

function parseChoice(text, bool) {
  const t = text.trim();
  if (bool) return /^true$/i.test(t) ? true : /^false$/i.test(t) ? false : undefined;
  return t;
}

/** One dimension of the editor as the request's `space[name]`, or `{error}`. */
export function dimensionRequest(name, dim, current) {
  const where = `search.space.${name}`;
  const bool = inputKind(name, current) === 'bool';
  if (dim.kind === 'choices') {
    const parts = String(dim.choices ?? '').split(',').map((p) => p.trim()).filter((p) => p !== '');
    if (!parts.length || parts.length > MAX_CHOICES) return { error: `${where}.choices: must be a list of 1 to ${MAX_CHOICES} values` };
    const out = [];
    for (const [i, part] of parts.entries()) {
      let value;
      if (bool) {
        value = parseChoice(part, true);
        if (value === undefined) return { error: `${where}.choices[${i}]: must be true or false, got "${part}"` };
      } else {
        const one = oneValue(`${where}.choices[${i}]`, name, part, current);
        if (one.error) return one;
        value = one.value;
      }
      if (out.some((c) => c === value)) return { error: `${where}.choices[${i}]: ${formatValue(value)} is listed twice` };
      out.push(value);
    }
    return { value: { choices: out } };
  }
  if (bool) return { error: `${where}: ${name} is true or false, so it takes choices, e.g. true, false` };
  const low = oneValue(`${where}.low`, name, dim.low, current);
  if (low.error) return low;
  const high = oneValue(`${where}.high`, name, dim.high, current);
  if (high.error) return high;
  if (low.value > high.value) return { error: `${where}: low ${formatValue(low.value)} must be <= high ${formatValue(high.value)}` };
  const spec = { low: low.value, high: high.value };
  if (dim.log) {
    if (low.value <= 0) return { error: `${where}.low: must be > 0 on a log scale, got ${formatValue(low.value)}` };
    spec.log = true;
  }
  const stepText = String(dim.step ?? '').trim();
  if (stepText !== '') {
    const step = Number(stepText);
    if (!Number.isFinite(step) || step <= 0 || !/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(stepText)) {
      return { error: `${where}.step: must be a number > 0, got "${stepText}"` };
    }
    if (dim.log) return { error: `${where}.step: a range is either on a log scale or in steps, not both; drop log or step` };
    spec.step = step;
  }
  // An integer hyperparameter's bounds are the server's check: JSON gives the tab no int/float
  // difference (1.0 arrives as 1), so the tab cannot tell an integer from a float that is whole.
  return { value: spec };
}

function gridPoints(spec) {
  if (spec.choices) return spec.choices.length;
  if (spec.step === undefined) return null;
  return Math.floor((spec.high - spec.low) / spec.step + 1e-9) + 1;
}

/**
 * The search request of the form, checked as `parse_search` checks it.
 *
 * @param {object} fields `{space: {name: {on, kind, low, high, log, step, choices}}, trials,
 *   steps_per_trial, metric, mode, sampler, pruner, then}` (the editor's raw text)
 * @param {object} context `{from: {branch, step}, hyperparameters, metrics}`
 * @returns {{request?: object, errors: string[]}}
 */
export function buildSearchRequest(fields, context) {
  const errors = [];
  const known = context.hyperparameters || {};
  const space = {};
  for (const [name, dim] of Object.entries(fields.space || {})) {
    if (!dim.on) continue;
    if (!(name in known)) {
      errors.push(`search.space.${name}: unknown hyperparameter; the optimizer has: ${Object.keys(known).sort().join(', ')}`);
      continue;
    }
    const r = dimensionRequest(name, dim, known[name]);
    if (r.error) errors.push(r.error);
    else space[name] = r.value;
  }
  if (!Object.keys(space).length && !errors.length) errors.push('search.space: pick at least one hyperparameter to vary');
  const trials = count('search.trials', fields.trials, 'the number of trials', MAX_TRIALS);
  const steps = count('search.steps_per_trial', fields.steps_per_trial, 'the steps of each trial', 1e12);
  for (const r of [trials, steps]) if (r.error) errors.push(r.error);
  const metric = String(fields.metric ?? '').trim();
  const metrics = context.metrics || null;
  if (!metric) errors.push('search.objective.metric: missing; name a metric that fit logs, e.g. val_loss');
  else if (metrics && metrics.length && !metrics.includes(metric)) {
    errors.push(`search.objective.metric: fit does not log "${metric}"; it logs: ${metrics.join(', ')}`);
  }
  const mode = fields.mode || (metric ? defaultMode(metric) : null);
  if (metric && !mode) errors.push(`search.objective.mode: missing; say "min" or "max" for metric "${metric}"`);
  else if (mode && !MODES.includes(mode)) errors.push(`search.objective.mode: unknown mode "${mode}"; one of ${MODES.join(', ')}`);
  const choice = (key, value, allowed, what) => {
    if (!allowed.includes(value)) errors.push(`search.${key}: unknown ${what} "${value}"; one of ${allowed.join(', ')}`);
  };
  const sampler = fields.sampler || 'tpe';
  const pruner = fields.pruner || 'none';
  const then = fields.then || 'best';
  choice('sampler', sampler, SAMPLERS, 'sampler');
  choice('pruner', pruner, PRUNERS, 'pruner');
  choice('then', then, THEN, 'then');
  if (!errors.length && sampler === 'grid') {
    let points = 1;
    for (const [name, spec] of Object.entries(space)) {
      const n = gridPoints(spec);
      if (n === null) {
        errors.push(`search.space.${name}: the grid sampler needs a step for a range (e.g. low 0, high 0.9, step 0.1) or choices`);
        break;
      }
      points *= n;
    }
    if (!errors.length && trials.value > points + 1) {
      errors.push(`search.trials: the grid has ${points} points, so with the baseline trial (the source's own settings) at most ${points + 1} trials, got ${trials.value}`);
    }
  }
  if (errors.length) return { errors };
  const request = {
    space,
    trials: trials.value,
    steps_per_trial: steps.value,
    objective: { metric, mode },
    sampler,
    pruner,
    then,
  };
  if (context.from) request.from = { branch: context.from.branch, step: context.from.step };
  return { request, errors: [] };
}

// ---------------------------------------------------------------------------
// Reading `searches[id]` back.

/** The searches of a tree's status as `[{id, ...entry}]`, running ones first, then newest first. */
export function searchList(tree) {
  const searches = tree && tree.status && tree.status.searches;
  if (!searches || typeof searches !== 'object') return [];
  const list = Object.entries(searches)
    .filter(([, e]) => e && typeof e === 'object')
    .map(([id, e]) => ({ id, ...e, trials: Array.isArray(e.trials) ? e.trials : [] }));
  const order = (e) => (e.state === 'running' ? 0 : 1);
  return list.map((e, i) => [e, i]).sort((a, b) => order(a[0]) - order(b[0]) || b[1] - a[1]).map(([e]) => e);
}

/**
 * Trials done (complete), running, pruned and failed; the total asked; the best so far.
 * A lost trial (`interrupted`: its process died and it runs again as another) is not counted.
 */
export function searchProgress(entry) {
  const by = { complete: 0, running: 0, pruned: 0, failed: 0 };
  for (const t of entry.trials || []) if (t.state in by && !t.interrupted) by[t.state] += 1;
  const total = typeof entry.total === 'number' ? entry.total : null;
  return { done: by.complete, running: by.running, pruned: by.pruned, failed: by.failed, total, best: entry.best || null };
}

/** Where a trial ran: `host:pid` of its `worker`, or null. */
export function workerText(worker) {
  if (!worker || typeof worker !== 'object' || worker.host === undefined) return null;
  return `${worker.host}:${worker.pid}`;
}

/** `done 3 / 8 · running 1 · pruned 2 · best 0.412 (trial 2)`. */
export function progressText(entry) {
  const p = searchProgress(entry);
  const parts = [`done ${p.done}${p.total !== null ? ` / ${p.total}` : ''}`, `running ${p.running}`, `pruned ${p.pruned}`];
  if (p.failed) parts.push(`failed ${p.failed}`);
  const metric = entry.objective && entry.objective.metric;
  parts.push(p.best && typeof p.best.value === 'number'
    ? `best ${metric ? `${metric} ` : ''}${formatValue(p.best.value)} (trial ${p.best.number})`
    : 'no best yet');
  return parts.join(' · ');
}

const STATE_ORDER = { complete: 0, running: 1, pruned: 2, failed: 3 };

/**
 * The trials ranked: complete ones by value (best first, by the objective's
 * mode; the lower number on a tie), then running, pruned, failed.
 * Each: `{rank, number, branch, value, state, hyperparameters, best, worker, lost, retryOf}`
 * (`worker`: `host:pid` of the process that ran it; `lost`: its process died, it ran again).
 */
export function rankedTrials(entry) {
  const sign = entry.objective && entry.objective.mode === 'max' ? -1 : 1;
  const bestNumber = entry.best ? entry.best.number : null;
  const trials = (entry.trials || []).map((t) => ({
    number: t.number,
    branch: t.branch || null,
    value: typeof t.value === 'number' ? t.value : null,
    state: String(t.state || 'running'),
    hyperparameters: t.hyperparameters || {},
    baseline: Boolean(t.baseline),
    best: t.number === bestNumber,
    worker: workerText(t.worker),
    lost: Boolean(t.interrupted),
    retryOf: typeof t.retry_of === 'number' ? t.retry_of : null,
  }));
  trials.sort((a, b) => {
    const sa = STATE_ORDER[a.state] ?? 4;
    const sb = STATE_ORDER[b.state] ?? 4;
    if (sa !== sb) return sa - sb;
    if (a.state === 'complete' && a.value !== null && b.value !== null && a.value !== b.value) return sign * (a.value - b.value);
    return a.number - b.number;
  });
  let rank = 0;
  return trials.map((t) => ({ ...t, rank: t.state === 'complete' && t.value !== null ? ++rank : null }));
}

/** A trial's settings as text: `learning_rate=0.01, nesterov=true` (`name` shortens the names). */
export function settingsText(hyperparameters, name = (k) => k) {
  return Object.entries(hyperparameters || {}).map(([k, v]) => `${name(k)}=${formatValue(v)}`).join(', ');
}

/**
 * The trial branches of the tree's searches: branch name -> `{search, number, best}`.
 * From the status' `searches[id].trials[].branch`, and from a node's `search`
 * record (`{id, trial}`) where the tree reply carries it.
 */
export function trialBranches(tree) {
  const out = new Map();
  for (const e of searchList(tree)) {
    const bestBranch = e.best ? e.best.branch : null;
    for (const t of e.trials) {
      if (typeof t.branch === 'string' && t.branch) out.set(t.branch, { search: e.id, number: t.number, best: t.branch === bestBranch });
    }
  }
  for (const n of (tree && tree.nodes) || []) {
    const rec = n.search;
    if (rec && typeof rec.id === 'string' && typeof rec.trial === 'number' && !out.has(n.branch)) {
      out.set(n.branch, { search: rec.id, number: rec.trial, best: false });
    }
  }
  return out;
}
