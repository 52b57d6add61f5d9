// api.js — fetch helpers for sweetyd's JSON API (CONTRACT.md "HTTP API").
//
// request() never throws for an HTTP answer: it resolves to {ok, status, data, error}, where
// error is the contract's {code, field, message, …} object for a non-2xx answer (or a synthetic
// one when the body is not the expected JSON). It throws NetworkError only when no answer came
// (offline, DNS, connection reset, timeout).

export class NetworkError extends Error {
  constructor(cause) {
    super("Network error — check your connection and try again");
    this.name = "NetworkError";
    this.cause = cause;
  }
}

const DEFAULT_TIMEOUT_MS = 30000;

/**
 * @param {string} path  e.g. "/api/plans"
 * @param {{method?: string, json?: unknown, headers?: Record<string,string>, timeout?: number}} [options]
 * @returns {Promise<{ok: boolean, status: number, data: any, error: null | {code: string, field?: string, message?: string, [k: string]: unknown}}>}
 */
export async function request(path, { method = "GET", json, headers = {}, timeout = DEFAULT_TIMEOUT_MS } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin", cache: "no-store" };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = typeof json === "string" ? json : JSON.stringify(json);
  }
  const controller = typeof AbortController === "function" ? new AbortController() : null;
  let timer = 0;
  if (controller) {
    init.signal = controller.signal;
    timer = setTimeout(() => controller.abort(), timeout);
  }
  let response;
  let text;
  try {
    response = await fetch(path, init);
    text = await response.text();
  } catch (err) {
    throw new NetworkError(err);
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (response.ok) return { ok: true, status: response.status, data, error: null };
  return { ok: false, status: response.status, data, error: errorOf(response.status, data) };
}

/** The contract's error object of an answer, or a synthetic one when the body has none. */
export function errorOf(status, data) {
  const err = data && typeof data === "object" && data.error && typeof data.error === "object" ? data.error : null;
  if (err && typeof err.code === "string" && err.code) return err;
  return { code: `http_${status}`, field: "", message: "" };
}

/** A random v4 UUID; crypto.randomUUID needs a secure context, getRandomValues does not. */
export function uuid() {
  if (window.crypto && typeof window.crypto.randomUUID === "function") {
    try {
      return window.crypto.randomUUID();
    } catch {
      /* not a secure context: fall through */
    }
  }
  const b = new Uint8Array(16);
  window.crypto.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The booking id from ?booking=…, or null when absent or not an id. */
export function bookingIdFromQuery(search = window.location.search) {
  const id = new URLSearchParams(search).get("booking");
  return id && /^[A-Za-z0-9_-]{1,64}$/.test(id) ? id : null;
}

const TOKEN_PREFIX = "sweety-token:";
const PLAN_PREFIX = "sweety-plan:";

function readSession(key) {
  try {
    return window.sessionStorage.getItem(key);
  } catch {
    return null;
  }
}

/** Remembers a booking's status token and plan for this browser tab's session. */
export function storeBooking(bookingId, token, plan) {
  try {
    window.sessionStorage.setItem(TOKEN_PREFIX + bookingId, token);
    if (plan) window.sessionStorage.setItem(PLAN_PREFIX + bookingId, plan);
  } catch {
    /* storage disabled: the status pages will say so */
  }
}

export function tokenFor(bookingId) {
  return bookingId ? readSession(TOKEN_PREFIX + bookingId) : null;
}

export function planFor(bookingId) {
  return bookingId ? readSession(PLAN_PREFIX + bookingId) : null;
}
