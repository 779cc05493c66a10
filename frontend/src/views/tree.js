// The tree view: one card per node, only those in and near the view in the
// page (see layout.cull), the selection halo, the tooltips and the legend.

import { h, replaceChildren, s } from '../dom.js';
import { formatSteps } from '../format.js';
import { NODE_H, NODE_W, branchColor, contains, cull, truncate, viewRect } from '../layout.js';

let nodeTemplate = null;

function template() {
  if (nodeTemplate) return nodeTemplate;
  // As few elements per node as possible: a 1,000-node tree is 5,000 elements.
  // The tooltip (<title>) is added on first hover, the selection halo is one
  // shared element.
  nodeTemplate = s(
    'g',
    { class: 'node', tabindex: '0', role: 'button' },
    s('rect', { class: 'card', width: NODE_W, height: NODE_H, rx: 4 }),
    s('rect', { class: 'stripe', width: 5, height: NODE_H, rx: 2 }),
    s('text', { class: 'label', x: 13, y: 17 }),
    s('text', { class: 'sub', x: 13, y: 32 }),
  );
  return nodeTemplate;
}

/** The full text of a node's tooltip: its whole label, never cut. */
export function tooltipText(node) {
  const steps = formatSteps(node.start_step, node.end_step);
  if (node.group) {
    return `${node.label}\n${node.branch} · ${steps} · ${node.group.members.length} nodes (${node.group.members[0]} … ${node.group.last})\nClick to expand`;
  }
  const note = node.note ? `\nNote: ${node.note}` : '';
  return `${node.label}\n${node.branch} · ${steps}${node.current ? ' · current' : ''}${note}`;
}

/** The tooltip of a node's <g>, made when the pointer first rests on it. */
export function ensureTooltip(g, node) {
  if (!g || g.querySelector('title')) return;
  g.insertBefore(s('title', { text: tooltipText(node) }), g.firstChild);
}

/** How many characters of 12 px text fit in a card `w` wide. */
function fits(w, px = 6.4) {
  return Math.max(0, Math.floor((w - 16) / px));
}

/** The one selection halo, drawn around the card at `item` (or hidden). */
export function placeHalo(halo, item) {
  if (!item) {
    halo.setAttribute('visibility', 'hidden');
    return;
  }
  halo.setAttribute('visibility', 'visible');
  halo.setAttribute('width', (item.w ?? NODE_W) + 10);
  halo.setAttribute('transform', `translate(${item.x - 5},${item.y - 5})`);
}

export function makeHalo() {
  return s('rect', { class: 'halo', width: NODE_W + 10, height: NODE_H + 10, rx: 8, visibility: 'hidden', 'pointer-events': 'none' });
}

/** What a node's element shows; an element whose key is unchanged is kept. */
function nodeKey(item) {
  const n = item.node;
  return `${item.x},${item.y},${item.w},${item.color},${n.current ? 1 : 0}${n.searchBest ? '*' : ''},${n.start_step},${n.end_step},${n.branch}\u0000${n.label}\u0000${n.note || ''}`;
}

