// Pan and zoom of the tree: a transform {k, x, y} (screen = world * k + (x, y))
// changed by the wheel (zoom about the pointer), by dragging (pan), and by
// buttons (fit, zoom in/out, centre on a node). The math is pure; the
// controller binds it to one SVG element.

export const MIN_SCALE = 0.05;
export const MAX_SCALE = 4;

export const IDENTITY = Object.freeze({ k: 1, x: 0, y: 0 });

export function clampScale(k) {
  return Math.min(MAX_SCALE, Math.max(MIN_SCALE, k));
}

/** Zooms by `factor` keeping the screen point (px, py) fixed. */
export function zoomAbout(t, px, py, factor) {
  const k = clampScale(t.k * factor);
  const f = k / t.k;
  return { k, x: px - (px - t.x) * f, y: py - (py - t.y) * f };
}

/**
 * The transform that shows `bounds` whole in a `width` x `height` view with
 * `padding` around, never enlarging past `maxScale`.
 */
export function fitTransform(bounds, width, height, padding = 24, maxScale = 1) {
  const bw = Math.max(1, bounds.x1 - bounds.x0);
  const bh = Math.max(1, bounds.y1 - bounds.y0);
  const w = Math.max(1, width - 2 * padding);
  const h = Math.max(1, height - 2 * padding);
  const k = clampScale(Math.min(maxScale, w / bw, h / bh));
  return {
    k,
    x: (width - bw * k) / 2 - bounds.x0 * k,
    y: (height - bh * k) / 2 - bounds.y0 * k,
  };
}

/** The smallest scale "Fit" goes to: below it a card's text is too small to read. */
export const LEGIBLE_SCALE = 0.6;

/**
 * "Fit" that keeps text legible: the whole of `bounds` when that is possible
 * at `minScale` or more; else, at `minScale`, the part of the tree around
 * `focus` (the selected or current node), kept inside the tree's bounds.
 * Runs of changes are collapsed into groups and the rest is culled instead
 * of shrinking the text below a readable size.
 */
export function legibleFit(bounds, width, height, focus, minScale = LEGIBLE_SCALE, padding = 24) {
  const fit = fitTransform(bounds, width, height, padding);
  if (fit.k >= minScale) return fit;
  const k = clampScale(minScale);
  const cx = focus ? focus.x : (bounds.x0 + bounds.x1) / 2;
  const cy = focus ? focus.y : (bounds.y0 + bounds.y1) / 2;
  const t = centerOn(cx, cy, width, height, k);
  // Along an axis where the tree fits, centre it; where it does not, keep its edges at the view's.
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  const bw = (bounds.x1 - bounds.x0) * k;
  const bh = (bounds.y1 - bounds.y0) * k;
  t.x = bw + 2 * padding <= width ? (width - bw) / 2 - bounds.x0 * k : clamp(t.x, width - padding - bounds.x1 * k, padding - bounds.x0 * k);
  t.y = bh + 2 * padding <= height ? (height - bh) / 2 - bounds.y0 * k : clamp(t.y, height - padding - bounds.y1 * k, padding - bounds.y0 * k);
  return t;
}

/** The transform that puts world point (cx, cy) at the view's centre at scale k. */
export function centerOn(cx, cy, width, height, k) {
  const s = clampScale(k);
  return { k: s, x: width / 2 - cx * s, y: height / 2 - cy * s };
}

/**
 * The first view of a tree: the whole tree when its text is readable that
 * way (scale >= `readable`); else, at that scale, as much of the tree as
 * fits around its centre, moved just enough to show the `focus` point (the
 * current node) with `pad` pixels to spare.
 */
export function initialTransform(bounds, width, height, focus, readable = 0.8, pad = 140) {
  const fit = fitTransform(bounds, width, height);
  if (fit.k >= readable || !focus) return fit;
  const k = clampScale(readable);
  const t = centerOn((bounds.x0 + bounds.x1) / 2, (bounds.y0 + bounds.y1) / 2, width, height, k);
  const fx = focus.x * k + t.x;
  const fy = focus.y * k + t.y;
  const px = Math.min(pad, width / 2);
  const py = Math.min(pad / 2, height / 2);
  if (fx > width - px) t.x -= fx - (width - px);
  if (fx < px) t.x += px - fx;
  if (fy > height - py) t.y -= fy - (height - py);
  if (fy < py) t.y += py - fy;
  return t;
}

