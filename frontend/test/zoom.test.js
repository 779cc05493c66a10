import assert from 'node:assert/strict';
import { test } from 'node:test';

import { MAX_SCALE, MIN_SCALE, centerOn, fitTransform, initialTransform, transformAttribute, wheelFactor, zoomAbout } from '../src/zoom.js';

const apply = (t, x, y) => [x * t.k + t.x, y * t.k + t.y];

test('zoomAbout keeps the point under the pointer fixed and clamps the scale', () => {
  const t0 = { k: 1, x: 10, y: -20 };
  const world = [(300 - t0.x) / t0.k, (200 - t0.y) / t0.k];
  const t1 = zoomAbout(t0, 300, 200, 1.5);
  const [sx, sy] = apply(t1, ...world);
  assert.ok(Math.abs(sx - 300) < 1e-9 && Math.abs(sy - 200) < 1e-9);
  assert.equal(zoomAbout(t0, 0, 0, 1000).k, MAX_SCALE);
  assert.equal(zoomAbout(t0, 0, 0, 1e-6).k, MIN_SCALE);
});

test('fitTransform shows the whole bounds, centred, never enlarged past 1', () => {
  const b = { x0: -100, y0: 50, x1: 1900, y1: 1050 };
  const t = fitTransform(b, 1000, 600, 20);
  const [ax, ay] = apply(t, b.x0, b.y0);
  const [bx, by] = apply(t, b.x1, b.y1);
  assert.ok(ax >= 19.99 && bx <= 980.01 && ay >= 19.99 && by <= 580.01);
  assert.ok(Math.abs((ax + bx) / 2 - 500) < 1e-6 && Math.abs((ay + by) / 2 - 300) < 1e-6);
  const small = fitTransform({ x0: 0, y0: 0, x1: 100, y1: 40 }, 1000, 600);
  assert.equal(small.k, 1);
});

test('initialTransform fits a small tree and shows the focus of a large one at a readable scale', () => {
  const small = initialTransform({ x0: 0, y0: 0, x1: 800, y1: 300 }, 1000, 600, { x: 10, y: 10 });
  assert.equal(small.k, 1);
  const bounds = { x0: 0, y0: 0, x1: 20000, y1: 9000 };
  // A focus near the centre: the view is centred on the tree.
  const mid = initialTransform(bounds, 1000, 600, { x: 10000, y: 4500 });
  assert.equal(mid.k, 0.8);
  assert.deepEqual(apply(mid, 10000, 4500), [500, 300]);
  // A focus far off: moved just enough to show it, padding kept.
  const far = initialTransform(bounds, 1000, 600, { x: 19900, y: 100 }, 0.8, 140);
  const [fx, fy] = apply(far, 19900, 100);
  assert.ok(Math.abs(fx - 860) < 1e-9 && Math.abs(fy - 70) < 1e-9, `${fx},${fy}`);
  assert.deepEqual(centerOn(0, 0, 100, 100, 1), { k: 1, x: 50, y: 50 });
});

test('wheelFactor: down zooms out, up zooms in, line and page modes scaled', () => {
  assert.ok(wheelFactor(100) < 1);
  assert.ok(wheelFactor(-100) > 1);
  assert.equal(wheelFactor(0), 1);
  assert.ok(Math.abs(wheelFactor(3, 1) - wheelFactor(48, 0)) < 1e-12);
  assert.equal(transformAttribute({ k: 0.123456789, x: 1.234, y: -5.678 }), 'translate(1.23,-5.68) scale(0.12346)');
});

test('legibleFit: the whole tree when readable, else legible scale around the focus', async () => {
  const { legibleFit, LEGIBLE_SCALE } = await import('../src/zoom.js');
  const small = { x0: 0, y0: 0, x1: 400, y1: 200 };
  const t = legibleFit(small, 800, 600, null);
  assert.ok(t.k >= 1 - 1e-9);
  const big = { x0: 0, y0: 0, x1: 20000, y1: 8000 };
  const f = legibleFit(big, 800, 600, { x: 10000, y: 4000 });
  assert.equal(f.k, LEGIBLE_SCALE);
  // The focus is in view.
  const sx = 10000 * f.k + f.x;
  const sy = 4000 * f.k + f.y;
  assert.ok(sx > 0 && sx < 800 && sy > 0 && sy < 600);
  // Near an edge, the tree's edge stays at the view's edge (no empty half view).
  const e = legibleFit(big, 800, 600, { x: 0, y: 0 });
  assert.equal(e.x, 24);
  assert.equal(e.y, 24);
});
