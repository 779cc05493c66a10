// The tab's refresh loop: one refresh at a time, the next one REFRESH_MS
// after the last ended, none while the tab is hidden (TensorBoard shows
// another dashboard, or the browser tab is in the background).

/** How often the tab asks for fresh data, in milliseconds. */
export const REFRESH_MS = 3000;

export class Poller {
  /**
   * @param {() => Promise<void>} refresh one round of requests
   * @param {{element?: Element, interval?: number, idle?: () => boolean}} [options]
   *   `element` whose visibility is watched; `idle()` true when a hidden tab may skip a round.
   */
  constructor(refresh, { element = null, interval = REFRESH_MS, idle = () => true } = {}) {
    this._refresh = refresh;
    this._interval = interval;
    this._idle = idle;
    this._timer = 0;
    this.visible = true;
    document.addEventListener('visibilitychange', () => {
      this.visible = document.visibilityState === 'visible';
      if (this.visible) this.now();
    });
    if (element && typeof IntersectionObserver === 'function') {
      new IntersectionObserver((entries) => {
        const shown = entries[entries.length - 1].isIntersecting;
        const was = this.visible;
        this.visible = shown && document.visibilityState !== 'hidden';
        if (this.visible && !was) this.now();
      }).observe(element);
    }
  }

  /** Refreshes now, then every `interval`. */
  async now() {
    clearTimeout(this._timer);
    if (!this.visible && this._idle()) {
      this._schedule();
      return;
    }
    try {
      await this._refresh();
    } finally {
      this._schedule();
    }
  }

  _schedule() {
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this.now(), this._interval);
  }
}
