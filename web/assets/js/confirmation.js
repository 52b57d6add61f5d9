// confirmation.js — /booking-confirmation?booking=ID, where Stripe's success_url and Cryptomus'
// url_success bring the visitor back after paying. It links to the waiting page (#to-waiting)
// and, with the status token this tab kept, shows the booking's current status
// (GET /api/bookings/{id}), looking again for a little while if the payment is not yet confirmed
// (the provider's webhook may arrive a moment after the visitor).

import { bookingIdFromQuery, NetworkError, request, tokenFor } from "./api.js";
import { initPage } from "./common.js";
import { isFinal, statusLabel } from "./status-text.js";

initPage();

const bookingId = bookingIdFromQuery();
const token = tokenFor(bookingId);
const link = document.getElementById("to-waiting");
const pill = document.getElementById("confirmation-status");
const note = document.getElementById("confirmation-note");

const POLL_MS = 3000;
const POLL_MAX = 10;

function say(text) {
  note.textContent = text;
  note.hidden = !text;
}

function show(status) {
  pill.dataset.status = status;
  pill.textContent = statusLabel(status);
  if (status === "pending_payment" || status === "pending") say("Waiting for the payment provider to confirm your payment…");
  else if (status === "payment_failed") say("Your payment did not go through. You can try again from the home page.");
  else if (status === "cancelled") say("This booking was cancelled. If any payment went through, it will be refunded in full.");
  else say("");
}

async function check(round) {
  let res;
  try {
    res = await request(`/api/bookings/${encodeURIComponent(bookingId)}`, {
      headers: { Authorization: `Bearer ${token}` },
      timeout: 10000,
    });
  } catch (err) {
    if (!(err instanceof NetworkError)) throw err;
    pill.textContent = "Unavailable";
    say("We couldn't check your booking right now — your status page will show it live.");
    return;
  }
  if (!res.ok || !res.data || typeof res.data.status !== "string") {
    pill.textContent = "Unavailable";
    say(
      res.status === 404
        ? "This status link has expired or belongs to another booking."
        : "We couldn't check your booking right now — your status page will show it live.",
    );
    return;
  }
  const status = res.data.status;
  show(status);
  const waiting = status === "pending_payment" || status === "pending";
  if (waiting && !isFinal(status) && round < POLL_MAX) setTimeout(() => check(round + 1), POLL_MS);
}

if (bookingId) {
  link.setAttribute("href", `/waiting?booking=${encodeURIComponent(bookingId)}`);
}

if (!bookingId) {
  pill.textContent = "Unknown";
  say("We couldn't find a booking reference in this link. If you just paid, your call is on its way.");
} else if (!token) {
  pill.textContent = "Not available in this browser";
  say("Open the status page in the browser you booked from to follow your call live.");
} else {
  check(0);
}