/** A node's <g>, cloned from the template and filled in with setAttribute/textContent. */
function nodeElement(item, selectedId) {
  const n = item.node;
  const g = template().cloneNode(true);
  g.setAttribute('transform', `translate(${item.x},${item.y})`);
  g.setAttribute('data-id', n.id);
  const steps = formatSteps(n.start_step, n.end_step);
  g.setAttribute('aria-label', `${n.label} (${n.branch}, ${steps})${n.current ? ', current' : ''}`);
  const [card, stripe, label, sub] = g.childNodes;
  const w = item.w ?? NODE_W;
  if (w !== NODE_W) card.setAttribute('width', w);
  card.setAttribute('stroke', item.color);
  stripe.setAttribute('fill', item.color);
  // Text is cut only to the card's width; the tooltip and the node card hold it whole.
  // A group: what changed overall on the first line, how many changes where on the second.
  label.textContent = truncate(n.group ? n.group.what : n.label, fits(w));
  sub.textContent = truncate(n.group ? n.group.where : `${n.branch} · ${steps}`, fits(w, 5.8));
  if (n.group) {
    g.setAttribute('class', n.group.search ? 'node group search-group' : 'node group');
    g.setAttribute('aria-label', `${n.label} (${n.branch}, ${n.group.members.length} nodes, ${steps}); expand`);
    g.insertBefore(s('rect', { class: 'stack', x: 4, y: -4, width: w, height: NODE_H, rx: 4, stroke: item.color }), card);
  }
  if (n.searchBest) {
    // The best trial of a search: a star before its label.
    g.classList.add('search-best');
    label.textContent = truncate(`★ ${n.label}`, fits(w));
  }
  if (n.current) {
    g.classList.add('current');
    card.setAttribute('fill', item.color);
    g.appendChild(s('circle', { class: 'current-dot', cx: w - 10, cy: 10, r: 4, fill: item.color }));
  }
  if (n.note && !n.group) {
    // A small folded corner: this node has a note (the tooltip and the node card show it).
    g.appendChild(s('path', { class: 'note-mark', d: `M${w - 9},${NODE_H} L${w},${NODE_H - 9} L${w},${NODE_H} Z` }));
    g.setAttribute('aria-label', `${g.getAttribute('aria-label')}, has a note`);
  }
  if (n.id === selectedId) g.classList.add('selected');
  return g;
}

/** Views of margin drawn around the view, so that a pan shows nodes already there. */
const MARGIN = 1;
/**
 * A layout of more cards than this is first drawn with only `FIRST_MARGIN`
 * around the view (a large tree is on screen sooner), and with the whole
 * margin once the page is idle.
 */
const LARGE = 1000;
const FIRST_MARGIN = 0.25;

function whenIdle(fn) {
  if (typeof globalThis.requestIdleCallback === 'function') globalThis.requestIdleCallback(fn, { timeout: 300 });
  else setTimeout(fn, 50);
}

/**
 * Draws a laid-out tree into the `links` and `nodes` layers of the SVG. Only
 * what is in or near the view is in the page (see layout.cull): `update()`
 * after each pan or zoom mounts the nodes that come into view and drops
 * those far out of it. Edges are one <path> per colour and style.
 */
export class TreeView {
  constructor(linksLayer, nodesLayer) {
    this.linksLayer = linksLayer;
    this.nodesLayer = nodesLayer;
    this.layout = null;
    this.mounted = new Map();
    this.keys = new Map(); // id -> nodeKey() of the element drawn
    this.rendered = null; // the world rectangle drawn last
    this.selected = null;
    this.fresh = false; // a large layout not drawn yet: its first drawing has less margin
    this.last = null; // the view of the last drawing: {t, width, height}
  }

  /**
   * Shows a new layout. Nodes drawn before that look the same in the new
   * one (same place, label, steps...) keep their element, and with it the
   * focus and the pointer's hover; the others are dropped.
   */
  setLayout(layout) {
    this.layout = layout;
    this.rendered = null;
    this.fresh = Boolean(layout && layout.nodes.length > LARGE);
    const keep = new Map();
    for (const [id, g] of this.mounted) {
      const item = layout ? layout.index.get(id) : null;
      if (item && this.keys.get(id) === nodeKey(item)) keep.set(id, g);
      else {
        g.remove();
        this.keys.delete(id);
      }
    }
    this.mounted = keep;
    this.linksLayer.textContent = '';
  }

