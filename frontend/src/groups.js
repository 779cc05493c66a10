// Runs of consecutive changes on one branch, collapsed into one group node
// so that a long chain of small edits reads as one step of the story
// ("lr 1e-3 → 2e-3 in 7 changes @ 910–1720"). Pure: tree in, tree out.

import { formatValue, shortName, shortNumber } from './format.js';
import { searchList, trialBranches } from './search.js';

/** A run shorter than this stays as it is. */
export const MIN_GROUP = 3;

export const GROUP_PREFIX = 'group:';

/** A search's group: `group:search:<search id>`. */
export const SEARCH_GROUP_PREFIX = `${GROUP_PREFIX}search:`;

/** A run's label in two parts: what changed overall, and how many changes at which steps. */
export function groupParts(diff, count, firstStep, lastStep) {
  // As diffRows orders and names them (without the rows' long text: a large tree has a thousand groups).
  const parts = Object.keys(diff || {}).sort().map((name) => {
    const pair = Array.isArray(diff[name]) ? diff[name] : [undefined, diff[name]];
    return `${shortName(name)} ${shortNumber(pair[0])} → ${shortNumber(pair[1])}`;
  });
  const steps = firstStep === lastStep ? `${firstStep}` : `${firstStep}–${lastStep}`;
  return parts.length
    ? { what: parts.join(', '), where: `in ${count} changes @ ${steps}` }
    : { what: `${count} changes, back where they started`, where: `@ ${steps}` };
}

/** The label of a run: what changed overall, how many changes, at which steps. */
export function groupLabel(diff, count, firstStep, lastStep) {
  const { what, where } = groupParts(diff, count, firstStep, lastStep);
  return `${what} ${where}`;
}

/** The overall change from `before` to `after`: `{name: [old, new]}` for the names that differ. */
function overall(before, after) {
  const out = {};
  const was = before || {};
  const now = after || {};
  for (const name in was) {
    if (Object.hasOwn(was, name) && was[name] !== now[name]) out[name] = [was[name], Object.hasOwn(now, name) ? now[name] : null];
  }
  for (const name in now) {
    if (Object.hasOwn(now, name) && !Object.hasOwn(was, name) && now[name] !== undefined) out[name] = [null, now[name]];
  }
  return out;
}

/**
 * Collapses runs of changes. A node can be in a run when it is a change on
 * its branch (not the branch's first node, not the current node, not a noted node, not the
 * branch's last node) and nothing branches off it (no restore from it), and
 * its only child continues the same branch. Runs of `min` or more become one
 * node `group:<first id>`, whose children are the run's last node's.
 *
 * @param {object} tree the tree answer
 * @param {Set<string>} expanded group ids to leave open
 * @param {number} [min]
 * @returns {{tree: object, groupOf: Map<string, string>, groups: Map<string, object>}}
 *   `tree` has the same shape as the answer (groups are nodes with `group: {members}`);
 *   `groupOf` maps a member's id to its group's id (closed and open groups).
 */
export function collapseRuns(tree, expanded = new Set(), min = MIN_GROUP, skip = new Set()) {
  const { groupOf, groups } = runGroups(tree, min, skip);
  return closeGroups(tree, groups, groupOf, expanded);
}

/**
 * The runs of changes of `tree` (see collapseRuns) as groups, none closed yet.
 * The tree is walked with arrays of node indices, in plain loops: at 10,000
 * nodes this runs before the first paint of every page load, mostly before
 * the browser has compiled it.
 */
