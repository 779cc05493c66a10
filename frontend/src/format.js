// Formatting of numbers, hyperparameters, diffs, steps and the trainer's
// status for the Retune tab. Pure functions: no DOM, no fetch.

import SCHEMA from './control_schema.json' with { type: 'json' };

// The control file's rules come from the Python side
// (tb_retune/experiment/control.py, written into control_schema.json by
// frontend/tools/control_schema.py at build time): no hand copy to drift.

/** Short names used in labels; control.SHORT_NAMES. */
export const SHORT_NAMES = Object.freeze({ ...SCHEMA.short_names });

/** Each number hyperparameter's allowed range: control._RANGES. */
export const RANGES = Object.freeze({ ...SCHEMA.ranges });

/** Hyperparameters that may be null ("turned off"). */
export const NULLABLE = new Set(Object.keys(RANGES).filter((name) => RANGES[name].nullable));

/** Hyperparameters that are fixed when the optimizer is built: control.FIXED_AT_BUILD. */
export const FIXED_AT_BUILD = new Set(SCHEMA.fixed_at_build);

/** Hyperparameters that are booleans (checkboxes in the form). */
const BOOLEANS = new Set(SCHEMA.booleans);

/**
 * What is wrong with `value` for `name` by control.py's ranges, worded as
 * the trainer words it (`must be >= 0 and <= 1`), or null when it is allowed.
 */
export function rangeError(name, value) {
  const r = Object.prototype.hasOwnProperty.call(RANGES, name) ? RANGES[name] : null;
  if (!r) return null;
  const lo = r.min === null ? -Infinity : r.min;
  const hi = r.max === null ? Infinity : r.max;
  const ok = (value > lo || (r.min_inclusive && value === lo)) && (value < hi || (r.max_inclusive && value === hi));
  if (ok) return null;
  const allowed = [];
  if (r.min !== null) allowed.push(`${r.min_inclusive ? '>=' : '>'} ${formatValue(r.min)}`);
  if (r.max !== null) allowed.push(`${r.max_inclusive ? '<=' : '<'} ${formatValue(r.max)}`);
  return `must be ${allowed.join(' and ')}${r.nullable ? ' (or null to turn it off)' : ''}`;
}

export function shortName(name) {
  return Object.prototype.hasOwnProperty.call(SHORT_NAMES, name) ? SHORT_NAMES[name] : String(name);
}

/**
 * Formats like Python's `'%.{precision}g' % value`: 0.0003 -> "0.0003",
 * 1e-5 -> "1e-05", 1234567 -> "1.23457e+06".
 */
export function formatG(value, precision = 6) {
  if (!Number.isFinite(value)) return String(value).replace('Infinity', 'inf').toLowerCase();
  if (value === 0) return '0';
  // Round first: 9.9999999 may round up into the next decade.
  let [mant, e] = value.toExponential(precision - 1).split('e');
  const exponent = Number(e);
  if (exponent < -4 || exponent >= precision) {
    mant = stripZeros(mant);
    const sign = exponent < 0 ? '-' : '+';
    const digits = String(Math.abs(exponent)).padStart(2, '0');
    return `${mant}e${sign}${digits}`;
  }
  return stripZeros(value.toFixed(Math.max(0, precision - 1 - exponent)));
}

function stripZeros(text) {
  if (!text.includes('.')) return text;
  return text.replace(/0+$/, '').replace(/\.$/, '');
}

/**
 * Compact number for labels, as tb_retune.tree.short_number:
 * 0.001 -> "1e-3", 0.0003 -> "3e-4", 0.9 -> "0.9", 12 -> "12".
 */
export function shortNumber(value) {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'boolean') return String(value);
  if (typeof value !== 'number') return String(value);
  // A large tree's labels repeat a few values a thousand times: each is formatted once.
  let text = SHORT.get(value);
  if (text === undefined) {
    if (SHORT.size >= SHORT_MAX) SHORT.clear();
    text = formatShort(value);
    SHORT.set(value, text);
  }
  return text;
}

const SHORT = new Map();
const SHORT_MAX = 10000;

