// Request sequencing: an answer is used only if no newer request was made on
// the same channel since, and if the context it was asked for (experiment,
// node) is still what the person looks at. Pure, no DOM.

export class Sequencer {
  constructor() {
    this._seq = 0;
    this._latest = new Map();
  }

  /**
   * Starts a request on `channel` ("tree", "node", ...) for `context`
   * (e.g. `{experiment, node}`); returns its token. Any earlier token of the
   * channel stops being current.
   */
  begin(channel, context = {}) {
    const token = Object.freeze({ channel, seq: ++this._seq, context: Object.freeze({ ...context }) });
    this._latest.set(channel, token);
    return token;
  }

  /** Whether `token` is still the newest request of its channel. */
  isCurrent(token) {
    return this._latest.get(token.channel) === token;
  }

  /**
   * Whether the answer to `token` may be used now: it is the newest on its
   * channel and every key of its context equals the same key of `now`.
   */
  accepts(token, now = {}) {
    if (!this.isCurrent(token)) return false;
    for (const key of Object.keys(token.context)) {
      if (key in now && now[key] !== token.context[key]) return false;
    }
    return true;
  }

  /** Forgets the channel: answers to its pending requests are dropped. */
  cancel(channel) {
    this._latest.delete(channel);
  }
}

/**
 * Runs `fetcher()` as a request of `channel`; resolves to
 * `{ok: true, value}` when the answer may be used, `{ok: false, stale: true}`
 * when a newer request or another context made it stale, or
 * `{ok: false, error}` when the request failed (and is still current).
 *
 * @param {Sequencer} sequencer
 * @param {string} channel
 * @param {object} context
 * @param {() => Promise<*>} fetcher
 * @param {() => object} currentContext returns what the person looks at now
 */
export async function sequenced(sequencer, channel, context, fetcher, currentContext) {
  const token = sequencer.begin(channel, context);
  let value;
  try {
    value = await fetcher();
  } catch (error) {
    if (!sequencer.accepts(token, currentContext())) return { ok: false, stale: true };
    return { ok: false, error };
  }
  if (!sequencer.accepts(token, currentContext())) return { ok: false, stale: true };
  return { ok: true, value };
}
