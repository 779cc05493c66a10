// The person's written requests, followed until the trainer has taken them,
// and the banners that say how they stand. A request whose write reply
// named a revision (interface 1) is followed by that id: the status route's
// `requests` (the server's rule), else the same rule here (requests.js) on
// the status' `control`. Older replies are followed by what the tree shows
// (model.requestProgress).

import { requestProgress } from './model.js';
import { NO_TRAINER, PENDING, REJECTED, UNCHANGED, requestState } from './requests.js';
import { sequenced } from './sequence.js';

/** Finished requests stay shown this long, in milliseconds. */
const DONE_SHOWN_MS = 60000;
/** Tree warnings shown as banners; the rest are counted. */
const WARNINGS_SHOWN = 5;

export class RequestTracker {
  constructor() {
    /** {kind, id?, values?, experiment, what, revision, sentAt, state, node?, message?, error?} */
    this.list = [];
    this.statusReply = null;
  }

  /** Records a request written (or that could not be written: `request.error`). */
  add(request, answer) {
    const failed = request.error !== undefined;
    this.list.push({
      ...request, answer, sentAt: Date.now() / 1000,
      // The writer's revision id (interface 1): followed through the status' `control`.
      revision: answer && typeof answer.revision === 'string' ? answer.revision : null,
      state: failed ? 'failed' : 'waiting',
      doneAt: failed ? Date.now() : undefined,
    });
  }

  /** Requests of `experiment` that carry a revision id and wait for the trainer. */
  followed(experiment) {
    return this.list.filter((r) => r.experiment === experiment && r.revision && r.state === 'waiting');
  }

  /** Asks the status route how the followed requests stand (one request for all of them). */
  async load(api, seq, experiment) {
    const followed = this.followed(experiment);
    if (!followed.length) return;
    const r = await sequenced(seq, 'status', { experiment },
      () => api.status(experiment, followed.map((x) => x.revision)), () => ({ experiment }));
    if (!r.stale && r.ok) this.statusReply = r.value;
  }

  /** A followed request's state (see requests.requestState). */
  revisionState(request, tree) {
    const reply = this.statusReply;
    if (reply && reply.requests && typeof reply.requests[request.revision] === 'string') return reply.requests[request.revision];
    const status = reply || (tree && tree.status) || null;
    const mine = this.list.filter((x) => x.experiment === request.experiment && x.revision);
    const later = mine.slice(mine.indexOf(request) + 1).map((x) => x.revision);
    const current = reply && reply.control_file && reply.control_file.revision;
    if (current && typeof current.id === 'string' && current.id !== request.revision) later.push(current.id);
    return requestState(status, request.revision, { later });
  }

  /** Updates the requests of `experiment` from the latest answers; drops those done a while ago. */
  track(experiment, tree) {
    for (const r of this.list) {
      if (r.experiment !== experiment || r.state !== 'waiting') continue;
      if (r.revision) {
        const state = this.revisionState(r, tree);
        r.trainer = state === NO_TRAINER ? 'gone' : 'alive';
        if (state === PENDING || state === NO_TRAINER) continue;
        const control = (this.statusReply && this.statusReply.control) || (tree && tree.status && tree.status.control) || {};
        Object.assign(r, {
          state: state === REJECTED ? 'failed' : 'done',
          unchanged: state === UNCHANGED,
          message: state === REJECTED ? String(control.error || 'the trainer refused it') : undefined,
          doneAt: Date.now(),
        });
        continue;
      }
      const p = requestProgress(r, tree);
      if (p.state === 'waiting') continue;
      Object.assign(r, { state: p.state, node: p.node, message: p.message, doneAt: Date.now() });
    }
    const now = Date.now();
    this.list = this.list.filter((r) => r.state === 'waiting' || now - r.doneAt < DONE_SHOWN_MS);
  }

  /** Names of hyperparameters written to `experiment` and not yet applied (the form keeps showing them). */
  pendingNames(experiment) {
    const names = new Set();
    for (const r of this.list) {
      if (r.kind === 'hyperparameters' && r.state === 'waiting' && r.experiment === experiment) {
        for (const name of Object.keys(r.values || {})) names.add(name);
      }
    }
    return names;
  }

  /**
   * The banners of `experiment`: its requests, then the tree's warnings
   * (interface 2). `onShow(node)` opens a restored branch; `onDismiss()` redraws.
   */
  bannerItems(experiment, tree, { onShow, onDismiss }) {
    const items = [];
    const alive = tree && tree.trainer && tree.trainer.alive;
    for (const r of this.list) {
      if (r.experiment !== experiment) continue;
      const dismiss = () => {
        this.list = this.list.filter((x) => x !== r);
        onDismiss();
      };
      const node = r.kind === 'restore' && r.state === 'done' ? r.node || nodeOfRequest(tree, r.id) : null;
      if (r.state === 'waiting') {
        const gone = r.revision ? r.trainer === 'gone' : !alive;
        const hint = gone
          ? 'the trainer is not running; it takes it when training runs again on this experiment.'
          : 'waiting for the trainer to take it…';
        items.push({ kind: gone ? 'warn' : 'info', text: `Written: ${r.what}${r.id ? ` (${r.id})` : ''}; ${hint}` });
      } else if (r.state === 'failed' && r.error !== undefined) {
        items.push({ kind: 'error', text: `Could not write ${r.what}: ${r.error}`, onclose: dismiss });
      } else if (r.state === 'done' && r.unchanged) {
        items.push({ kind: 'ok', text: `The trainer took ${r.what}: nothing to change, these values were in force.`, onclose: dismiss });
      } else if (node) {
        items.push({
          kind: 'ok',
          text: `The trainer carried out ${r.what}: new branch ${node.branch}, from step ${node.start_step}.`,
          action: { label: `Show ${node.branch}`, onclick: () => onShow(node) },
          onclose: dismiss,
        });
      } else if (r.state === 'done' && r.kind === 'restore') {
        items.push({ kind: 'ok', text: `The trainer carried out ${r.what}; its new branch appears in the tree shortly.`, onclose: dismiss });
      } else if (r.state === 'done' && r.kind === 'stop') {
        const text = r.message ? `The trainer stopped (${r.message}).` : 'The trainer took the stop: it ends fit after its current batch.';
        items.push({ kind: 'ok', text, onclose: dismiss });
      } else if (r.state === 'done') {
        items.push({ kind: 'ok', text: `The trainer applied ${r.what}.`, onclose: dismiss });
      } else if (r.state === 'failed') {
        items.push({ kind: 'error', text: `The trainer rejected ${r.what}: ${r.message}`, onclose: dismiss });
      }
    }
    const warnings = tree && Array.isArray(tree.warnings) ? tree.warnings : [];
    for (const w of warnings.slice(0, WARNINGS_SHOWN)) items.push({ kind: 'warn', text: String(w) });
    if (warnings.length > WARNINGS_SHOWN) items.push({ kind: 'warn', text: `…and ${warnings.length - WARNINGS_SHOWN} more warnings about this tree.` });
    return items;
  }
}

/** The first node of the branch that restore request `id` made, once it is in the tree. */
export function nodeOfRequest(tree, id) {
  const nodes = (tree && tree.nodes) || [];
  return id ? nodes.find((n) => n.request_id === id) || null : null;
}
