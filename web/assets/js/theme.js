// theme.js — the dark-mode toggle (#theme-toggle).
//
// The page follows prefers-color-scheme until the visitor presses the toggle; from then on the
// choice is <html data-theme="dark|light"> and localStorage "sweety-theme" (theme-init.js applies
// it before the first paint on the next visit). aria-pressed says whether the page is dark now,
// whichever of the two decided it; the button's accessible name stays "Dark mode" (a toggle
// button's name must not change with its state), and its tooltip says what a press will do.

export const THEME_KEY = "sweety-theme";

const systemDark = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

function storedTheme() {
  try {
    const t = window.localStorage.getItem(THEME_KEY);
    return t === "dark" || t === "light" ? t : null;
  } catch {
    return null;
  }
}

/** The theme in effect: the explicit choice, else the system's. */
export function currentTheme() {
  const chosen = document.documentElement.dataset.theme;
  if (chosen === "dark" || chosen === "light") return chosen;
  return systemDark && systemDark.matches ? "dark" : "light";
}

/** Applies and remembers a theme ("dark" or "light"). */
export function setTheme(theme) {
  document.documentElement.dataset.theme = theme;
  try {
    window.localStorage.setItem(THEME_KEY, theme);
  } catch {
    /* private mode: the choice lasts for this page only */
  }
  syncToggles();
}

function syncToggles() {
  const dark = currentTheme() === "dark";
  for (const button of document.querySelectorAll("#theme-toggle")) {
    button.setAttribute("aria-pressed", String(dark));
    button.title = dark ? "Switch to light mode" : "Switch to dark mode";
  }
  const meta = document.querySelector('meta[name="theme-color"]');
  if (meta) meta.content = dark ? "#151016" : "#fcf7f3";
}

export function initTheme() {
  const button = document.getElementById("theme-toggle");
  if (!button) return;
  // a stored choice that theme-init.js could not apply (it always can, but be safe)
  const stored = storedTheme();
  if (stored && !document.documentElement.dataset.theme) document.documentElement.dataset.theme = stored;
  button.addEventListener("click", () => setTheme(currentTheme() === "dark" ? "light" : "dark"));
  if (systemDark) {
    const onChange = () => syncToggles();
    if (systemDark.addEventListener) systemDark.addEventListener("change", onChange);
    else if (systemDark.addListener) systemDark.addListener(onChange);
  }
  // another tab changed the theme
  window.addEventListener("storage", (event) => {
    if (event.key !== THEME_KEY) return;
    if (event.newValue === "dark" || event.newValue === "light") document.documentElement.dataset.theme = event.newValue;
    else delete document.documentElement.dataset.theme;
    syncToggles();
  });
  syncToggles();
}
