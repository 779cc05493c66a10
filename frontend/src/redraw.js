// One redraw-if-changed helper for every part of the tab: a part is drawn
// again only when what it shows changed, so buttons and inputs are not
// replaced under the person's pointer at every refresh. Pure, no DOM.

/** The key of what a part depends on: strings as they are, the rest as JSON. */
export function keyOf(deps) {
  return typeof deps === 'string' ? deps : JSON.stringify(deps);
}

export class Redraw {
  constructor() {
    this._keys = new Map();
  }

  /** Whether `deps` differ from what part `name` was last drawn with. */
  changed(name, deps) {
    return this._keys.get(name) !== keyOf(deps);
  }

  /** Records that part `name` now shows `deps`. */
  mark(name, deps) {
    this._keys.set(name, keyOf(deps));
  }

  /** Calls `draw()` when `deps` changed since the last draw of `name`; returns whether it drew. */
  ifChanged(name, deps, draw) {
    const key = keyOf(deps);
    if (this._keys.get(name) === key) return false;
    this._keys.set(name, key);
    draw();
    return true;
  }

  /** Forgets part `name` (every part without a name): its next draw happens whatever it shows. */
  forget(name) {
    if (name === undefined) this._keys.clear();
    else this._keys.delete(name);
  }
}
