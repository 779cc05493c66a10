// The node card's note: a text field that outlives the card's redraws, with
// its count, its Save button and its message line. What the tree holds is
// shown until the person edits it; an edit (or a written note the trainer
// has not recorded yet) is kept while the tree refreshes.

import { h } from '../dom.js';
import { MAX_NOTE_CHARS, noteCount, noteProblem } from '../notes.js';

export class NoteEditor {
  constructor() {
    this.nodeId = null;
    this.shown = '';
    this.input = h('textarea', {
      class: 'note-text',
      rows: 2,
      placeholder: 'A note on this node (e.g. "diverged: lr too high")',
      spellcheck: 'true',
      'aria-label': `Note on this node, at most ${MAX_NOTE_CHARS} characters`,
      oninput: () => this._count(),
    });
    this.count = h('span', { class: 'note-count' });
    this.save = h('button', { type: 'button', class: 'note-save' }, 'Save note');
    this.message = h('div', { class: 'note-message', role: 'status' });
    this.el = h('div', { class: 'note-editor' }, this.input, h('div', { class: 'note-row' }, this.save, this.count), this.message);
  }

  text() {
    return this.input.value;
  }

  /** Follows the selected node: a new node shows its note; the same one keeps an edit in progress. */
  show(node, { writable, onSave }) {
    const note = node.note || '';
    if (node.id !== this.nodeId) {
      this.nodeId = node.id;
      this.input.value = note;
      this.message.textContent = '';
    } else if (this.input.value === this.shown) {
      this.input.value = note; // not edited: follow the tree
    }
    this.shown = note;
    this.input.disabled = !writable;
    this.save.disabled = !writable;
    this.save.title = writable ? 'Write this note into retune.json' : 'The logdir is not writable';
    this.save.onclick = onSave;
    this._count();
    return this.el;
  }

  /** Runs `draw()` (which may move this editor in the page) and gives the field its focus back. */
  keepFocus(draw) {
    const focused = typeof document !== 'undefined' && document.activeElement === this.input;
    const { selectionStart, selectionEnd } = this.input;
    draw();
    if (focused) {
      this.input.focus();
      this.input.setSelectionRange(selectionStart, selectionEnd);
    }
  }

  _count() {
    this.count.textContent = noteCount(this.input.value);
    this.count.classList.toggle('over', noteProblem(this.input.value) !== null);
  }
}
