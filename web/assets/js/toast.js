// toast.js — short notices in the #toasts live region (role="status", aria-live="polite").
//
// A toast is a .toast element with data-kind = info | success | warning | error; it removes
// itself after a few seconds (longer for errors) or when its close button is pressed. Hovering or
// focusing it pauses the countdown so it can be read.

const DEFAULT_MS = { info: 5000, success: 5000, warning: 7000, error: 8000 };

function region() {
  let el = document.getElementById("toasts");
  if (!el) {
    el = document.createElement("div");
    el.id = "toasts";
    el.className = "toasts";
    el.setAttribute("role", "status");
    el.setAttribute("aria-live", "polite");
    document.body.append(el);
  }
  return el;
}

/**
 * Shows a toast and returns its element.
 * @param {string} message
 * @param {{kind?: "info"|"success"|"warning"|"error", timeout?: number}} [options]
 */
export function toast(message, { kind = "info", timeout } = {}) {
  const el = document.createElement("div");
  el.className = "toast";
  el.dataset.kind = kind;

  const text = document.createElement("span");
  text.className = "toast-text";
  text.textContent = message;

  const close = document.createElement("button");
  close.type = "button";
  close.className = "toast-close";
  close.setAttribute("aria-label", "Dismiss notification");
  close.textContent = "×";

  el.append(text, close);
  region().append(el);

  let timer = 0;
  let removed = false;
  const remove = () => {
    if (removed) return;
    removed = true;
    clearTimeout(timer);
    el.classList.add("is-leaving");
    setTimeout(() => el.remove(), 200);
  };
  const ms = timeout ?? DEFAULT_MS[kind] ?? 5000;
  const start = () => {
    clearTimeout(timer);
    timer = setTimeout(remove, ms);
  };
  close.addEventListener("click", remove);
  el.addEventListener("mouseenter", () => clearTimeout(timer));
  el.addEventListener("mouseleave", start);
  el.addEventListener("focusin", () => clearTimeout(timer));
  el.addEventListener("focusout", start);
  start();
  return el;
}
