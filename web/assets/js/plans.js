// plans.js — the pricing cards (#plans), built from GET /api/plans, and the plans as
// schema.org Offers (<script type="application/ld+json" id="ld-offers">).
//
// The page ships four placeholder cards of the real cards' size, so the section does not jump
// when the answer arrives; the real .plan-card[data-plan=KEY] elements replace them.

import { request } from "./api.js";
import { PLAN_KEYS } from "./validate.js";
import { decimalPrice, formatCallLength, formatPrice } from "./format.js";

/** What each plan is for, beyond its name, price and length. */
const PLAN_COPY = {
  free_trial: {
    badge: "",
    unit: "one call",
    features: ["A taste of a real conversation", "No card needed", "Once every 24 hours per number"],
  },
  standard: {
    badge: "",
    unit: "per call",
    features: ["A relaxed, unhurried chat", "Pay by card or crypto", "Refunded if we can't reach you"],
  },
  extended: {
    badge: "Most loved",
    unit: "per call",
    features: ["Room for a deeper talk", "Pay by card or crypto", "Refunded if we can't reach you"],
  },
  premium: {
    badge: "",
    unit: "per call",
    features: ["Our longest, most generous call", "Pay by card or crypto", "Refunded if we can't reach you"],
  },
};

/**
 * Fetches the plans. Resolves to the known plans in price order; rejects with an Error whose
 * `code` is the API's error code (or "network_error") when they cannot be had.
 */
export async function fetchPlans() {
  let res;
  try {
    res = await request("/api/plans", { timeout: 15000 });
  } catch (err) {
    throw Object.assign(new Error("network error"), { code: "network_error", cause: err });
  }
  const list = res.ok && res.data && Array.isArray(res.data.plans) ? res.data.plans : null;
  if (!list) throw Object.assign(new Error("plans unavailable"), { code: res.error ? res.error.code : "bad_answer" });
  const plans = list.filter(
    (p) =>
      p &&
      PLAN_KEYS.includes(p.key) &&
      typeof p.name === "string" &&
      Number.isFinite(p.price_cents) &&
      Number.isFinite(p.duration_seconds),
  );
  if (!plans.length) throw Object.assign(new Error("no plans"), { code: "no_plans" });
  return plans;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.filter(Boolean));
  return node;
}

/** One .plan-card for a plan. */
export function planCard(plan) {
  const copy = PLAN_COPY[plan.key] || { badge: "", unit: "per call", features: [] };
  const free = plan.price_cents <= 0;
  const nameId = `plan-${plan.key}-name`;
  const card = el("article", {
    class: `plan-card${copy.badge ? " is-featured" : ""}`,
    "data-plan": plan.key,
    "aria-labelledby": nameId,
  });
  if (copy.badge) card.append(el("span", { class: "plan-badge", text: copy.badge }));
  card.append(
    el("h3", { class: "plan-name", id: nameId, text: plan.name }),
    el(
      "p",
      { class: "plan-price" },
      el("span", { class: "plan-amount", text: formatPrice(plan.price_cents, plan.currency) }),
      el("small", { text: copy.unit }),
    ),
    el("p", { class: "plan-length", text: formatCallLength(plan.duration_seconds) }),
    el("ul", { class: "plan-features" }, ...copy.features.map((f) => el("li", { text: f }))),
    el("button", {
      type: "button",
      class: free ? "button button-secondary" : "button",
      "data-choose": plan.key,
      "aria-describedby": nameId,
      text: free ? "Try it free" : `Choose ${plan.name}`,
    }),
  );
  return card;
}

/** Replaces the placeholders (or earlier cards) in grid with the real cards. */
export function renderPlans(grid, plans) {
  grid.replaceChildren(...plans.map(planCard));
  grid.removeAttribute("aria-busy");
}

/** "Standard · $15" for the plan <select> (the line under it says the rest). */
export function planOptionLabel(plan) {
  return plan.price_cents > 0 ? `${plan.name} · ${formatPrice(plan.price_cents, plan.currency)}` : plan.name;
}

/** Updates the plan <select>'s options from the plans, keeping the selection. */
export function applyPlansToSelect(select, plans) {
  const selected = select.value;
  select.replaceChildren(...plans.map((p) => new Option(planOptionLabel(p), p.key)));
  const keys = plans.map((p) => p.key);
  select.value = keys.includes(selected) ? selected : keys.includes("free_trial") ? "free_trial" : keys[0];
}

/** The schema.org Service with one Offer per plan. */
export function offersJsonLd(plans, origin = window.location.origin) {
  return {
    "@context": "https://schema.org",
    "@type": "Service",
    name: "SweetyOnCall — a phone call with an AI voice companion",
    serviceType: "AI voice companion phone call",
    url: `${origin}/`,
    provider: { "@type": "Organization", name: "SweetyOnCall", url: `${origin}/` },
    areaServed: "Worldwide",
    offers: plans.map((p) => ({
      "@type": "Offer",
      name: p.name,
      description: `${formatCallLength(p.duration_seconds)} with an AI voice companion`,
      price: decimalPrice(p.price_cents),
      priceCurrency: String(p.currency || "usd").toUpperCase(),
      availability: "https://schema.org/InStock",
      url: `${origin}/?plan=${encodeURIComponent(p.key)}#book`,
    })),
  };
}

/** Adds (or replaces) <script type="application/ld+json" id="ld-offers"> in <head>. */
export function publishOffers(plans) {
  let script = document.getElementById("ld-offers");
  if (!script) {
    script = document.createElement("script");
    script.type = "application/ld+json";
    script.id = "ld-offers";
    document.head.append(script);
  }
  script.textContent = JSON.stringify(offersJsonLd(plans));
}