function formatShort(value) {
  if (value === 0) return '0';
  if (!Number.isFinite(value)) return formatG(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e5) return String(value);
  const a = Math.abs(value);
  if (a < 1e-2 || a >= 1e5) {
    let [mant, exp] = value.toExponential(2).split('e');
    mant = stripZeros(mant);
    return `${mant}e${Number(exp)}`;
  }
  return formatG(value, 4);
}

/** A hyperparameter value as the log and the tables show it. */
export function formatValue(value) {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'boolean') return String(value);
  if (typeof value === 'number') return formatG(value, 6);
  if (typeof value === 'string') return value;
  return JSON.stringify(value);
}

/** A metric value: 4 significant digits. */
export function formatMetric(value) {
  if (typeof value !== 'number') return value === null || value === undefined ? '–' : String(value);
  if (!Number.isFinite(value)) return formatG(value);
  return formatG(value, 4);
}

/** "0–1,200"-style step range; an open range while the node is current. */
export function formatSteps(start, end) {
  if (end === null || end === undefined || end === start) return `step ${start}`;
  return `steps ${start}–${end}`;
}

/** "3 s", "2 min 5 s", "1 h 4 min", "3 d 2 h". */
export function formatAge(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return 'a while';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d} d ${h % 24} h` : `${d} d`;
}

/** "14:03:07" local time of a Unix timestamp in seconds. */
export function formatClock(unixSeconds) {
  if (typeof unixSeconds !== 'number' || !Number.isFinite(unixSeconds)) return '';
  const d = new Date(unixSeconds * 1000);
  const pad = (n) => String(n).padStart(2, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/**
 * A node's diff from its parent, as rows: `{name, short, old, new, text}`,
 * sorted by name. `diff` is `{name: [old, new]}` as the tree route gives it.
 */
export function diffRows(diff) {
  if (!diff || typeof diff !== 'object') return [];
  return Object.keys(diff)
    .sort()
    .map((name) => {
      const pair = Array.isArray(diff[name]) ? diff[name] : [undefined, diff[name]];
      const [oldValue, newValue] = pair;
      return {
        name,
        short: shortName(name),
        old: oldValue,
        new: newValue,
        text: `${name} ${formatValue(oldValue)} → ${formatValue(newValue)}`,
      };
    });
}

/** "lr 1e-3 → 3e-4, mom 0.9 → 0.5 @ 1200", as tb_retune.tree.change_label. */
export function changeLabel(diff, step) {
  const parts = diffRows(diff).map((r) => `${r.short} ${shortNumber(r.old)} → ${shortNumber(r.new)}`);
  return parts.length ? `${parts.join(', ')} @ ${step}` : `@ ${step}`;
}

/**
 * Splits a node's metrics into rows `{name, train, val}`: `loss` and
 * `val_loss` share a row. Train metrics first, in name order.
 */
export function metricRows(metrics) {
  if (!metrics || typeof metrics !== 'object') return [];
  const rows = new Map();
  for (const tag of Object.keys(metrics).sort()) {
    const isVal = tag.startsWith('val_');
    const base = isVal ? tag.slice(4) : tag;
    if (!rows.has(base)) rows.set(base, { name: base, train: null, val: null });
    const point = metrics[tag];
    const entry = point && typeof point === 'object' ? point : { value: point, step: null };
    rows.get(base)[isVal ? 'val' : 'train'] = entry;
  }
  return [...rows.values()].sort((a, b) => {
    const order = (r) => (r.name === 'loss' ? 0 : 1);
    return order(a) - order(b) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  });
}

/**
 * The trainer's state in words: `{level, text}` with level one of `ok`,
 * `done`, `warn`, `error`, `none`.
 */
export function trainerSummary(trainer, status) {
  const state = trainer && trainer.state ? trainer.state : 'unknown';
  const step = status && typeof status.step === 'number' ? status.step : null;
  const branch = status && status.branch ? status.branch : null;
  const where = [step !== null ? `step ${step}` : null, branch ? `branch ${branch}` : null]
    .filter(Boolean)
    .join(', ');
  switch (state) {
    case 'training':
      return { level: 'ok', text: `Training${where ? ` at ${where}` : ''}` };
    case 'finished':
      return { level: 'done', text: `Finished${step !== null ? ` at step ${step}` : ''}` };
    case 'stopped':
      return { level: 'done', text: `Stopped${step !== null ? ` at step ${step}` : ''}` };
    case 'failed':
      return { level: 'error', text: `Failed${step !== null ? ` at step ${step}` : ''}` };
    case 'not_responding':
      return {
        level: 'warn',
        text: `Not responding for ${formatAge(trainer.age_s)}${step !== null ? ` (last at step ${step})` : ''}`,
      };
    default:
      return { level: 'none', text: 'No trainer has reported yet' };
  }
}

// ---------------------------------------------------------------------------
// Links to TensorBoard's Scalars (time series) dashboard.

/**
 * Escapes the characters that are special in a regular expression (and no
 * others, so the pattern is also valid with the `u` flag).
 */
export function escapeRegex(text) {
  return String(text).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A regex that matches exactly the given run names. */
export function runsRegex(runs) {
  const names = [...new Set(runs)].sort();
  if (names.length === 0) return '^$';
  if (names.length === 1) return `^${escapeRegex(names[0])}$`;
  // Factor out a common "<experiment>/" prefix to keep the URL short.
  const slash = names[0].lastIndexOf('/');
  const prefix = slash >= 0 ? names[0].slice(0, slash + 1) : '';
  if (prefix && names.every((n) => n.startsWith(prefix) && !n.slice(prefix.length).includes('/'))) {
    return `^${escapeRegex(prefix)}(${names.map((n) => escapeRegex(n.slice(prefix.length))).join('|')})$`;
  }
  return `^(${names.map(escapeRegex).join('|')})$`;
}

/**
 * The URL of TensorBoard's time series (Scalars) dashboard with its run
 * filter set: `<root>?runFilter=<regex>#timeseries`. TensorBoard 2.21 reads
 * `runFilter` (and `tagFilter`) from the page's query string and the
 * dashboard from the hash.
 *
 * @param {string} root TensorBoard's root URL, ending in "/".
 * @param {string[]} runs Run names to show.
 * @param {{tagFilter?: string}} [options]
 */
