// faq.js — the FAQ accordion (#faq): each .faq-question button toggles the panel it controls
// (aria-expanded, the panel's hidden attribute). Up/Down/Home/End move between questions, as the
// WAI-ARIA accordion pattern suggests. Several panels may be open at once.

export function initFaq(root) {
  if (!root) return;
  const buttons = [...root.querySelectorAll(".faq-question[aria-controls]")];
  const setOpen = (button, open) => {
    const panel = document.getElementById(button.getAttribute("aria-controls"));
    if (!panel) return;
    button.setAttribute("aria-expanded", String(open));
    panel.hidden = !open;
  };
  for (const button of buttons) {
    button.addEventListener("click", () => setOpen(button, button.getAttribute("aria-expanded") !== "true"));
    button.addEventListener("keydown", (event) => {
      const i = buttons.indexOf(button);
      let next = -1;
      if (event.key === "ArrowDown") next = (i + 1) % buttons.length;
      else if (event.key === "ArrowUp") next = (i - 1 + buttons.length) % buttons.length;
      else if (event.key === "Home") next = 0;
      else if (event.key === "End") next = buttons.length - 1;
      if (next < 0) return;
      event.preventDefault();
      buttons[next].focus();
    });
  }
  // a link to a question (#faq-refunds) opens it
  const openFromHash = () => {
    const target = window.location.hash && document.getElementById(window.location.hash.slice(1));
    const button = target && (target.matches(".faq-question") ? target : target.querySelector(".faq-question"));
    if (button && buttons.includes(button)) setOpen(button, true);
  };
  window.addEventListener("hashchange", openFromHash);
  openFromHash();
}
