// Notes on nodes: the rule for what a person may write (the trainer's, from
// control_schema.json) and the write itself, through the plugin's `note`
// route into retune.json's `notes`.

import schema from './control_schema.json' with { type: 'json' };

/** The longest note, in characters, as tb_retune/experiment/control.py allows. */
export const MAX_NOTE_CHARS = schema.max_note_chars;

/** Why `text` cannot be written as a note, or null ("" is fine: it removes the note). */
export function noteProblem(text) {
  if (typeof text !== 'string') return 'a note is text';
  const length = [...text].length;
  if (length > MAX_NOTE_CHARS) return `the note has ${length} characters, more than the limit of ${MAX_NOTE_CHARS}; shorten it`;
  return null;
}

/** `12 / 500`: how much of the limit a note uses. */
export function noteCount(text) {
  return `${[...text].length} / ${MAX_NOTE_CHARS}`;
}

/** Writes the note editor's text as the note of the selected node. */
export async function saveNote(app) {
  const experiment = app.state.experiment;
  const item = app.selectedItem();
  if (!item) return;
  const editor = app.nodeCard.note;
  const node = item.node.id;
  const text = editor.text();
  const problem = noteProblem(text);
  if (problem) {
    app.setMessage(editor.message, 'error', `Not written: ${problem}`);
    return;
  }
  app.setMessage(editor.message, 'info', `Writing the note on ${node}…`);
  try {
    await app.api.note(experiment, node, text);
  } catch (e) {
    if (experiment === app.state.experiment) app.setMessage(editor.message, 'error', `Not written: ${e.message}`);
    return;
  }
  if (experiment === app.state.experiment) {
    const what = text ? `the note on ${node}` : `the removal of the note on ${node}`;
    app.setMessage(editor.message, 'ok', `Wrote ${what} to retune.json; the trainer records it in the tree when it takes the file.`);
  }
  app.poller.now();
}