export function scalarsUrl(root, runs, options = {}) {
  const params = new URLSearchParams();
  params.set('runFilter', runsRegex(runs));
  if (options.tagFilter) params.set('tagFilter', options.tagFilter);
  return `${root}?${params.toString()}#timeseries`;
}

/**
 * TensorBoard's root URL as seen from the tab's iframe, whose page is
 * `<root>data/plugin_entry.html?name=retune`; the server's root elsewhere.
 */
export function tensorboardRoot(iframeHref) {
  const url = new URL(iframeHref);
  const marker = '/data/plugin_entry.html';
  const at = url.pathname.lastIndexOf(marker);
  return `${url.origin}${at >= 0 ? url.pathname.slice(0, at + 1) : '/'}`;
}

// ---------------------------------------------------------------------------
// Hyperparameter input, checked before anything is sent.

/** The kind of input a hyperparameter gets: `bool`, `number` or `fixed`. */
export function inputKind(name, current) {
  if (FIXED_AT_BUILD.has(name)) return 'fixed';
  if (typeof current === 'boolean' || BOOLEANS.has(name)) return 'bool';
  if (typeof current === 'string') return 'fixed';
  if (current !== null && typeof current === 'object') return 'fixed';
  return 'number';
}

/**
 * Parses one value typed into the form. Returns `{value}` or `{error}`.
 * An empty field or "null"/"none" means null where null is allowed.
 */
