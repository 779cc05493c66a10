// The tree's layout: a tidy tree (Reingold–Tilford, d3-hierarchy), left to
// right, one card per node. Pure: positions only, no DOM.

import { hierarchy, tree as tidyTree } from 'd3-hierarchy';

/** Size of a node's card and the gaps between cards, in SVG units. */
export const NODE_W = 200;
export const NODE_H = 40;
export const COL_GAP = 44;
export const ROW_GAP = 14;

/** Branch colours (index = the branch's `color` from the tree route). */
export const PALETTE = Object.freeze([
  '#1e88e5', // blue
  '#f4511e', // deep orange
  '#43a047', // green
  '#8e24aa', // purple
  '#00897b', // teal
  '#d81b60', // pink
  '#fb8c00', // orange
  '#3949ab', // indigo
  '#6d4c41', // brown
  '#7cb342', // light green
  '#546e7a', // blue grey
  '#c0ca33', // lime
]);

export function branchColor(index) {
  const i = Number.isInteger(index) && index >= 0 ? index : 0;
  return PALETTE[i % PALETTE.length];
}

const VIRTUAL_ROOT = '\u0000root';

/**
 * Lays out the tree answer of the `tree` route.
 *
 * Children are ordered so that a branch's own continuation comes first and
 * the branches restored from a node follow by start step: a branch reads as
 * a line, its offshoots hang below it.
 *
 * @param {{nodes: object[], branches?: object[]}} tree
 * @returns {{nodes: {id: string, x: number, y: number, node: object, color: string, depth: number}[],
 *   links: {source: object, target: object, color: string, restore: boolean, path: string}[],
 *   bounds: {x0: number, y0: number, x1: number, y1: number},
 *   index: Map<string, object>}}
 *   `x`, `y`: the card's top-left corner, `w` its width (NODE_W here; the step
 *   layout sizes cards by their steps).
 */
export function layoutTree(tree) {
  const input = (tree && Array.isArray(tree.nodes) ? tree.nodes : []).filter(
    (n) => n && typeof n.id === 'string',
  );
  const colors = new Map();
  for (const b of (tree && tree.branches) || []) colors.set(b.name, b.color);

  const byId = new Map();
  for (const n of input) byId.set(n.id, n);
  const kids = new Map();
  for (const n of byId.values()) {
    const parent = n.parent && n.parent !== n.id && byId.has(n.parent) ? n.parent : VIRTUAL_ROOT;
    if (!kids.has(parent)) kids.set(parent, []);
    kids.get(parent).push(n);
  }
  for (const [parentId, list] of kids) {
    if (list.length < 2) continue;
    const parent = byId.get(parentId);
    list.sort((a, b) => {
      const sa = parent && a.branch === parent.branch ? 0 : 1;
      const sb = parent && b.branch === parent.branch ? 0 : 1;
      return sa - sb || a.start_step - b.start_step || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    });
  }

  // Walk from the root. Each node is in one list (its parent's), so none is
  // reached twice, and a node caught in a cycle is never reached (nor drawn).
  const root = hierarchy({ id: VIRTUAL_ROOT }, (d) => kids.get(d.id) || null);

  const layout = tidyTree()
    .nodeSize([NODE_H + ROW_GAP, NODE_W + COL_GAP])
    .separation((a, b) => (a.parent === b.parent ? 1 : 1.2));
  layout(root);

  const nodes = [];
  const index = new Map();
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  const links = [];
  const items = new Map(); // hierarchy node -> its item (a parent comes before its children)
  root.each((d) => {
    if (d.data.id === VIRTUAL_ROOT) return;
    const n = d.data;
    const item = {
      id: n.id,
      x: d.y - (NODE_W + COL_GAP), // depth 1 (a root) at x = 0
      y: d.x - NODE_H / 2,
      w: NODE_W,
      depth: d.depth - 1,
      node: n,
      color: branchColor(colors.has(n.branch) ? colors.get(n.branch) : 0),
    };
    nodes.push(item);
    index.set(n.id, item);
    items.set(d, item);
    if (item.x < x0) x0 = item.x;
    if (item.y < y0) y0 = item.y;
    if (item.x + NODE_W > x1) x1 = item.x + NODE_W;
    if (item.y + NODE_H > y1) y1 = item.y + NODE_H;
    const parent = items.get(d.parent);
    if (parent) links.push(new Link(parent, item, item.color, parent.node.branch !== n.branch));
  });
  if (!nodes.length) {
    x0 = y0 = x1 = y1 = 0;
  }
  return { nodes, links, bounds: { x0, y0, x1, y1 }, index };
}

/** An edge of the tree layout; its path is made when it is drawn (most never are). */
class Link {
  constructor(source, target, color, restore) {
    this.source = source;
    this.target = target;
    this.color = color;
    this.restore = restore;
  }

  get path() {
    return linkPath(this.source, this.target);
  }
}

/** An S-shaped edge from the right side of `a`'s card to the left of `b`'s. */
export function linkPath(a, b) {
  const sx = a.x + (a.w ?? NODE_W);
  const sy = a.y + NODE_H / 2;
  const tx = b.x;
  const ty = b.y + NODE_H / 2;
  if (sy === ty) return `M${sx},${sy}H${tx}`;
  const mx = (sx + tx) / 2;
  return `M${sx},${sy}C${mx},${sy} ${mx},${ty} ${tx},${ty}`;
}

/**
 * Cuts `text` to about `maxChars` characters, with an ellipsis; cards are
 * sized by character count (measuring text per node would be slow).
 */
export function truncate(text, maxChars) {
  const s = String(text ?? '');
  if (s.length <= maxChars) return s;
  return `${s.slice(0, Math.max(1, maxChars - 1))}…`;
}

/**
 * The part of the world (layout coordinates) that a view of `width` x
 * `height` shows under transform `t`, grown by `margin` times the view's size
 * on every side.
 */
export function viewRect(t, width, height, margin = 0) {
  const w = width / t.k;
  const h = height / t.k;
  const x0 = -t.x / t.k;
  const y0 = -t.y / t.k;
  return { x0: x0 - w * margin, y0: y0 - h * margin, x1: x0 + w * (1 + margin), y1: y0 + h * (1 + margin) };
}

/** Whether rectangle `inner` lies inside `outer`. */
export function contains(outer, inner) {
  return inner.x0 >= outer.x0 && inner.y0 >= outer.y0 && inner.x1 <= outer.x1 && inner.y1 <= outer.y1;
}

/**
 * The nodes and edges of `layout` that touch `rect`: only those are put in
 * the page, so a tree of 10,000 nodes costs what the view shows.
 */
export function cull(layout, rect) {
  const nodes = [];
  for (const n of layout.nodes) {
    if (n.x + (n.w ?? NODE_W) >= rect.x0 && n.x <= rect.x1 && n.y + NODE_H >= rect.y0 && n.y <= rect.y1) nodes.push(n);
  }
  const links = [];
  for (const l of layout.links) {
    const a = l.source;
    const b = l.target;
    const lx0 = Math.min(a.x + (a.w ?? NODE_W), b.x);
    const lx1 = Math.max(b.x, a.x);
    const ly0 = Math.min(a.y, b.y);
    const ly1 = Math.max(a.y, b.y) + NODE_H;
    if (lx1 >= rect.x0 && lx0 <= rect.x1 && ly1 >= rect.y0 && ly0 <= rect.y1) links.push(l);
  }
  return { nodes, links };
}
