// The trainer's card: its state, recent changes and errors.

import { h, replaceChildren } from '../dom.js';
import { formatClock } from '../format.js';
import { section } from './common.js';

export function renderLog(el, tree, summary) {
  const status = (tree && tree.status) || null;
  const trainer = (tree && tree.trainer) || null;
  const applied = status && Array.isArray(status.applied) ? status.applied.slice(-5).reverse() : [];
  const errors = status && Array.isArray(status.errors) ? status.errors.slice(-5).reverse() : [];
  const facts = [];
  if (status && typeof status.pid === 'number') facts.push(`pid ${status.pid}`);
  if (status && status.node) facts.push(`node ${status.node}`);
  if (trainer && typeof trainer.age_s === 'number') facts.push(`heartbeat ${Math.max(0, trainer.age_s).toFixed(1)} s ago`);
  replaceChildren(
    el,
    h('h2', {}, 'Trainer'),
    h('p', { class: `trainer-line level-${summary.level}` }, h('span', { class: 'dot', 'aria-hidden': 'true' }), summary.text),
    facts.length ? h('p', { class: 'muted small' }, facts.join(' · ')) : null,
    section(
      'Last errors',
      errors.length
        ? h('ul', { class: 'log errors' }, errors.map((e) =>
            h('li', {}, h('span', { class: 'time' }, formatClock(e.time)), ' ', h('span', { class: 'msg' }, String(e.message ?? '')))))
        : h('p', { class: 'muted' }, 'None.'),
    ),
    section(
      'Recent changes',
      applied.length
        ? h('ul', { class: 'log applied' }, applied.map((a) =>
            h('li', {}, h('span', { class: 'time' }, formatClock(a.time)), ' ',
              typeof a.step === 'number' ? h('span', { class: 'step' }, `@ ${a.step}`) : null, ' ',
              h('span', { class: 'msg' }, String(a.what ?? a.kind ?? '')))))
        : h('p', { class: 'muted' }, 'None yet.'),
    ),
  );
}