  /**
   * Draws what the view `t` of size `width` x `height` shows, with one view
   * of margin around it; does nothing while the view stays inside what was
   * drawn last at about the same scale.
   */
  update(t, width, height, force = false) {
    if (!this.layout) return;
    this.last = { t, width, height };
    const view = viewRect(t, width, height, 0);
    const r = this.rendered;
    if (!force && r && contains(r.rect, view) && t.k > r.k * 0.6) return;
    const t0 = performance.now();
    const first = this.fresh;
    this.fresh = false;
    const rect = viewRect(t, width, height, first ? FIRST_MARGIN : MARGIN);
    this.rendered = { rect, k: t.k };
    if (first) {
      const layout = this.layout;
      // The rest of the margin once the first frame is out (unless a pan has drawn it already).
      whenIdle(() => {
        const last = this.last;
        if (this.layout === layout && this.rendered && this.rendered.rect === rect && last) this.update(last.t, last.width, last.height, true);
      });
    }
    const { nodes, links } = cull(this.layout, rect);

    const groups = new Map();
    for (const link of links) {
      const key = `${link.color}|${link.restore ? 1 : 0}`;
      if (!groups.has(key)) groups.set(key, { color: link.color, restore: link.restore, d: [] });
      groups.get(key).d.push(link.path);
    }
    const linkFrag = document.createDocumentFragment();
    if (this.layout.ticks) this.drawAxis(linkFrag, rect);
    for (const g of groups.values()) {
      linkFrag.appendChild(s('path', { class: g.restore ? 'link restore' : 'link', d: g.d.join(''), stroke: g.color }));
    }
    replaceChildren(this.linksLayer, linkFrag);

    const keep = new Set();
    const frag = document.createDocumentFragment();
    for (const item of nodes) {
      keep.add(item.id);
      if (this.mounted.has(item.id)) continue;
      const g = nodeElement(item, this.selected);
      this.mounted.set(item.id, g);
      this.keys.set(item.id, nodeKey(item));
      frag.appendChild(g);
    }
    for (const [id, g] of this.mounted) {
      if (keep.has(id)) continue;
      if (g.contains(document.activeElement)) continue; // never drop the focused node
      g.remove();
      this.mounted.delete(id);
      this.keys.delete(id);
    }
    this.nodesLayer.appendChild(frag);
    // For benchmarks: the cost of the last (re)draw and how many nodes are in the page.
    globalThis.__retuneLastUpdateMs = performance.now() - t0;
    globalThis.__retuneMountedNodes = this.mounted.size;
  }

  /** The step axis and the lanes' names of the step layout, for what is in `rect`. */
  drawAxis(frag, rect) {
    const { ticks, lanes, bounds } = this.layout;
    const top = bounds.y0 + 12;
    for (const tick of ticks) {
      if (tick.x < rect.x0 || tick.x > rect.x1) continue;
      frag.appendChild(s('line', { class: 'step-grid', x1: tick.x, x2: tick.x, y1: top + 4, y2: bounds.y1 }));
      frag.appendChild(s('text', { class: 'step-tick', x: tick.x, y: top, 'text-anchor': 'middle' }, String(tick.step)));
    }
    for (const lane of lanes) {
      if (lane.y + NODE_H < rect.y0 || lane.y > rect.y1) continue;
      frag.appendChild(s('text', { class: 'lane-name', x: lane.x - 8, y: lane.y + NODE_H / 2 + 4, 'text-anchor': 'end' }, lane.branch));
    }
  }

  /** Marks `id` as the selected node. */
  select(id) {
    const old = this.selected !== null ? this.mounted.get(this.selected) : null;
    if (old) old.classList.remove('selected');
    this.selected = id;
    const g = id !== null ? this.mounted.get(id) : null;
    if (g) g.classList.add('selected');
  }

  /** The <g> of a node, if it is drawn. */
  element(id) {
    return this.mounted.get(id) || null;
  }
}

/** A legend of the branches: colour chip and name; a click selects the branch's first node. */
export function renderLegend(el, branches, onPick, limit = 12) {
  const shown = branches.slice(0, limit);
  replaceChildren(
    el,
    shown.map((b) =>
      h(
        'button',
        { type: 'button', class: 'legend-item', title: `Branch ${b.name}: show its first node`, onclick: () => onPick(b) },
        h('span', { class: 'chip', style: `background:${branchColor(b.color)}` }),
        h('span', { class: 'legend-name' }, b.name),
      ),
    ),
    branches.length > limit ? h('span', { class: 'legend-more' }, `+${branches.length - limit} more`) : null,
  );
  el.hidden = branches.length === 0;
}

