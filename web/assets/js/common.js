// common.js — what every page does: the theme toggle, the mobile menu, the footer year.

import { initTheme } from "./theme.js";

export function prefersReducedMotion() {
  return Boolean(window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches);
}

/** "smooth", unless the visitor asked for less motion. */
export function scrollBehavior() {
  return prefersReducedMotion() ? "auto" : "smooth";
}

function initNav() {
  const toggle = document.getElementById("nav-toggle");
  const menu = document.getElementById("nav-menu");
  if (!toggle || !menu) return;
  const set = (open) => {
    toggle.setAttribute("aria-expanded", String(open));
    toggle.setAttribute("aria-label", open ? "Close menu" : "Open menu");
    menu.classList.toggle("is-open", open);
  };
  toggle.addEventListener("click", () => set(toggle.getAttribute("aria-expanded") !== "true"));
  // choosing a link closes the menu; so does Escape
  menu.addEventListener("click", (event) => {
    if (event.target.closest("a")) set(false);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && toggle.getAttribute("aria-expanded") === "true") {
      set(false);
      toggle.focus();
    }
  });
}

function initYear() {
  const year = String(new Date().getFullYear());
  for (const el of document.querySelectorAll("[data-year]")) el.textContent = year;
}

// Open Graph and JSON-LD want absolute URLs, but the public origin is only known where the site
// runs; the markup carries root-relative ones and this makes them absolute for this origin.
function absolutize(value) {
  return typeof value === "string" && value.startsWith("/") && !value.startsWith("//")
    ? window.location.origin + value
    : value;
}

function absolutizeSeo() {
  for (const link of document.querySelectorAll('link[rel="canonical"]')) {
    link.href = absolutize(link.getAttribute("href"));
  }
  const metas = 'meta[property="og:url"], meta[property="og:image"], meta[name="twitter:image"]';
  for (const meta of document.querySelectorAll(metas)) meta.content = absolutize(meta.getAttribute("content"));
  const org = document.getElementById("ld-org");
  if (org) {
    try {
      const data = JSON.parse(org.textContent);
      for (const key of ["url", "logo", "image"]) if (data[key]) data[key] = absolutize(data[key]);
      org.textContent = JSON.stringify(data);
    } catch {
      /* leave it as shipped */
    }
  }
}

export function initPage() {
  initTheme();
  initNav();
  initYear();
  absolutizeSeo();
}
