// Light or dark, as TensorBoard is: TensorBoard 2.21 marks its dark mode on
// its own page with `document.body.classList.toggle("dark-mode", on)`; the
// tab's iframe is same-origin and reads it (and watches it change). Opened
// outside TensorBoard, the tab follows the browser's prefers-color-scheme.

/**
 * TensorBoard's dark mode as the parent page shows it: true or false, or
 * null when the tab is not inside TensorBoard's page (or cannot see it).
 */
export function parentDark(win = globalThis.window) {
  try {
    if (!win || win.parent === win) return null;
    const doc = win.parent.document;
    if (!doc || !doc.body || !doc.querySelector('tb-webapp')) return null;
    return doc.body.classList.contains('dark-mode');
  } catch {
    return null; // another origin: nothing to read
  }
}

/** `dark` or `light`: TensorBoard's own choice when known, else the browser's. */
export function chooseTheme(parent, prefersDark) {
  if (parent === true) return 'dark';
  if (parent === false) return 'light';
  return prefersDark ? 'dark' : 'light';
}

/**
 * Keeps `document.documentElement`'s `data-theme` in step with TensorBoard's
 * toggle and the browser's scheme; returns the theme set first.
 */
export function followTheme(win = window) {
  const media = typeof win.matchMedia === 'function' ? win.matchMedia('(prefers-color-scheme: dark)') : null;
  const apply = () => {
    const theme = chooseTheme(parentDark(win), Boolean(media && media.matches));
    if (win.document.documentElement.dataset.theme !== theme) win.document.documentElement.dataset.theme = theme;
    return theme;
  };
  if (media && typeof media.addEventListener === 'function') media.addEventListener('change', apply);
  try {
    if (parentDark(win) !== null && typeof MutationObserver === 'function') {
      new MutationObserver(apply).observe(win.parent.document.body, { attributes: true, attributeFilter: ['class'] });
    }
  } catch {
    // Not readable: the browser's scheme alone.
  }
  return apply();
}
