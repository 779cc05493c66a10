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
  for (const name of new Set([...Object.keys(before || {}), ...Object.keys(after || {})])) {
    const a = before ? before[name] : undefined;
    const b = after ? after[name] : undefined;
    if (a !== b) out[name] = [a === undefined ? null : a, b === undefined ? null : b];
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

/** The runs of changes of `tree` (see collapseRuns) as groups, none closed yet. */
function runGroups(tree, min, skip) {
  const nodes = (tree && tree.nodes) || [];
  const byId = new Map();
  for (const n of nodes) byId.set(n.id, n);
  const kids = new Map();
  for (const n of nodes) {
    if (!n.parent || !byId.has(n.parent)) continue;
    const list = kids.get(n.parent);
    if (list) list.push(n);
    else kids.set(n.parent, [n]);
  }
  const lastOf = new Map();
  for (const b of (tree && tree.branches) || []) if (b.nodes && b.nodes.length) lastOf.set(b.name, b.nodes[b.nodes.length - 1]);
  // Each node is asked about once or twice (as itself, as a parent): keep the answers.
  const known = new Map();
  const groupable = (n) => {
    if (!n) return false;
    let yes = known.get(n.id);
    if (yes !== undefined) return yes;
    yes = canGroup(n, byId, kids, lastOf, skip);
    known.set(n.id, yes);
    return yes;
  };
  return findRuns(nodes, byId, kids, groupable, min);
}

function canGroup(n, byId, kids, lastOf, skip) {
  // A node with a note stays in sight (with its marker): a person marked it.
  if (skip.has(n.id) || !n.parent || n.current || n.note || n.reason === 'restore' || n.reason === 'root' || n.restore) return false;
  const parent = byId.get(n.parent);
  if (!parent || parent.branch !== n.branch) return false;
  if (lastOf.get(n.branch) === n.id) return false;
  const children = kids.get(n.id);
  return children !== undefined && children.length === 1 && children[0].branch === n.branch;
}

function findRuns(nodes, byId, kids, groupable, min) {
  const groupOf = new Map();
  const groups = new Map();
  const seen = new Set();
  for (const n of nodes) {
    if (seen.has(n.id) || !groupable(n)) continue;
    // Start only at the first of a run: its parent is not in the run.
    if (groupable(byId.get(n.parent))) continue;
    const run = [];
    let cur = n;
    while (cur && !seen.has(cur.id) && groupable(cur)) {
      seen.add(cur.id);
      run.push(cur);
      cur = (kids.get(cur.id) || [])[0];
    }
    if (run.length < min) continue;
    const id = `${GROUP_PREFIX}${run[0].id}`;
    const first = run[0];
    const last = run[run.length - 1];
    const before = (byId.get(first.parent) || {}).hyperparameters;
    const diff = overall(before, last.hyperparameters);
    const parts = groupParts(diff, run.length, first.start_step, last.start_step);
    const checkpoints = [];
    const members = [];
    for (const m of run) {
      members.push(m.id);
      if (m.checkpoints) for (const c of m.checkpoints) checkpoints.push(c);
    }
    const group = {
      id,
      branch: first.branch,
      run: first.run,
      parent: first.parent,
      children: (kids.get(last.id) || []).map((c) => c.id),
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
    groups.set(id, group);
    for (const m of run) groupOf.set(m.id, id);
  }
  return { groupOf, groups };
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
  const runs = runGroups(tree, min, new Set(search.groupOf.keys()));
  const groups = new Map([...runs.groups, ...search.groups]);
  const groupOf = new Map([...runs.groupOf, ...search.groupOf]);
  return closeGroups(tree, groups, groupOf, expanded, search.best);
}
