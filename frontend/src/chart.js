// The small loss chart of a node: the branch's loss (and val_loss) up to the
// node's end step, with the node's own step range shaded and checkpoint
// markers. chartModel() is pure and returns what to draw.

import { formatMetric } from './format.js';

/** "Nice" round tick values covering [min, max], about `count` of them. */
export function niceTicks(min, max, count = 4) {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [];
  if (min === max) return [min];
  const span = max - min;
  const raw = span / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm >= 7.07 ? 10 : norm >= 3.16 ? 5 : norm >= 1.41 ? 2 : 1) * mag;
  const first = Math.ceil(min / step - 1e-9) * step;
  const out = [];
  for (let v = first; v <= max + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
    if (out.length > 50) break;
  }
  return out;
}

function cleanPoints(points) {
  if (!Array.isArray(points)) return [];
  const out = [];
  for (const p of points) {
    if (!Array.isArray(p) || p.length < 2) continue;
    const [s, v] = p;
    if (Number.isFinite(s) && Number.isFinite(v)) out.push([s, v]);
  }
  out.sort((a, b) => a[0] - b[0]);
  return out;
}

/** Keeps at most `max` points, evenly spaced (always the last one). */
export function thin(points, max) {
  if (points.length <= max) return points;
  const out = [];
  const stride = points.length / max;
  for (let i = 0; i < max - 1; i++) out.push(points[Math.floor(i * stride)]);
  out.push(points[points.length - 1]);
  return out;
}

/**
 * What to draw for a node's series.
 *
 * @param {{loss?: number[][], val_loss?: number[][]}} series `[[step, value], ...]`
 * @param {{width: number, height: number, start?: number, end?: number, checkpoints?: number[]}} opts
 */
export function chartModel(series, opts) {
  const width = opts.width;
  const height = opts.height;
  const margin = { left: 44, right: 10, top: 8, bottom: 20 };
  const plot = { left: margin.left, top: margin.top, right: width - margin.right, bottom: height - margin.bottom };
  const names = ['loss', 'val_loss'];
  const data = names.map((name) => ({ name, points: thin(cleanPoints(series && series[name]), 400) }));
  const all = data.flatMap((d) => d.points);
  if (all.length === 0) {
    return { empty: true, width, height, plot, lines: [], xTicks: [], yTicks: [], markers: [], band: null };
  }
  let sMin = Infinity;
  let sMax = -Infinity;
  let vMin = Infinity;
  let vMax = -Infinity;
  for (const [s, v] of all) {
    if (s < sMin) sMin = s;
    if (s > sMax) sMax = s;
    if (v < vMin) vMin = v;
    if (v > vMax) vMax = v;
  }
  if (Number.isFinite(opts.end) && opts.end > sMax) sMax = opts.end;
  if (sMin === sMax) {
    sMin -= 1;
    sMax += 1;
  }
  if (vMin === vMax) {
    const d = Math.abs(vMin) * 0.1 || 1;
    vMin -= d;
    vMax += d;
  } else {
    const pad = (vMax - vMin) * 0.06;
    vMin -= pad;
    vMax += pad;
  }
  const sx = (s) => plot.left + ((s - sMin) / (sMax - sMin)) * (plot.right - plot.left);
  const sy = (v) => plot.bottom - ((v - vMin) / (vMax - vMin)) * (plot.bottom - plot.top);
  const r = (v) => Math.round(v * 10) / 10;

  const lines = data
    .filter((d) => d.points.length)
    .map((d) => ({
      name: d.name,
      dashed: d.name !== 'loss',
      path: d.points.map(([s, v], i) => `${i ? 'L' : 'M'}${r(sx(s))},${r(sy(v))}`).join(''),
      last: { x: r(sx(d.points[d.points.length - 1][0])), y: r(sy(d.points[d.points.length - 1][1])) },
    }));
  const xTicks = niceTicks(sMin, sMax, 4)
    .filter((s) => s >= sMin && s <= sMax)
    .map((s) => {
      const x = r(sx(s));
      // A label at the right edge is right-aligned, so it is not cut off.
      return { x, label: String(s), anchor: x > plot.right - 14 ? 'end' : 'middle' };
    });
  const yTicks = niceTicks(vMin, vMax, 4)
    .filter((v) => v >= vMin && v <= vMax)
    .map((v) => ({ y: r(sy(v)), label: formatMetric(v) }));
  const markers = [...new Set(opts.checkpoints || [])]
    .filter((s) => Number.isFinite(s) && s >= sMin && s <= sMax)
    .sort((a, b) => a - b)
    .map((s) => ({ x: r(sx(s)), step: s }));
  let band = null;
  if (Number.isFinite(opts.start)) {
    const a = Math.max(sMin, opts.start);
    const b = Math.min(sMax, Number.isFinite(opts.end) ? opts.end : sMax);
    if (b >= a) band = { x0: r(sx(a)), x1: r(sx(b)) };
  }
  return { empty: false, width, height, plot, lines, xTicks, yTicks, markers, band };
}
