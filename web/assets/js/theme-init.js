/* theme-init.js — a classic script loaded in <head>, before the stylesheet is applied to the
 * first paint: it applies the visitor's stored theme choice (localStorage "sweety-theme") so a
 * dark-mode visitor never sees a flash of the light page, and marks the document as scripted
 * (html.js) so that CSS may hide things JavaScript will reveal (the mobile menu). */
(function () {
  var root = document.documentElement;
  root.classList.add("js");
  try {
    var theme = window.localStorage.getItem("sweety-theme");
    if (theme === "dark" || theme === "light") root.setAttribute("data-theme", theme);
  } catch (e) {
    /* storage disabled: follow the system preference */
  }
})();
