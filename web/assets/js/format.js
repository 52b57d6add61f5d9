// format.js — prices, call lengths and waiting times as people read them. Pure functions.

const LOCALE = "en";

/** Whole-unit prices without decimals ("$15"), others with ("$9.99"); 0 → "Free". */
export function formatPrice(cents, currency) {
  if (!Number.isFinite(cents) || cents <= 0) return "Free";
  const code = String(currency || "usd").toUpperCase();
  const whole = cents % 100 === 0;
  try {
    return new Intl.NumberFormat(LOCALE, {
      style: "currency",
      currency: code,
      minimumFractionDigits: whole ? 0 : 2,
      maximumFractionDigits: whole ? 0 : 2,
    }).format(cents / 100);
  } catch {
    return `${(cents / 100).toFixed(2)} ${code}`;
  }
}

/** The price as schema.org wants it: a decimal string ("15.00"). */
export function decimalPrice(cents) {
  return (Math.max(0, Number(cents) || 0) / 100).toFixed(2);
}

/** "2 minutes", "10 minutes", "45 seconds". */
export function formatLength(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  if (s < 60) return `${s} seconds`;
  const m = Math.round(s / 60);
  return m === 1 ? "1 minute" : `${m} minutes`;
}

/** "2-minute call". */
export function formatCallLength(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  if (s < 60) return `${s}-second call`;
  return `${Math.round(s / 60)}-minute call`;
}

/** A wait as "23 h 59 min", "5 h", "12 min" or "less than a minute". */
export function formatWait(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  if (s < 60) return "less than a minute";
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return m ? `${h} h ${m} min` : `${h} h`;
}

/** A local time for an RFC3339 instant: "14:05:09", with the date when it is not today. */
export function formatTime(iso, now = new Date()) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const sameDay = d.toDateString() === now.toDateString();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (sameDay) return time;
  return `${d.toLocaleDateString([], { month: "short", day: "numeric" })}, ${time}`;
}
