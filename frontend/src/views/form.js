// The hyperparameter form: the values in force, checked before anything is sent.

import { h, replaceChildren } from '../dom.js';
import { formatValue, inputKind, sameValue } from '../format.js';

/**
 * Builds the form for the hyperparameters in force. Returns `{form, fields}`
 * where `fields` maps a name to `{input, kind}`.
 */
export function buildForm(el, { hyperparameters, onSubmit, onReset, onInput, error, message, writable }) {
  const names = Object.keys(hyperparameters).sort();
  const fields = new Map();
  const rows = names.map((name) => {
    const value = hyperparameters[name];
    const kind = inputKind(name, value);
    const id = `hp-${name}`;
    let input;
    if (kind === 'bool') {
      input = h('input', { type: 'checkbox', id, name, checked: Boolean(value), oninput: () => onInput(name) });
    } else if (kind === 'number') {
      input = h('input', {
        type: 'text',
        inputmode: 'decimal',
        autocomplete: 'off',
        spellcheck: 'false',
        id,
        name,
        value: value === null ? '' : formatValue(value),
        placeholder: value === null ? 'null (off)' : null,
        oninput: () => onInput(name),
      });
    } else {
      input = h('input', { type: 'text', id, name, value: formatValue(value), readonly: true, class: 'fixed', title: 'Fixed when the optimizer is built' });
    }
    fields.set(name, { input, kind });
    return h('div', { class: `field field-${kind}` }, h('label', { for: id }, name), input);
  });
  const submit = h('button', { type: 'submit', class: 'primary', disabled: !writable }, 'Apply');
  const reset = h('button', { type: 'button', onclick: onReset }, 'Reset');
  const form = h(
    'form',
    { class: 'hp-form', novalidate: true, onsubmit: (e) => { e.preventDefault(); onSubmit(); } },
    h('div', { class: 'fields' }, rows),
    error,
    h('div', { class: 'actions' }, submit, reset),
    message,
  );
  replaceChildren(
    el,
    h('h2', {}, 'Set hyperparameters'),
    h('p', { class: 'hint' }, 'Values in force now. Applied at the next batch after the trainer reads retune.json.'),
    form,
  );
  return { form, fields };
}

/**
 * The form's card. Rebuilt only when the optimizer's hyperparameters (their
 * names) or the logdir's writability change; fields the person has not
 * touched follow the values in force, and values written and not yet
 * applied stay shown until the trainer applies them.
 */
export class FormView {
  constructor(el, redraw, { onSubmit, onReset }) {
    this.el = el;
    this.redraw = redraw;
    this.onSubmit = onSubmit;
    this.onReset = onReset;
    this.fields = null;
    this.dirty = new Set();
    this.error = h('div', { class: 'form-error', role: 'alert' });
    this.message = h('div', { class: 'form-message', role: 'status' });
  }

  /** name -> raw text (or boolean for checkboxes) of the fields that can change. */
  values() {
    const out = {};
    for (const [name, f] of this.fields || []) {
      if (f.kind === 'fixed') continue;
      out[name] = f.kind === 'bool' ? f.input.checked : f.input.value;
    }
    return out;
  }

  clear() {
    this.dirty = new Set();
    this.fields = null;
    this.error.textContent = '';
    this.message.textContent = '';
    this.redraw.forget('form');
    this.el.textContent = '';
  }

  reset() {
    this.dirty = new Set();
    this.redraw.forget('form');
    this.error.textContent = '';
    this.message.textContent = '';
  }

  /**
   * @param {object|null} tree the tree answer
   * @param {string|null} experiment
   * @param {Set<string>} pending names written and not yet applied
   */
  render(tree, experiment, pending) {
    const status = tree && tree.status;
    const hps = status && status.hyperparameters && typeof status.hyperparameters === 'object' ? status.hyperparameters : null;
    if (!hps) {
      this.fields = null;
      this.redraw.ifChanged('form', ['none', Boolean(tree)], () => {
        replaceChildren(this.el, h('h2', {}, 'Set hyperparameters'),
          h('p', { class: 'muted' }, tree ? 'The trainer has not reported its hyperparameters yet.' : 'Loading…'));
      });
      return;
    }
    const writable = tree.writable !== false;
    this.redraw.ifChanged('form', [experiment, Object.keys(hps).sort(), writable], () => {
      this.fields = buildForm(this.el, {
        hyperparameters: hps,
        writable,
        error: this.error,
        message: this.message,
        onSubmit: this.onSubmit,
        onReset: () => {
          this.reset();
          this.onReset();
        },
        onInput: (name) => {
          this.dirty.add(name);
          this.error.textContent = '';
        },
      }).fields;
    });
    for (const [name, f] of this.fields) {
      if (this.dirty.has(name) || pending.has(name) || document.activeElement === f.input) continue;
      const value = hps[name];
      if (f.kind === 'bool') f.input.checked = Boolean(value);
      else {
        const text = value === null || value === undefined ? '' : formatValue(value);
        if (f.input.value !== text && !sameValue(Number(f.input.value), value)) f.input.value = text;
      }
    }
  }
}