/** A wheel event's zoom factor (trackpads send small deltas, mice large). */
export function wheelFactor(deltaY, deltaMode = 0) {
  const pixels = deltaMode === 1 ? deltaY * 16 : deltaMode === 2 ? deltaY * 400 : deltaY;
  return Math.pow(2, -pixels * 0.002);
}

export function transformAttribute(t) {
  return `translate(${round(t.x)},${round(t.y)}) scale(${round(t.k, 5)})`;
}

function round(v, digits = 2) {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/**
 * Binds pan and zoom to `svg`, applying the transform to `layer` (a <g>).
 * `onChange(t)` runs after each change.
 */
export class PanZoom {
  constructor(svg, layer, onChange = () => {}) {
    this.svg = svg;
    this.layer = layer;
    this.onChange = onChange;
    this.t = { ...IDENTITY };
    this._drag = null;
    this._moved = false;
    this._frame = 0;
    this._size = null;
    // The view's size, kept up to date without forcing a layout when asked.
    if (typeof ResizeObserver === 'function') {
      new ResizeObserver((entries) => {
        const r = entries[entries.length - 1].contentRect;
        if (r.width > 0 && r.height > 0) this._size = [r.width, r.height];
      }).observe(svg);
    }

    svg.addEventListener(
      'wheel',
      (e) => {
        e.preventDefault();
        const [px, py] = this._point(e);
        this.set(zoomAbout(this.t, px, py, wheelFactor(e.deltaY, e.deltaMode)));
      },
      { passive: false },
    );
    svg.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      this._drag = { id: e.pointerId, sx: e.clientX, sy: e.clientY, t: this.t };
      this._moved = false;
    });
    svg.addEventListener('pointermove', (e) => {
      const d = this._drag;
      if (!d || d.id !== e.pointerId) return;
      const dx = e.clientX - d.sx;
      const dy = e.clientY - d.sy;
      if (!this._moved && Math.hypot(dx, dy) < 4) return;
      if (!this._moved) {
        this._moved = true;
        svg.setPointerCapture?.(e.pointerId);
        svg.classList.add('panning');
      }
      this.set({ k: d.t.k, x: d.t.x + dx, y: d.t.y + dy });
    });
    const end = (e) => {
      if (!this._drag || this._drag.id !== e.pointerId) return;
      this._drag = null;
      svg.classList.remove('panning');
      if (svg.hasPointerCapture?.(e.pointerId)) svg.releasePointerCapture(e.pointerId);
    };
    svg.addEventListener('pointerup', end);
    svg.addEventListener('pointercancel', end);
    // A drag must not end in a click on the node under the pointer.
    svg.addEventListener(
      'click',
      (e) => {
        if (this._moved) {
          e.stopPropagation();
          e.preventDefault();
          this._moved = false;
        }
      },
      true,
    );
  }

  _point(e) {
    const r = this.svg.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  }

  size() {
    if (this._size) return this._size;
    const r = this.svg.getBoundingClientRect();
    return [r.width || 800, r.height || 500];
  }

  set(t) {
    this.t = { k: t.k, x: t.x, y: t.y };
    // One DOM write per animation frame, however many events came.
    if (!this._frame) {
      const raf = globalThis.requestAnimationFrame || ((f) => setTimeout(f, 16));
      this._frame = raf(() => {
        this._frame = 0;
        this.apply();
      });
    }
  }

  /** Writes the transform now. */
  apply() {
    this.layer.setAttribute('transform', transformAttribute(this.t));
    this.onChange(this.t);
  }

  zoomBy(factor) {
    const [w, h] = this.size();
    this.set(zoomAbout(this.t, w / 2, h / 2, factor));
  }

  /** Fits `bounds` in the view, never below a legible scale (see legibleFit). */
  fit(bounds, focus = null) {
    const [w, h] = this.size();
    this.set(legibleFit(bounds, w, h, focus));
  }

  center(x, y, k = Math.max(this.t.k, 0.8)) {
    const [w, h] = this.size();
    this.set(centerOn(x, y, w, h, k));
  }
}
