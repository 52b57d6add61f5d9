// validate.js — the booking form's checks, mirroring what sweetyd enforces
// (CONTRACT.md "POST /api/bookings", realtime/booking_request.c), with the server's error codes
// and messages. Pure functions: no DOM, so they can be unit-tested in Node.

export const PLAN_KEYS = Object.freeze(["free_trial", "standard", "extended", "premium"]);
export const PAYMENT_METHODS = Object.freeze(["stripe", "cryptomus"]);
export const NAME_MAX = 100;
export const MESSAGE_MAX = 500;

export const MESSAGES = Object.freeze({
  invalid_name: "name must be 1 to 100 characters, without control characters",
  invalid_phone: "phone must be E.164, like +15551234567",
  invalid_email: "email must be a valid address, like ann@example.com",
  invalid_plan: "plan must be one of free_trial, standard, extended, premium",
  message_too_long: "message must be text of at most 500 characters",
  invalid_payment_method: "payment_method must be stripe or cryptomus",
});

const PHONE_RE = /^\+[1-9][0-9]{7,14}$/;
// C0, DEL and C1 control characters, as the server counts them
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;

/** Unicode code points in s (what the server counts as "characters"). */
export function charCount(s) {
  return [...String(s ?? "")].length;
}

/** The name as the server keeps it: without leading/trailing spaces (U+0020 only). */
export function normalizeName(s) {
  return String(s ?? "").replace(/^ +| +$/g, "");
}

/** The phone number without the spaces, dashes, dots and parentheses people type. */
export function normalizePhone(s) {
  return String(s ?? "").replace(/[\s\-.()]/g, "");
}

export function isValidName(s) {
  const name = normalizeName(s);
  const n = charCount(name);
  return n >= 1 && n <= NAME_MAX && !CONTROL_RE.test(name);
}

export function isValidPhone(s) {
  return PHONE_RE.test(normalizePhone(s));
}

const ATEXT_RE = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]$/;
const LABEL_RE = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** An address the server accepts: dot-atom local part @ a domain of at least two labels. */
export function isValidEmail(s) {
  const email = String(s ?? "");
  if (email.length < 3 || email.length > 254) return false;
  const at = email.indexOf("@");
  if (at < 1 || email.indexOf("@", at + 1) !== -1) return false;
  const local = email.slice(0, at);
  const domain = email.slice(at + 1);
  if (local.length > 64 || local.startsWith(".") || local.endsWith(".") || local.includes("..")) return false;
  for (const c of local) if (c !== "." && !ATEXT_RE.test(c)) return false;
  if (domain.length < 3 || domain.length > 253) return false;
  const labels = domain.split(".");
  return labels.length >= 2 && labels.every((l) => LABEL_RE.test(l));
}

export function isValidPlan(s) {
  return PLAN_KEYS.includes(s);
}

export function isPaidPlan(plan) {
  return plan !== "free_trial";
}

/**
 * Checks the form's raw values. Returns {errors, body}: errors is a list of
 * {field, code, message} in the form's order (empty when valid); body is the JSON request the
 * server expects, built from the normalised values (optional fields left out when empty).
 * @param {{name?: string, phone?: string, email?: string, plan?: string, message?: string, payment_method?: string}} values
 */
export function validateBooking(values) {
  const errors = [];
  const add = (field, code) => errors.push({ field, code, message: MESSAGES[code] });

  const name = normalizeName(values.name);
  const phone = normalizePhone(values.phone);
  const email = String(values.email ?? "").trim();
  const plan = String(values.plan ?? "");
  const message = String(values.message ?? "");
  const method = String(values.payment_method ?? "");

  if (!isValidName(name)) add("name", "invalid_name");
  if (!PHONE_RE.test(phone)) add("phone", "invalid_phone");
  if (email && !isValidEmail(email)) add("email", "invalid_email");
  if (!isValidPlan(plan)) add("plan", "invalid_plan");
  if (charCount(message) > MESSAGE_MAX) add("message", "message_too_long");
  if (isValidPlan(plan) && isPaidPlan(plan) && !PAYMENT_METHODS.includes(method))
    add("payment_method", "invalid_payment_method");

  const body = { name, phone };
  if (email) body.email = email;
  body.plan = plan;
  if (message.trim()) body.message = message;
  if (isPaidPlan(plan)) body.payment_method = method;
  return { errors, body };
}
