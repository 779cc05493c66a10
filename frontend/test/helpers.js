// Shared helpers of the frontend's unit tests.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');

/** A fixture written by tests/make_frontend_fixtures.py. */
export function fixture(name) {
  return JSON.parse(readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8'));
}

/** The names of the tree fixtures (tree_small, tree_branchy, ...). */
export function treeFixtures() {
  return readdirSync(FIXTURES)
    .filter((f) => /^tree_[a-z]+\.json$/.test(f))
    .map((f) => f.slice(0, -5))
    .sort();
}

/**
 * A tree of `count` nodes in the shape of the tree route's answer: `branches`
 * branches, each restored from a node of an earlier one (deterministic).
 */
export function bigTree(count, branches) {
  let seed = 12345;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const nodes = [];
  const out = [];
  const per = Math.floor(count / branches);
  for (let b = 0; b < branches; b++) {
    const name = b === 0 ? 'main' : `main-s${b}`;
    const n = b === branches - 1 ? count - per * (branches - 1) : per;
    let parent = b === 0 ? null : nodes[Math.floor(rand() * nodes.length)];
    let step = parent ? parent.start_step + 50 : 0;
    const ids = [];
    for (let k = 0; k < n; k++) {
      const node = {
        id: `${name}-${k + 1}`,
        branch: name,
        run: `big/${name}`,
        parent: parent ? parent.id : null,
        children: [],
        start_step: step,
        end_step: step + 100,
        current: b === branches - 1 && k === n - 1,
        reason: k === 0 && parent ? 'restore' : parent ? 'control' : 'root',
        restore: k === 0 && parent ? { branch: parent.branch, step, node: parent.id } : null,
        request_id: null,
        hyperparameters: { learning_rate: 0.001 / (k + 1), momentum: 0.9 },
        diff: k ? { learning_rate: [0.001 / k, 0.001 / (k + 1)] } : {},
        label: k ? `lr step ${k} @ ${step}` : parent ? `restored ${parent.branch}@${step}` : 'start @ 0',
        metrics: { loss: { step: step + 100, value: 1 / (k + 1) } },
        checkpoints: [step + 100],
        has_config: k === 0,
        time: 1000 + nodes.length,
      };
      if (parent) parent.children.push(node.id);
      nodes.push(node);
      ids.push(node.id);
      parent = node;
      step += 100;
    }
    out.push({ name, run: `big/${name}`, parent_node: null, start_step: 0, last_step: step, nodes: ids, checkpoints: [], color: b, time: b });
  }
  return { experiment: 'big', roots: ['main-1'], nodes, branches: out, status: null, trainer: { alive: false, state: 'unknown', age_s: null } };
}
