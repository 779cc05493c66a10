// The step-axis layout: x is the step (like Scalars), one lane per branch,
// each node a card from its first step to its last; a restore is drawn
// where its step is. Pure: positions only, no DOM.

import { NODE_H, branchColor } from './layout.js';

/** Height of a lane, and the narrowest card (a node of few steps). */
export const LANE_H = NODE_H + 16;
export const MIN_W = 14;
/** Pixels per step: chosen so that a typical node is about this wide, within bounds. */
const TYPICAL_W = 140;
const MIN_PX_PER_STEP = 0.02;
const MAX_PX_PER_STEP = 8;

/** The scale, pixels per step, for `spans` (steps of each node). */
export function stepScale(spans) {
  const sorted = spans.filter((s) => s > 0).sort((a, b) => a - b);
  if (!sorted.length) return 1;
  const median = sorted[Math.floor(sorted.length / 2)];
  return Math.min(MAX_PX_PER_STEP, Math.max(MIN_PX_PER_STEP, TYPICAL_W / median));
}

/** Round steps for an axis from `lo` to `hi`, about `count` of them. */
export function stepTicks(lo, hi, count = 8) {
  const span = Math.max(1, hi - lo);
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) out.push(v);
  return out;
}

/**
 * Lays out the tree on the step axis. Same shape as layout.layoutTree's
 * answer, plus `lanes` (`{branch, y, x}`: where each branch's lane starts),
 * `ticks` (`{step, x}`) and `scale` (pixels per step).
 */
export function layoutSteps(tree) {
  const input = (tree && Array.isArray(tree.nodes) ? tree.nodes : []).filter((n) => n && typeof n.id === 'string');
  const branches = (tree && tree.branches) || [];
  const lane = new Map();
  const colors = new Map();
  for (const b of branches) {
    if (!lane.has(b.name)) lane.set(b.name, lane.size);
    colors.set(b.name, b.color);
  }
  for (const n of input) if (!lane.has(n.branch)) lane.set(n.branch, lane.size);
  const endOf = (n) => (typeof n.end_step === 'number' && n.end_step > n.start_step ? n.end_step : n.start_step);
  const scale = stepScale(input.map((n) => endOf(n) - n.start_step));

  const nodes = [];
  const index = new Map();
  let x0 = Infinity;
  let x1 = -Infinity;
  let lo = Infinity;
  let hi = -Infinity;
  const laneX = new Map();
  for (const n of input) {
    const item = {
      id: n.id,
      x: n.start_step * scale,
      y: lane.get(n.branch) * LANE_H,
      w: Math.max(MIN_W, (endOf(n) - n.start_step) * scale),
      depth: lane.get(n.branch),
      node: n,
      color: branchColor(colors.has(n.branch) ? colors.get(n.branch) : 0),
    };
    nodes.push(item);
    index.set(n.id, item);
    laneX.set(n.branch, Math.min(laneX.has(n.branch) ? laneX.get(n.branch) : Infinity, item.x));
    x0 = Math.min(x0, item.x);
    x1 = Math.max(x1, item.x + item.w);
    lo = Math.min(lo, n.start_step);
    hi = Math.max(hi, endOf(n));
  }
  const links = [];
  for (const item of nodes) {
    const parent = item.node.parent ? index.get(item.node.parent) : undefined;
    if (!parent) continue;
    const restore = parent.node.branch !== item.node.branch;
    // A restore drops from the parent's lane at the restored step; a change
    // on a branch joins two neighbouring cards.
    const x = item.x;
    const path = restore
      ? `M${x},${parent.y + NODE_H}V${item.y + NODE_H / 2}`
      : `M${parent.x + parent.w},${parent.y + NODE_H / 2}H${x}`;
    links.push({ source: parent, target: item, color: item.color, restore, path });
  }
  const lanes = [...lane.entries()].map(([branch, i]) => ({ branch, y: i * LANE_H, x: laneX.has(branch) ? laneX.get(branch) : 0 }));
  if (!nodes.length) {
    x0 = x1 = 0;
    lo = hi = 0;
  }
  const ticks = stepTicks(lo, hi).map((step) => ({ step, x: step * scale }));
  const y1 = Math.max(NODE_H, lane.size * LANE_H);
  return { nodes, links, bounds: { x0: x0 - 90, y0: -28, x1, y1 }, index, lanes, ticks, scale };
}
