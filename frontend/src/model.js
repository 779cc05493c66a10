// Data for the Retune tab: the plugin's JSON routes (docs/http_api.md) and
// the bookkeeping of requests written into retune.json until the trainer
// picks them up. No DOM.

import { sameValue } from './format.js';

/** An error answer of the plugin (`{"error": "..."}`) or a failed request. */
export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

/**
 * The plugin's routes. Paths are relative to the tab's page, whose base URL
 * is `<tensorboard>/data/plugin/retune/`, so `experiments` is
 * `/data/plugin/retune/experiments`.
 */
export class Api {
  /**
   * @param {string} baseUrl absolute URL of /data/plugin/retune/ (the iframe's document.baseURI)
   * @param {typeof fetch} [fetchImpl]
   */
  constructor(baseUrl, fetchImpl) {
    this.baseUrl = baseUrl;
    this._fetch = fetchImpl || ((...args) => globalThis.fetch(...args));
  }

  url(path, params) {
    const url = new URL(path, this.baseUrl);
    for (const [k, v] of Object.entries(params || {})) {
      if (Array.isArray(v)) for (const item of v) url.searchParams.append(k, item);
      else url.searchParams.set(k, v);
    }
    return url.toString();
  }

  async _json(response) {
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!response.ok) {
      const message =
        body && typeof body.error === 'string'
          ? body.error
          : `the server answered ${response.status}${text && !body ? `: ${text.slice(0, 200)}` : ''}`;
      throw new ApiError(message, response.status);
    }
    if (body === null) throw new ApiError('the server sent an answer that is not JSON', response.status);
    return { body, text };
  }

  async _get(path, params) {
    let response;
    try {
      response = await this._fetch(this.url(path, params), {
        headers: { Accept: 'application/json' },
        cache: 'no-store',
        credentials: 'same-origin',
      });
    } catch (e) {
      throw new ApiError(`cannot reach TensorBoard (${e.message}); is it still running?`, 0);
    }
    return this._json(response);
  }

  async _post(path, payload) {
    let response;
    try {
      response = await this._fetch(this.url(path), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify(payload),
        credentials: 'same-origin',
      });
    } catch (e) {
      throw new ApiError(`cannot reach TensorBoard (${e.message}); nothing was written`, 0);
    }
    return (await this._json(response)).body;
  }

  /** `{experiments: [...]}` */
  async experiments() {
    return (await this._get('experiments')).body;
  }

  /** The tree, and its raw text (to skip redrawing an unchanged tree). */
  async tree(experiment) {
    return this._get('tree', { experiment });
  }

  /** `{experiment, tree_key, metrics: {node id: metrics}}`: the metrics that the tree reply leaves out. */
  async metrics(experiment) {
    return (await this._get('metrics', { experiment })).body;
  }

  async node(experiment, node) {
    return (await this._get('node', { experiment, node })).body;
  }

  /**
   * The status route: the status file, the trainer's liveness, its
   * `control` record and, for each of `revisions`, the request's state by
   * the server's rule (`requests`).
   */
  async status(experiment, revisions = []) {
    const params = { experiment };
    if (revisions.length) params.revision = revisions;
    return (await this._get('status', params)).body;
  }

  /** Writes a restore request; resolves to `{written, id, control}`. */
  async restore(experiment, branch, step, hyperparameters) {
    const payload = { experiment, branch, step };
    if (hyperparameters && Object.keys(hyperparameters).length) payload.hyperparameters = hyperparameters;
    return this._post('restore', payload);
  }

  /** Writes the note of `node` (`""` removes it); resolves to `{written, revision, control}`. */
  async note(experiment, node, text) {
    return this._post('note', { experiment, node, text });
  }

  /** Writes `stop: true`; resolves to `{written, control}`. */
  async stop(experiment) {
    return this._post('stop', { experiment });
  }

  /** Writes hyperparameters; resolves to `{written, control}`. */
  async setHyperparameters(experiment, hyperparameters) {
    return this._post('hyperparameters', { experiment, hyperparameters });
  }

  /** Writes a search request (docs/http_api.md, `POST search`); resolves to `{written, id, control}`. */
  async search(experiment, search) {
    return this._post('search', { experiment, search });
  }
}

/**
 * Where a request written into retune.json stands, as seen in a tree
 * answer (which holds the trainer's status).
 *
 * @param {{kind: 'restore'|'hyperparameters'|'stop', id?: string, values?: object, sentAt: number}} request
 *   `sentAt` in Unix seconds.
 * @param {object|null} tree the `tree` route's answer
 * @returns {{state: 'waiting'|'done'|'failed', node?: object, message?: string}}
 */
export function requestProgress(request, tree) {
  const status = (tree && tree.status) || null;
  if (request.kind === 'stop') {
    const state = tree && tree.trainer && tree.trainer.state;
    if (state === 'stopped' || state === 'finished' || state === 'failed') return { state: 'done', message: state };
  }
  if (request.kind === 'search' && status && status.searches && request.id && status.searches[request.id]) {
    return { state: 'done' };
  }
  if (request.kind === 'restore') {
    const nodes = (tree && tree.nodes) || [];
    const first = nodes.find((n) => n.request_id && n.request_id === request.id);
    if (first) return { state: 'done', node: first };
  } else if (request.kind === 'hyperparameters' && status && status.hyperparameters) {
    const inForce = status.hyperparameters;
    const values = request.values || {};
    if (Object.keys(values).every((k) => k in inForce && sameValue(inForce[k], values[k]))) {
      return { state: 'done' };
    }
  }
  if (status && Array.isArray(status.errors)) {
    // An error reported after the write (with a little slack for clocks).
    const late = status.errors.filter((e) => typeof e.time === 'number' && e.time >= request.sentAt - 1);
    const mentions = late.filter((e) => request.id && String(e.message || '').includes(request.id));
    const error = mentions[mentions.length - 1] || late[late.length - 1];
    if (error) return { state: 'failed', message: String(error.message || 'the trainer refused the request') };
  }
  return { state: 'waiting' };
}

/** The runs of an experiment, for the Scalars link. */
export function experimentRuns(tree, experiment) {
  if (tree && Array.isArray(tree.branches) && tree.branches.length) return tree.branches.map((b) => b.run);
  return (experiment && experiment.runs) || [];
}