function runGroups(tree, min, skip) {
  const nodes = (tree && tree.nodes) || [];
  const count = nodes.length;
  const at = new Map(); // id -> index (of the last node with that id)
  for (let i = 0; i < count; i++) at.set(nodes[i].id, i);
  // With a repeated id, a node's children are those of the last node of its id.
  const self = at.size === count ? null : (i) => at.get(nodes[i].id);
  const parentAt = new Int32Array(count); // -1: no parent in the tree
  const kidCount = new Int32Array(count);
  const firstKid = new Int32Array(count).fill(-1); // the first child in the tree's order
  for (let i = 0; i < count; i++) {
    const p = nodes[i].parent;
    const j = p ? at.get(p) : undefined;
    if (j === undefined) {
      parentAt[i] = -1;
      continue;
    }
    parentAt[i] = j;
    if (kidCount[j]++ === 0) firstKid[j] = i;
  }
  const last = new Uint8Array(count); // the last node of its branch
  for (const b of (tree && tree.branches) || []) {
    const k = b.nodes && b.nodes.length ? at.get(b.nodes[b.nodes.length - 1]) : undefined;
    if (k !== undefined && nodes[k].branch === b.name) last[k] = 1;
  }
  // A node can be in a run when it is a change on its branch (its parent on the
  // same branch), neither the branch's last node nor the current one, has no
  // note (a person marked it: it stays in sight) and nothing branches off it:
  // its only child continues the branch.
  const groupable = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const n = nodes[i];
    const p = parentAt[i];
    const j = self ? self(i) : i;
    if (p < 0 || last[i] || kidCount[j] !== 1 || n.current || n.note || n.restore) continue;
    if (nodes[p].branch !== n.branch || nodes[firstKid[j]].branch !== n.branch) continue;
    if (n.reason === 'restore' || n.reason === 'root' || skip.has(n.id)) continue;
    groupable[i] = 1;
  }
  const groupOf = new Map();
  const groups = new Map();
  const seen = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    // Start only at the first of a run: its parent is not in the run.
    if (!groupable[i] || seen[i] || groupable[parentAt[i]]) continue;
    const run = [];
    for (let cur = i; cur >= 0 && groupable[cur] && !seen[cur]; cur = firstKid[self ? self(cur) : cur]) {
      seen[cur] = 1;
      run.push(nodes[cur]);
    }
    if (run.length < min) continue;
    const end = run[run.length - 1];
    // Every node of a run has one child: the last one's is the group's.
    const group = runGroup(run, nodes[parentAt[i]], nodes[firstKid[at.get(end.id)]].id);
    groups.set(group.id, group);
    for (const m of run) groupOf.set(m.id, group.id);
  }
  return { groupOf, groups };
}

/** The group node of a run (its nodes in order; `before` is the first one's parent, `child` the last one's child). */
function runGroup(run, before, child) {
  const first = run[0];
  const last = run[run.length - 1];
  const diff = overall(before.hyperparameters, last.hyperparameters);
  const parts = groupParts(diff, run.length, first.start_step, last.start_step);
  const checkpoints = [];
  const members = [];
  for (const m of run) {
    members.push(m.id);
    if (m.checkpoints) for (const c of m.checkpoints) checkpoints.push(c);
  }
  const id = `${GROUP_PREFIX}${first.id}`;
  return {
    id,
    branch: first.branch,
    run: first.run,
    parent: first.parent,
    children: [child],
    start_step: first.start_step,
    end_step: last.end_step,
    current: false,
    reason: 'group',
    restore: null,
    hyperparameters: last.hyperparameters,
    diff,
    metrics: last.metrics,
    checkpoints,
    label: `${parts.what} ${parts.where}`,
    group: { members, first: first.id, last: last.id, ...parts },
  };
}

/**
 * Draws the closed ones of `groups` (id -> group node with `group: {members, first}`)
 * as one node each: a member's child outside the group hangs from the group.
 * Shared by the runs of changes and the searches' trials.
 */
export function closeGroups(tree, groups, groupOf, expanded, best = null) {
  if (!groups.size && !(best && best.size)) return { tree, groupOf, groups };
  const nodes = (tree && tree.nodes) || [];
  const closed = new Set([...groups.keys()].filter((g) => !expanded.has(g)));
  const out = [];
  for (const n of nodes) {
    const g = groupOf.get(n.id);
    if (g !== undefined && closed.has(g)) {
      const group = groups.get(g);
      if (group.group.first === n.id) out.push(group);
      continue;
    }
    const pg = n.parent ? groupOf.get(n.parent) : undefined;
    const marked = best !== null && best.has(n.id);
    if (pg !== undefined && closed.has(pg)) out.push(marked ? { ...n, parent: pg, searchBest: true } : { ...n, parent: pg });
    else out.push(marked ? { ...n, searchBest: true } : n);
  }
  const branches = ((tree && tree.branches) || []).map((b) => {
    const ids = [];
    for (const id of b.nodes || []) {
      const g = groupOf.get(id);
      const shown = g && closed.has(g) ? g : id;
      if (ids[ids.length - 1] !== shown) ids.push(shown);
    }
    return { ...b, nodes: ids };
  });
  return { tree: { ...tree, nodes: out, branches }, groupOf, groups };
}

