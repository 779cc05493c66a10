// The note rule of the tab, held against the trainer's (control_schema.json).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { MAX_NOTE_CHARS, noteCount, noteProblem } from '../src/notes.js';

const schema = JSON.parse(readFileSync(new URL('../src/control_schema.json', import.meta.url), 'utf8'));

test('the limit is the schema\'s and notes is a key of the control file', () => {
  assert.equal(MAX_NOTE_CHARS, schema.max_note_chars);
  assert.equal(MAX_NOTE_CHARS, 500);
  assert.ok(schema.top_level_keys.includes('notes'));
});

test('a note up to the limit is fine, an empty one removes, a longer one is refused', () => {
  assert.equal(noteProblem(''), null);
  assert.equal(noteProblem('x'.repeat(MAX_NOTE_CHARS)), null);
  assert.match(noteProblem('x'.repeat(MAX_NOTE_CHARS + 1)), /501 characters, more than the limit of 500/);
  assert.match(noteProblem(3), /text/);
});

test('characters are counted as Python counts them (code points)', () => {
  const astral = '\u{1F600}'.repeat(MAX_NOTE_CHARS);
  assert.equal(noteProblem(astral), null);
  assert.equal(noteCount('ab\u{1F600}'), '3 / 500');
});

test('the tree answer gives every node its note (or null), as the Python side writes it', async () => {
  const { fixture } = await import('./helpers.js');
  const tree = fixture('tree_small');
  const notes = Object.fromEntries(tree.nodes.filter((n) => n.note !== null).map((n) => [n.id, n.note]));
  assert.deepEqual(notes, { 'main-2': 'lr 0.002 diverged <b>fast</b>', 'main-s1-1': 'try momentum 0.8' });
  assert.ok(tree.nodes.every((n) => 'note' in n));
  assert.equal(fixture('tree_small.node-main-s1-1').note, 'try momentum 0.8');
});

test('a node with a note is never folded into a group of changes', async () => {
  const { fixture } = await import('./helpers.js');
  const { collapseRuns } = await import('../src/groups.js');
  const tree = fixture('tree_long');
  const before = collapseRuns(tree);
  const member = [...before.groupOf.keys()][3];
  assert.ok(member, 'tree_long has grouped nodes');
  const noted = { ...tree, nodes: tree.nodes.map((n) => (n.id === member ? { ...n, note: 'look here' } : n)) };
  const after = collapseRuns(noted);
  assert.ok(!after.groupOf.has(member));
  assert.ok(after.tree.nodes.some((n) => n.id === member && n.note === 'look here'));
});