export function parseNumberInput(name, raw, current) {
  const text = String(raw ?? '').trim();
  if (text === '' || /^(null|none|off)$/i.test(text)) {
    if (NULLABLE.has(name) || current === null) return { value: null };
    return { error: `${name}: enter a number` };
  }
  // Number() accepts "0x10" and " "; only plain decimal notation is taken.
  if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(text)) {
    if (/^[+-]?(inf|infinity|nan)$/i.test(text)) return { error: `${name}: must be a finite number, got ${text}` };
    return { error: `${name}: must be a number, got "${text}"` };
  }
  const value = Number(text);
  if (!Number.isFinite(value)) return { error: `${name}: must be a finite number, got ${text}` };
  const wrong = rangeError(name, value);
  if (wrong) return { error: `${name}: ${wrong}, got ${text}` };
  return { value };
}

/**
 * Validates the form's fields against the values in force.
 *
 * @param {Object<string, string|boolean>} fields name -> raw text (or boolean for checkboxes)
 * @param {Object<string, *>} current the hyperparameters in force
 * @returns {{values: Object<string, *>, changed: Object<string, *>, errors: string[]}}
 *   `values` every parsed field, `changed` those that differ from `current`.
 */
export function validateForm(fields, current) {
  const values = {};
  const changed = {};
  const errors = [];
  for (const name of Object.keys(fields)) {
    const now = current ? current[name] : undefined;
    const kind = inputKind(name, now);
    if (kind === 'fixed') continue;
    if (kind === 'bool') {
      values[name] = Boolean(fields[name]);
    } else {
      const parsed = parseNumberInput(name, fields[name], now);
      if ('error' in parsed) {
        errors.push(parsed.error);
        continue;
      }
      values[name] = parsed.value;
    }
    if (!sameValue(values[name], now)) changed[name] = values[name];
  }
  return { values, changed, errors };
}

/**
 * Parses the optional hyperparameters typed for after a restore:
 * `learning_rate=1e-4, momentum=0.8` or a JSON object. Returns
 * `{values}` or `{error}`; an empty text gives `{values: {}}`.
 */
export function parseAssignments(text, current) {
  const trimmed = String(text ?? '').trim();
  if (!trimmed) return { values: {} };
  let raw;
  if (trimmed.startsWith('{')) {
    try {
      raw = JSON.parse(trimmed);
    } catch (e) {
      return { error: `not valid JSON: ${e.message}` };
    }
    if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return { error: 'write a JSON object of name: value' };
  } else {
    raw = {};
    for (const part of trimmed.split(/[,;\n]+/)) {
      if (!part.trim()) continue;
      const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*[=:]\s*(.*?)\s*$/.exec(part);
      if (!m) return { error: `write name=value pairs, e.g. learning_rate=1e-4; got "${part.trim()}"` };
      raw[m[1]] = m[2];
    }
  }
  const values = {};
  for (const [name, value] of Object.entries(raw)) {
    if (current && !(name in current)) {
      const known = Object.keys(current).filter((n) => !FIXED_AT_BUILD.has(n)).sort().join(', ');
      return { error: `${name}: unknown hyperparameter; this optimizer has: ${known}` };
    }
    const now = current ? current[name] : undefined;
    const kind = inputKind(name, now);
    if (kind === 'fixed') return { error: `${name}: cannot be changed during training` };
    if (kind === 'bool') {
      if (typeof value === 'boolean') values[name] = value;
      else if (/^(true|false)$/i.test(String(value))) values[name] = /^true$/i.test(String(value));
      else return { error: `${name}: must be true or false, got "${value}"` };
      continue;
    }
    if (typeof value === 'number' || value === null) {
      const parsed = parseNumberInput(name, value === null ? '' : String(value), now);
      if ('error' in parsed) return parsed;
      values[name] = parsed.value;
      continue;
    }
    const parsed = parseNumberInput(name, value, now);
    if ('error' in parsed) return parsed;
    values[name] = parsed.value;
  }
  return { values };
}

/**
 * Whether two hyperparameter values are the same; numbers compare with a
 * relative tolerance, as the trainer may hold them as float32.
 */
export function sameValue(a, b) {
  if (typeof a === 'number' && typeof b === 'number') {
    if (a === b) return true;
    return Math.abs(a - b) <= 1e-6 * Math.max(Math.abs(a), Math.abs(b));
  }
  return a === b || (a == null && b == null);
}
