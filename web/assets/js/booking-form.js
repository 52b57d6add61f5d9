// booking-form.js — form#booking-form: our own checks (validate.js), POST /api/bookings with an
// Idempotency-Key, and what each answer means (CONTRACT.md "POST /api/bookings").
//
// Errors: each field has #<field>-error, empty and hidden until there is something to say; then
// it holds the message and data-code="<server code>", and the field gets aria-invalid="true" and
// the error id in aria-describedby. Errors that belong to no field go to #form-error
// (role="alert"). Focus moves to the first invalid field.
//
// Idempotency: one key per form content. A retry of the same content (after a network failure,
// 409 idempotency_in_progress, 429 or a 5xx that stored nothing) reuses the key, so a booking is
// never made twice; an answer that settles the request (a field error, the free-trial cooldown,
// 502, 422) forgets it, because the server would replay that same answer for 24 hours.

import { NetworkError, request, storeBooking, uuid } from "./api.js";
import { charCount, isPaidPlan, MESSAGE_MAX, MESSAGES, validateBooking } from "./validate.js";
import { formatWait } from "./format.js";
import { toast } from "./toast.js";
import { scrollBehavior } from "./common.js";

export const FIELDS = ["name", "phone", "email", "plan", "message", "payment_method"];
export const NETWORK_MESSAGE = "Network error — check your connection and try again";

const FORM_MESSAGES = {
  invalid_json: "Something went wrong while sending your booking. Please reload the page and try again.",
  invalid_scheduled_for: "The requested time is not available. Please try again.",
  idempotency_in_progress: "Your booking is still being processed — please wait a few seconds and try again.",
  idempotency_key_reused: "Your details changed while the booking was being sent. Please press the button again.",
  too_large: "Your booking is too long to send. Please shorten your message and try again.",
  unsupported_media_type: "Your browser sent the booking in a form we could not read. Please reload the page and try again.",
  rate_limited: "Too many booking attempts from your connection. Please wait a minute and try again.",
  provider_unavailable:
    "We could not reach the payment provider, so nothing was charged. Please try again in a few minutes or choose another payment method.",
  unavailable: "Booking is briefly unavailable while we fix something on our side. Please try again in a minute.",
};

/** Answers after which the same request may be sent again with the same key. */
function keepsKey(status, code) {
  return status === 429 || status === 500 || status === 503 || status === 504 || code === "idempotency_in_progress";
}

/** The sentence for 409 free_trial_cooldown. */
export function cooldownMessage(retryAfterS) {
  const when = Number.isFinite(retryAfterS) ? `in ${formatWait(retryAfterS)}` : "tomorrow";
  return `This number has already had its free trial in the last 24 hours. You can book the free trial again ${when} — or choose a paid plan to talk now.`;
}

/** A message for an error that belongs to no field. */
export function formErrorMessage(status, error) {
  if (error.code === "free_trial_cooldown") return cooldownMessage(Number(error.retry_after_s));
  if (FORM_MESSAGES[error.code]) return FORM_MESSAGES[error.code];
  if (status === 413) return FORM_MESSAGES.too_large;
  if (status === 415) return FORM_MESSAGES.unsupported_media_type;
  if (status === 429) return FORM_MESSAGES.rate_limited;
  if (status >= 500) return `Something went wrong on our side (error ${status}). Please try again in a minute.`;
  return error.message || `Your booking could not be made (error ${status}). Please try again.`;
}

