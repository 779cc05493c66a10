// Small pieces shared by the side panel's cards.

import { h, replaceChildren } from '../dom.js';

/** A titled section of a card. */
export function section(title, ...children) {
  return h('div', { class: 'section' }, h('h3', {}, title), ...children);
}

/** A card that says only `text` (loading, nothing selected). */
export function renderNoNode(el, text) {
  replaceChildren(el, h('p', { class: 'muted' }, text));
}
