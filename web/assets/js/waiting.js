// waiting.js — the waiting page (/waiting?booking=ID): the booking's status, live, over the
// WebSocket /ws (CONTRACT.md "WebSocket /ws").
//
// The status token comes from sessionStorage ("sweety-token:<id>"), put there by the booking form.
// The page subscribes with after_seq = the last seq it has shown (0 at first, so a reload replays
// the whole history) and ignores any frame whose seq it has already shown: each status appears
// once in #events, whatever the reconnections. A dropped connection is reopened with exponential
// backoff (0.5 s, 1 s, 2 s … 10 s) and at once when the browser comes back online; an
// unauthorized token (close 4401) or a malformed subscription (4400) ends it, and so does a final
// status.

import { bookingIdFromQuery, NetworkError, planFor, request, tokenFor } from "./api.js";
import { initPage } from "./common.js";
import { toast } from "./toast.js";
import { formatTime } from "./format.js";
import {
  isCancellable,
  isFinal,
  isPaidBooking,
  statusDetail,
  statusLabel,
  statusSentence,
  timelineSteps,
} from "./status-text.js";

initPage();

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 10000];

const $ = (id) => document.getElementById(id);
const els = {
  live: $("live"),
  noToken: $("no-token"),
  noTokenTitle: $("no-token-title"),
  noTokenText: $("no-token-text"),
  ref: $("booking-ref"),
  refId: $("booking-id"),
  connection: $("connection"),
  card: $("status-card"),
  status: $("status"),
  detail: $("status-detail"),
  cancelArea: $("cancel-area"),
  cancel: $("cancel"),
  final: $("final"),
  finalTitle: $("final-title"),
  finalText: $("final-text"),
  finalLink: $("final-link"),
  timeline: $("timeline"),
  events: $("events"),
  eventsEmpty: $("events-empty"),
};

const bookingId = bookingIdFromQuery();
const token = tokenFor(bookingId);
const storedPlan = planFor(bookingId);

const state = {
  lastSeq: 0,
  latest: null,
  firstStatus: null,
  reached: new Set(),
  retries: 0, // times the call went back to the queue after an attempt
  final: false,
  stopped: false,
  ws: null,
  attempt: 0,
  timer: 0,
};

// ---- connection indicator -------------------------------------------------------------------

const CONNECTION_TEXT = {
  connecting: "Connecting…",
  live: "Live updates on",
  reconnecting: "Connection lost — reconnecting…",
  closed: "Updates finished",
};

function setConnection(s, text) {
  els.connection.dataset.state = s;
  els.connection.textContent = text || CONNECTION_TEXT[s];
}

// ---- rendering ------------------------------------------------------------------------------

function paid() {
  return isPaidBooking({ plan: storedPlan, firstStatus: state.firstStatus, statuses: [...state.reached] });
}

function renderTimeline() {
  const steps = timelineSteps(paid(), state.latest, state.reached);
  const items = steps.map(({ step, state: s, skipped }) => {
    const li = document.createElement("li");
    li.dataset.step = step;
    li.className = s;
    if (skipped) li.classList.add("skipped");
    if (s === "current") {
      li.setAttribute("aria-current", "step");
      if (isFinal(step) && step !== "completed") li.classList.add("is-bad");
    }
    const label = document.createElement("span");
    label.className = "timeline-label";
    label.textContent = statusLabel(step);
    li.append(label);
    if (s === "current" && step === "queued" && state.retries > 0) {
      const note = document.createElement("span");
      note.className = "timeline-note";
      note.textContent = `Trying again: attempt ${state.retries + 1}`;
      li.append(note);
    }
    const sr = document.createElement("span");
    sr.className = "visually-hidden";
    sr.textContent = s === "done" ? " (done)" : s === "current" ? " (current step)" : skipped ? " (skipped)" : " (to come)";
    li.append(sr);
    return li;
  });
  els.timeline.replaceChildren(...items);
}