/** The server's messages start in lower case ("phone must be E.164, …"); a sentence does not. */
function sentence(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function safeUrl(url) {
  try {
    const u = new URL(url, window.location.href);
    return u.protocol === "https:" || u.protocol === "http:" ? u.href : null;
  } catch {
    return null;
  }
}

/**
 * Wires the booking form.
 * @param {HTMLFormElement} form
 * @param {{onPlanChange?: (plan: string) => void, navigate?: (url: string) => void}} [hooks]
 * @returns {{selectPlan: (key: string) => void, refreshPlan: () => void}}
 */
export function initBookingForm(form, { onPlanChange = () => {}, navigate = (url) => window.location.assign(url) } = {}) {
  const $ = (id) => form.querySelector(`#${id}`);
  const controls = { name: $("name"), phone: $("phone"), email: $("email"), plan: $("plan"), message: $("message") };
  const payment = $("payment-method");
  const radios = [...form.querySelectorAll('input[name="payment_method"]')];
  const submit = $("submit");
  const submitLabel = submit.querySelector(".submit-label") || submit;
  const spinner = submit.querySelector(".spinner");
  const formError = $("form-error");
  const counter = $("message-count");

  let idem = { key: null, body: null };
  let busy = false;

  const controlsOf = (field) => (field === "payment_method" ? radios : controls[field] ? [controls[field]] : []);
  const errorEl = (field) => $(`${field}-error`);

  function describedBy(control, errorId, on) {
    const ids = (control.getAttribute("aria-describedby") || "").split(/\s+/).filter((x) => x && x !== errorId);
    if (on) ids.push(errorId);
    if (ids.length) control.setAttribute("aria-describedby", ids.join(" "));
    else control.removeAttribute("aria-describedby");
  }

  function showError(field, code, message) {
    const el = errorEl(field);
    if (!el) return showFormError(code, message);
    el.textContent = sentence(message || MESSAGES[code] || "Please check this field.");
    el.dataset.code = code;
    el.hidden = false;
    for (const c of controlsOf(field)) {
      c.setAttribute("aria-invalid", "true");
      describedBy(c, el.id, true);
    }
    if (field === "payment_method") describedBy(payment, el.id, true);
  }

  function clearError(field) {
    const el = errorEl(field);
    if (!el) return;
    el.textContent = "";
    delete el.dataset.code;
    el.hidden = true;
    for (const c of controlsOf(field)) {
      c.removeAttribute("aria-invalid");
      describedBy(c, el.id, false);
    }
    if (field === "payment_method") describedBy(payment, el.id, false);
  }

  function showFormError(code, message) {
    formError.textContent = message;
    formError.dataset.code = code;
    formError.hidden = false;
  }

  function clearFormError() {
    formError.textContent = "";
    delete formError.dataset.code;
    formError.hidden = true;
  }

  function hasError(field) {
    const el = errorEl(field);
    return el && !el.hidden;
  }

  function focusField(field) {
    const list = controlsOf(field);
    const target = field === "payment_method" ? list.find((r) => r.checked) || list[0] : list[0];
    if (target) target.focus();
  }

  function values() {
    const checked = radios.find((r) => r.checked);
    return {
      name: controls.name.value,
      phone: controls.phone.value,
      email: controls.email.value,
      plan: controls.plan.value,
      message: controls.message.value,
      payment_method: checked ? checked.value : "",
    };
  }

  function updateCounter() {
    const n = charCount(controls.message.value);
    counter.textContent = `${n}/${MESSAGE_MAX}`;
    counter.classList.toggle("is-over", n > MESSAGE_MAX);
  }

  function setBusy(on) {
    busy = on;
    submit.disabled = on;
    form.setAttribute("aria-busy", String(on));
    if (spinner) spinner.hidden = !on;
    submitLabel.textContent = on ? "Booking…" : idleLabel();
  }

  function idleLabel() {
    return isPaidPlan(controls.plan.value) ? "Continue to payment" : "Book my free call";
  }

  function refreshPlan() {
    const plan = controls.plan.value;
    const paid = isPaidPlan(plan);
    payment.hidden = !paid;
    if (!paid) clearError("payment_method");
    if (!busy) submitLabel.textContent = idleLabel();
    onPlanChange(plan);
  }

  function selectPlan(key) {
    if (![...controls.plan.options].some((o) => o.value === key)) return;
    controls.plan.value = key;
    clearError("plan");
    refreshPlan();
  }

  // A field whose error the visitor has fixed loses it as they type; new errors wait for submit.
  function recheck(field) {
    if (!hasError(field)) return;
    const { errors } = validateBooking(values());
    if (!errors.some((e) => e.field === field)) clearError(field);
  }

  for (const field of ["name", "phone", "email", "message"]) controls[field].addEventListener("input", () => recheck(field));
  controls.message.addEventListener("input", updateCounter);
  controls.plan.addEventListener("change", () => {
    recheck("plan");
    refreshPlan();
  });
  for (const r of radios) r.addEventListener("change", () => recheck("payment_method"));

  async function onSubmit(event) {
    event.preventDefault();
    if (busy) return;
    clearFormError();
    for (const f of FIELDS) clearError(f);

    const { errors, body } = validateBooking(values());
    if (errors.length) {
      for (const e of errors) showError(e.field, e.code, e.message);
      focusField(errors[0].field);
      return;
    }

    const json = JSON.stringify(body);
    if (idem.body !== json || !idem.key) idem = { key: uuid(), body: json };

    setBusy(true);
    let res;
    try {
      res = await request("/api/bookings", { method: "POST", json, headers: { "Idempotency-Key": idem.key } });
    } catch (err) {
      setBusy(false);
      if (err instanceof NetworkError) toast(NETWORK_MESSAGE, { kind: "error" });
      else throw err;
      return;
    }

    const data = res.data || {};
    if (res.ok && typeof data.booking_id === "string" && typeof data.status_token === "string") {
      storeBooking(data.booking_id, data.status_token, body.plan);
      const target = isPaidPlan(body.plan)
        ? safeUrl(data.checkout_url)
        : `/waiting?booking=${encodeURIComponent(data.booking_id)}`;
      if (target) {
        submitLabel.textContent = isPaidPlan(body.plan) ? "Opening checkout…" : "Booking…";
        navigate(target);
        return; // stay busy: the page is going away
      }
      setBusy(false);
      idem = { key: null, body: null };
      showFormError("no_checkout_url", "Your booking was made but the payment page did not open. Please try again.");
      return;
    }

    setBusy(false);
    const error = res.ok ? { code: "bad_answer", field: "", message: "" } : res.error;
    if (!keepsKey(res.status, error.code)) idem = { key: null, body: null };

    if (res.status === 400 && error.field && FIELDS.includes(error.field) && errorEl(error.field)) {
      showError(error.field, error.code, error.message || MESSAGES[error.code]);
      focusField(error.field);
      return;
    }
    showFormError(error.code, formErrorMessage(res.status, error));
    formError.scrollIntoView({ block: "nearest", behavior: scrollBehavior() });
  }

  form.addEventListener("submit", (event) => {
    onSubmit(event).catch((err) => {
      setBusy(false);
      console.error(err);
      showFormError("client_error", "Something went wrong in this page. Please reload and try again.");
    });
  });

  updateCounter();
  refreshPlan();
  return { selectPlan, refreshPlan };
}
