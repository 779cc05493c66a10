// The person's actions that write to retune.json: a restore, a change of
// hyperparameters. Each writes through the plugin, records the request so
// the tab can follow it, and asks for fresh data.

import { formatValue, parseAssignments, validateForm } from './format.js';
import { buildSearchRequest, loggedMetrics } from './search.js';

function inForce(app) {
  const status = app.state.tree && app.state.tree.status;
  return (status && status.hyperparameters) || null;
}

/** Writes a restore of the selected node's branch at `step` (and the "then set" values). */
export async function restore(app, step) {
  const experiment = app.state.experiment;
  const item = app.selectedItem();
  if (!item) return;
  const ui = app.nodeCard;
  const branch = item.node.branch;
  const parsed = parseAssignments(ui.restoreInput.value, inForce(app));
  if (parsed.error) {
    app.setMessage(ui.restoreMessage, 'error', `Not written: ${parsed.error}`);
    return;
  }
  app.setMessage(ui.restoreMessage, 'info', `Writing a restore of ${branch} at step ${step}…`);
  let answer;
  try {
    answer = await app.api.restore(experiment, branch, step, parsed.values);
  } catch (e) {
    if (experiment === app.state.experiment) app.setMessage(ui.restoreMessage, 'error', `Not written: ${e.message}`);
    return;
  }
  const id = answer.id || (answer.written && answer.written.restore && answer.written.restore.id);
  const extra = Object.keys(parsed.values).length
    ? `, then ${Object.entries(parsed.values).map(([k, v]) => `${k}=${formatValue(v)}`).join(', ')}`
    : '';
  const what = `restore ${branch} @ ${step}${extra}`;
  app.addRequest({ kind: 'restore', id, experiment, what }, answer);
  if (experiment === app.state.experiment) {
    app.setMessage(ui.restoreMessage, 'ok', `Wrote to retune.json: ${what} (request ${id}). The trainer will start a new branch.`);
  }
  app.poller.now();
}

/** Writes the form's changed values. */
export async function submitForm(app) {
  const experiment = app.state.experiment;
  const form = app.form;
  const { changed, errors } = validateForm(form.values(), inForce(app) || {});
  form.message.textContent = '';
  if (errors.length) {
    form.error.textContent = errors.join('; ');
    return;
  }
  form.error.textContent = '';
  if (!Object.keys(changed).length) {
    app.setMessage(form.message, 'info-static', 'Nothing to write: these are the values in force.');
    return;
  }
  let answer;
  try {
    answer = await app.api.setHyperparameters(experiment, changed);
  } catch (e) {
    if (experiment === app.state.experiment) form.error.textContent = e.message;
    return;
  }
  const written = (answer.written && answer.written.hyperparameters) || changed;
  const what = Object.entries(written).map(([k, v]) => `${k}=${formatValue(v)}`).join(', ');
  app.addRequest({ kind: 'hyperparameters', values: written, experiment, what }, answer);
  if (experiment === app.state.experiment) {
    app.setMessage(form.message, 'ok', `Wrote to retune.json: ${what}.`);
    form.dirty.clear();
  }
  app.poller.now();
}

/**
 * Writes the search form's request ("Search from here": from the selected
 * node's checkpoint). Errors of the form or of the server show in the form.
 */
export async function search(app) {
  const experiment = app.state.experiment;
  const ui = app.searchPanel;
  const fields = ui.values();
  const { request, errors } = buildSearchRequest(fields, {
    from: fields.from,
    hyperparameters: inForce(app) || {},
    metrics: loggedMetrics(app.state.tree),
  });
  if (errors.length) {
    app.setMessage(ui.message, 'error', `Not written: ${errors.join('; ')}`);
    return;
  }
  app.setMessage(ui.message, 'info', 'Writing the search…');
  let answer;
  try {
    answer = await app.api.search(experiment, request);
  } catch (e) {
    if (experiment === app.state.experiment) app.setMessage(ui.message, 'error', `Not written: ${e.message}`);
    return;
  }
  const id = answer.id || (answer.written && answer.written.search && answer.written.search.id) || null;
  const from = request.from ? ` from ${request.from.branch}@${request.from.step}` : '';
  const what = `search ${id || ''}${from}: ${request.trials} trials of ${request.steps_per_trial} steps`;
  app.addRequest({ kind: 'search', id, experiment, what }, answer);
  if (experiment === app.state.experiment) {
    app.setMessage(ui.message, 'ok', `Wrote to retune.json: ${what}. The trials appear in the tree as they start.`);
    ui.close();
  }
  app.poller.now();
}

/** How long the Stop button waits for its second click, in milliseconds. */
export const STOP_ARM_MS = 5000;

/**
 * The Stop button: a first click arms it ("Click again to stop"), a second
 * within STOP_ARM_MS writes `stop: true` (no dialog: TensorBoard's frame may
 * block them, and a person reading the banner sees what was written).
 */
export async function stop(app) {
  const button = app.ui.stop;
  const experiment = app.state.experiment;
  if (button.dataset.armed !== '1') {
    button.dataset.armed = '1';
    button.textContent = 'Click again to stop';
    clearTimeout(app.stopTimer);
    app.stopTimer = setTimeout(() => disarm(button), STOP_ARM_MS);
    return;
  }
  disarm(button);
  let answer;
  try {
    answer = await app.api.stop(experiment);
  } catch (e) {
    if (experiment === app.state.experiment) app.addRequest({ kind: 'stop', experiment, what: 'stop', error: e.message }, null);
    return;
  }
  app.addRequest({ kind: 'stop', experiment, what: 'stop' }, answer);
  app.poller.now();
}

function disarm(button) {
  button.dataset.armed = '';
  button.textContent = 'Stop';
}