function renderStatus() {
  const s = state.latest;
  if (!s) return;
  els.status.dataset.status = s;
  els.card.dataset.status = s;
  els.status.textContent = statusSentence(s, { retries: state.retries });
  els.detail.textContent = statusDetail(s, { retries: state.retries });
  const cancellable = !state.final && isCancellable(s);
  els.cancel.hidden = !cancellable;
  els.cancelArea.hidden = !cancellable;
}

function paragraph(text) {
  const p = document.createElement("p");
  p.textContent = text;
  return p;
}

function renderFinal() {
  const s = state.latest;
  if (!isFinal(s)) return;
  const isPaid = paid();
  const paidMoney = state.reached.has("confirmed");
  const parts = [];
  let title;
  let link = { href: "/#book", text: "Book another call" };
  if (s === "completed") {
    title = "Thank you for calling";
    parts.push("Your call is over. Sweety is here whenever you would like to talk again.");
  } else if (s === "failed") {
    title = "We couldn't reach you";
    parts.push("We could not reach you after several attempts.");
    if (isPaid) parts.push("Your payment will be refunded in full.");
    link = { href: "/#book", text: "Book again" };
  } else if (s === "cancelled") {
    title = "Booking cancelled";
    parts.push("This booking was cancelled, so no call will be placed.");
    if (isPaid)
      parts.push(
        paidMoney
          ? "Your payment will be refunded in full."
          : "If any payment went through, it will be refunded in full.",
      );
    link = { href: "/#book", text: "Book a new call" };
  } else if (s === "payment_failed") {
    title = "Payment not completed";
    parts.push("Your payment did not go through, so no call will be placed. If you were charged anyway, the amount will be refunded in full.");
    link = { href: "/#book", text: "Try again" };
  }
  els.final.dataset.final = s;
  els.finalTitle.textContent = title;
  els.finalText.replaceChildren(...parts.map(paragraph));
  els.finalLink.href = link.href;
  els.finalLink.textContent = link.text;
  els.final.hidden = false;
}

function addEvent(frame) {
  const li = document.createElement("li");
  li.dataset.seq = String(frame.seq);
  li.dataset.status = frame.status;
  const label = document.createElement("span");
  label.textContent = statusLabel(frame.status);
  li.append(label);
  const when = formatTime(frame.at);
  if (when) {
    const time = document.createElement("time");
    time.dateTime = frame.at;
    time.textContent = when;
    li.append(time);
  }
  els.events.append(li);
  els.eventsEmpty.hidden = true;
}

// ---- frames ---------------------------------------------------------------------------------

function onStatus(frame) {
  const seq = Number(frame.seq);
  if (!Number.isInteger(seq) || seq <= state.lastSeq || typeof frame.status !== "string") return;
  if (frame.booking_id && frame.booking_id !== bookingId) return;
  // a seq already shown is never shown again (the DOM is the record, reloads included)
  if (els.events.querySelector(`li[data-seq="${seq}"]`)) return;
  state.lastSeq = seq;
  if (seq === 1) state.firstStatus = frame.status;
  const previous = state.latest;
  if (frame.status === "queued" && (previous === "initiating" || previous === "calling")) state.retries += 1;
  state.latest = frame.status;
  state.reached.add(frame.status);
  addEvent(frame);
  renderStatus();
  renderTimeline();
  if (isFinal(frame.status)) {
    state.final = true;
    renderFinal();
    stop("closed", "Updates finished");
  }
}

function showGone(reason) {
  els.noToken.dataset.reason = reason;
  if (reason === "expired") {
    els.noTokenTitle.textContent = "This status link has expired";
    els.noTokenText.textContent =
      "This status link has expired, so we can't show this booking any more. If you are still waiting for a call, it will still come.";
  }
  els.noToken.hidden = false;
  els.live.hidden = true;
}

function stop(connectionState, text) {
  state.stopped = true;
  clearTimeout(state.timer);
  const ws = state.ws;
  state.ws = null;
  if (ws && ws.readyState <= WebSocket.OPEN) {
    try {
      ws.close(1000, "done");
    } catch {
      /* already closing */
    }
  }
  setConnection(connectionState, text);
}

// ---- the socket -----------------------------------------------------------------------------

