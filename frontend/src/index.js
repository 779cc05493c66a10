// The Retune tab. TensorBoard loads this ES module into the tab's iframe
// (`/data/plugin_entry.html?name=retune`, base URL `plugin/retune/`) and
// calls `render()`. The app is in app.js.

import css from './style.css';
import { RetuneApp } from './app.js';
import { Api } from './model.js';
import { followTheme } from './theme.js';

export { REFRESH_MS } from './poll.js';

let app = null;

/** Entry point called by TensorBoard's plugin frame. */
export async function render() {
  if (app) return;
  const style = document.createElement('style');
  style.textContent = css;
  document.head.appendChild(style);
  document.documentElement.lang = document.documentElement.lang || 'en';
  followTheme(window);
  const root = document.createElement('div');
  root.className = 'retune-root';
  document.body.appendChild(root);
  app = new RetuneApp(root, new Api(document.baseURI));
  window.__retuneApp = app;
  app.start();
}