/**
 * The trials of each search as one group node `group:search:<id>` hanging
 * from the search's source node: its members are every node of the trial
 * branches; the best trial's nodes are marked (`searchBest`) when open.
 *
 * @returns {{groups: Map<string, object>, groupOf: Map<string, string>, best: Set<string>}}
 */
export function searchGroups(tree) {
  const trials = trialBranches(tree);
  const groups = new Map();
  const groupOf = new Map();
  const best = new Set();
  if (!trials.size) return { groups, groupOf, best };
  const nodes = (tree && tree.nodes) || [];
  const entries = new Map(searchList(tree).map((e) => [e.id, e]));
  const members = new Map(); // search id -> its trials' nodes, in the tree's order
  for (const n of nodes) {
    const t = trials.get(n.branch);
    if (!t) continue;
    if (!members.has(t.search)) members.set(t.search, []);
    members.get(t.search).push(n);
    if (t.best) best.add(n.id);
  }
  for (const [sid, run] of members) {
    const inRun = new Set(run.map((m) => m.id));
    const first = run[0];
    // The source: the parent of the first trial's first node (outside the trials).
    const source = run.find((m) => m.parent && !inRun.has(m.parent));
    const entry = entries.get(sid) || { trials: [] };
    const bestEntry = entry.best || null;
    const bestNode = run.find((m) => best.has(m.id)) || null;
    const branches = new Set(run.map((m) => m.branch));
    const count = typeof entry.total === 'number' ? `${branches.size} / ${entry.total}` : `${branches.size}`;
    const metric = entry.objective && entry.objective.metric;
    const what = `search ${sid}: ${count} trials`;
    const where = bestEntry && typeof bestEntry.value === 'number'
      ? `★ trial ${bestEntry.number}: ${metric ? `${metric} ` : ''}${formatValue(bestEntry.value)}`
      : `${entry.state || 'running'}, no best yet`;
    const id = `${SEARCH_GROUP_PREFIX}${sid}`;
    const children = [];
    for (const n of nodes) if (n.parent && inRun.has(n.parent) && !inRun.has(n.id)) children.push(n.id);
    const shown = bestNode || first;
    groups.set(id, {
      id,
      branch: first.branch,
      run: first.run,
      parent: source ? source.parent : first.parent,
      children,
      start_step: Math.min(...run.map((m) => m.start_step)),
      end_step: Math.max(...run.map((m) => m.end_step ?? m.start_step)),
      current: false,
      reason: 'group',
      restore: null,
      hyperparameters: shown.hyperparameters,
      diff: {},
      metrics: shown.metrics,
      checkpoints: [],
      label: `${what} · ${where}`,
      group: { members: run.map((m) => m.id), first: first.id, last: run[run.length - 1].id, select: shown.id, search: sid, what, where },
    });
    for (const m of run) groupOf.set(m.id, id);
  }
  return { groups, groupOf, best };
}

/**
 * The tree as drawn: each search's trials in one group, runs of changes in
 * groups (outside the trials), the closed ones shown as one node each, the
 * best trial's nodes marked `searchBest`.
 */
export function collapseTree(tree, expanded = new Set(), min = MIN_GROUP) {
  const search = searchGroups(tree);
  const runs = runGroups(tree, min, search.groupOf);
  if (!search.groups.size) return closeGroups(tree, runs.groups, runs.groupOf, expanded, search.best);
  const groups = new Map([...runs.groups, ...search.groups]);
  const groupOf = new Map([...runs.groupOf, ...search.groupOf]);
  return closeGroups(tree, groups, groupOf, expanded, search.best);
}