function socketUrl() {
  return (window.location.protocol === "https:" ? "wss:" : "ws:") + "//" + window.location.host + "/ws";
}

function scheduleReconnect() {
  if (state.stopped) return;
  clearTimeout(state.timer);
  const delay = BACKOFF_MS[Math.min(state.attempt, BACKOFF_MS.length - 1)];
  state.attempt += 1;
  setConnection("reconnecting");
  state.timer = setTimeout(connect, delay);
}

function connect() {
  if (state.stopped) return;
  clearTimeout(state.timer);
  if (state.ws) return;
  setConnection(state.attempt === 0 && state.lastSeq === 0 ? "connecting" : "reconnecting");
  let ws;
  try {
    ws = new WebSocket(socketUrl());
  } catch {
    scheduleReconnect();
    return;
  }
  state.ws = ws;

  ws.addEventListener("open", () => {
    if (state.ws !== ws) return;
    ws.send(JSON.stringify({ type: "subscribe", booking_id: bookingId, token, after_seq: state.lastSeq }));
  });

  ws.addEventListener("message", (event) => {
    if (state.ws !== ws) return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    if (frame.type === "subscribed") {
      state.attempt = 0;
      setConnection("live");
    } else if (frame.type === "status") {
      onStatus(frame);
    } else if (frame.type === "error") {
      if (frame.code === "unauthorized") {
        stop("closed", "Not connected");
        showGone("expired");
      } else if (frame.code === "bad_request") {
        stop("closed", "Live updates unavailable — reload the page to try again");
      }
    }
  });

  // errors are always followed by close, which decides what happens next
  ws.addEventListener("close", (event) => {
    if (state.ws !== ws) return;
    state.ws = null;
    if (state.stopped) return;
    if (event.code === 4401) {
      stop("closed", "Not connected");
      showGone("expired");
    } else if (event.code === 4400) {
      stop("closed", "Live updates unavailable — reload the page to try again");
    } else {
      scheduleReconnect();
    }
  });
}

window.addEventListener("online", () => {
  if (state.stopped || state.ws) return;
  state.attempt = 0;
  connect();
});

window.addEventListener("offline", () => {
  if (!state.stopped) setConnection("reconnecting", "You are offline — waiting for the network…");
});

// ---- cancelling -----------------------------------------------------------------------------

const REFUND_TEXT = {
  none: "Your booking has been cancelled.",
  pending: "Your booking has been cancelled; your refund is on its way.",
  succeeded: "Your booking has been cancelled and your payment refunded.",
  required: "Your booking has been cancelled; we will refund your payment by hand shortly.",
};

els.cancel.addEventListener("click", async () => {
  if (els.cancel.disabled) return;
  els.cancel.disabled = true;
  els.cancel.textContent = "Cancelling…";
  let res;
  try {
    res = await request(`/api/bookings/${encodeURIComponent(bookingId)}/cancel`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}` },
    });
  } catch (err) {
    if (!(err instanceof NetworkError)) throw err;
    toast("Network error — check your connection and try again", { kind: "error" });
    res = null;
  } finally {
    els.cancel.disabled = false;
    els.cancel.textContent = "Cancel booking";
  }
  if (!res) return;
  if (res.ok) {
    toast(REFUND_TEXT[res.data && res.data.refund] || REFUND_TEXT.none, { kind: "success" });
    // the cancelled status itself arrives over the socket; hide the button meanwhile
    els.cancel.hidden = true;
    els.cancelArea.hidden = true;
  } else if (res.error.code === "too_late") {
    toast("Too late to cancel — your call is starting", { kind: "warning" });
  } else if (res.status === 404) {
    toast("This status link has expired, so the booking cannot be cancelled here.", { kind: "error" });
  } else {
    toast("We couldn't cancel right now. Please try again in a moment.", { kind: "error" });
  }
});

// ---- start ----------------------------------------------------------------------------------

if (bookingId) {
  els.ref.hidden = false;
  els.refId.textContent = bookingId;
}

if (!bookingId || !token) {
  setConnection("closed", "Not connected");
  showGone("missing");
} else {
  renderTimeline();
  connect();
}
