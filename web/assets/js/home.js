// home.js — the home page (/): plans, booking form, FAQ, and the links between them.

import { initPage, scrollBehavior } from "./common.js";
import { applyPlansToSelect, fetchPlans, publishOffers, renderPlans } from "./plans.js";
import { initBookingForm } from "./booking-form.js";
import { initFaq } from "./faq.js";
import { toast } from "./toast.js";
import { formatCallLength, formatPrice } from "./format.js";
import { PLAN_KEYS } from "./validate.js";

initPage();
initFaq(document.getElementById("faq"));

const grid = document.getElementById("plans-grid");
const plansError = document.getElementById("plans-error");
const plansRetry = document.getElementById("plans-retry");
const summary = document.getElementById("plan-summary");
const form = document.getElementById("booking-form");
const planSelect = document.getElementById("plan");
const placeholders = grid ? [...grid.children].map((c) => c.cloneNode(true)) : [];

let plans = [];

function describePlan(key) {
  const p = plans.find((x) => x.key === key);
  if (!p) return "";
  if (p.price_cents <= 0) return `${p.name}: a ${formatCallLength(p.duration_seconds)}, free once every 24 hours per number.`;
  return `${p.name}: a ${formatCallLength(p.duration_seconds)} for ${formatPrice(p.price_cents, p.currency)}, by card or crypto.`;
}

function onPlanChange(key) {
  if (summary) summary.textContent = describePlan(key);
  for (const card of document.querySelectorAll(".plan-card[data-plan]")) {
    card.classList.toggle("is-selected", card.dataset.plan === key);
  }
}

const booking = initBookingForm(form, { onPlanChange });

// ?plan=standard (the Offers' URLs) preselects a plan
const wanted = new URLSearchParams(window.location.search).get("plan");
if (wanted && PLAN_KEYS.includes(wanted)) booking.selectPlan(wanted);

// "Choose …" on a card: select the plan, then bring the form into view and focus its first field
document.getElementById("plans").addEventListener("click", (event) => {
  const button = event.target.closest("[data-choose]");
  if (!button) return;
  booking.selectPlan(button.dataset.choose);
  document.getElementById("book").scrollIntoView({ behavior: scrollBehavior(), block: "start" });
  document.getElementById("name").focus({ preventScroll: true });
});

async function loadPlans() {
  plansError.hidden = true;
  grid.hidden = false;
  grid.setAttribute("aria-busy", "true");
  try {
    plans = await fetchPlans();
  } catch (err) {
    grid.hidden = true;
    grid.removeAttribute("aria-busy");
    plansError.hidden = false;
    plansError.dataset.code = err.code || "error";
    toast("We couldn't load the plans. Please try again in a moment.", { kind: "error" });
    return;
  }
  renderPlans(grid, plans);
  applyPlansToSelect(planSelect, plans);
  booking.refreshPlan();
  publishOffers(plans);
}

plansRetry.addEventListener("click", () => {
  grid.replaceChildren(...placeholders.map((c) => c.cloneNode(true)));
  loadPlans();
});

loadPlans();
