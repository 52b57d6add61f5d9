// status-text.js — what each booking status means to the person waiting for the call
// (CONTRACT.md "Booking statuses"), and the path a booking goes through. Pure functions.

export const FINAL_STATUSES = Object.freeze(["completed", "failed", "cancelled", "payment_failed"]);
export const CANCELLABLE_STATUSES = Object.freeze(["pending_payment", "confirmed", "queued"]);
export const PAID_PATH = Object.freeze(["pending_payment", "confirmed", "queued", "initiating", "calling", "completed"]);
export const FREE_PATH = Object.freeze(["queued", "initiating", "calling", "completed"]);

/** Short names, for the timeline and the history. */
export const STATUS_LABELS = Object.freeze({
  pending: "Preparing checkout",
  pending_payment: "Awaiting payment",
  payment_failed: "Payment failed",
  confirmed: "Payment confirmed",
  queued: "In the queue",
  initiating: "Connecting",
  calling: "On the call",
  completed: "Call completed",
  failed: "Could not reach you",
  cancelled: "Cancelled",
});

/** Sentences for the live status line. */
export const STATUS_SENTENCES = Object.freeze({
  pending: "Preparing your checkout…",
  pending_payment: "Waiting for your payment to be confirmed",
  payment_failed: "Your payment did not go through",
  confirmed: "Payment confirmed — we're lining up your call",
  queued: "You're in the queue — an agent will call you shortly",
  initiating: "Connecting you to your companion…",
  calling: "Your phone is ringing — or you're already on the call",
  completed: "Call completed",
  failed: "We could not reach you",
  cancelled: "This booking was cancelled",
});

/** One more sentence of detail, depending on where the booking is. */
export const STATUS_DETAILS = Object.freeze({
  pending: "This only takes a moment.",
  pending_payment: "Finish the checkout in the payment window. This page updates by itself.",
  payment_failed: "No call will be placed for this booking.",
  confirmed: "Thank you! Your call goes into the queue next.",
  queued: "Keep your phone close and the ringer on. This page updates by itself.",
  initiating: "Your companion is being connected — your phone will ring in a moment.",
  calling: "Pick up and enjoy the conversation.",
  completed: "We hope you enjoyed the conversation.",
  failed: "We tried several times without reaching you.",
  cancelled: "No call will be placed for this booking.",
});

export function isFinal(status) {
  return FINAL_STATUSES.includes(status);
}

export function isCancellable(status) {
  return CANCELLABLE_STATUSES.includes(status);
}

export function statusLabel(status) {
  return STATUS_LABELS[status] || String(status || "Unknown").replace(/_/g, " ");
}

/**
 * The sentence for the latest status. `retries` is how many times the call went back to the
 * queue after an attempt, so that a retry reads differently from the first wait.
 */
export function statusSentence(status, { retries = 0 } = {}) {
  if (status === "queued" && retries > 0) return "We couldn't reach you — we'll try again shortly";
  return STATUS_SENTENCES[status] || "Checking your booking…";
}

export function statusDetail(status, { retries = 0 } = {}) {
  if (status === "queued" && retries > 0)
    return `Attempt ${retries + 1} is coming up. Keep your phone close and the ringer on.`;
  return STATUS_DETAILS[status] || "";
}

/**
 * Whether a booking is paid, from what we know: its stored plan when we have it, else its
 * first status (a paid booking starts at pending/pending_payment, a free trial at queued).
 */
export function isPaidBooking({ plan, firstStatus, statuses = [] } = {}) {
  if (plan) return plan !== "free_trial";
  if (firstStatus) return firstStatus === "pending_payment" || firstStatus === "pending";
  return statuses.some((s) => s === "pending" || s === "pending_payment" || s === "confirmed" || s === "payment_failed");
}

/**
 * The timeline for a booking: its path's steps, each {step, state} with state done | current |
 * upcoming (and skipped: true for steps a final failure never reached). `latest` is the latest
 * status, `reached` the set of statuses the booking has had. A non-completed final status takes
 * the last step's place, so the timeline ends where the booking did.
 */
export function timelineSteps(paid, latest, reached = new Set()) {
  const path = [...(paid ? PAID_PATH : FREE_PATH)];
  let current = latest === "pending" ? "pending_payment" : latest;
  const bad = isFinal(current) && current !== "completed";
  if (bad) path[path.length - 1] = current;
  const index = path.indexOf(current);
  return path.map((step, i) => {
    if (index < 0) return { step, state: "upcoming", skipped: false };
    if (i < index) {
      // on a failure, steps the booking never had were skipped rather than done
      const had = reached.has(step) || (step === "pending_payment" && reached.has("pending"));
      return bad && !had ? { step, state: "upcoming", skipped: true } : { step, state: "done", skipped: false };
    }
    if (i === index) return { step, state: "current", skipped: false };
    return { step, state: "upcoming", skipped: false };
  });
}
