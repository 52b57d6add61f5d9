// tests/browser/lib.mjs — what the browser tests share: launching Debian's Chromium through
// playwright-core, a page that records every request it makes, steps that report as they go, the
// sandbox's control API, and the booking form and waiting page as a person uses them.
//
// Run by browser_stack (tests/browser/browser_stack.c), which starts the stack and sets
// SWEETY_BASE_URL, SWEETY_SANDBOX_URL, SWEETY_SHOTS_DIR and SWEETY_CHROMIUM.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const BASE = process.env.SWEETY_BASE_URL;
export const SANDBOX = process.env.SWEETY_SANDBOX_URL;
export const SHOTS = process.env.SWEETY_SHOTS_DIR || 'browser-output';
const CHROMIUM = process.env.SWEETY_CHROMIUM || '/usr/bin/chromium';

if (!BASE || !SANDBOX) {
  console.error('run me through browser_stack (SWEETY_BASE_URL and SWEETY_SANDBOX_URL are not set)');
  process.exit(2);
}
mkdirSync(SHOTS, { recursive: true });

// The flags this machine needs: no sandbox as root, and no background traffic to Google's hosts
// (the network is closed; without them Chromium keeps trying).
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export const PHONE_SIZE = { width: 375, height: 812 };
export const DESKTOP_SIZE = { width: 1440, height: 900 };

export async function launch() {
  return chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true, timeout: 60000 });
}

// A new context and page. Every request the page makes is kept in page.requests (URLs), every
// console error and page error in page.problems (a CSP violation is one), so tests can assert
// that nothing left our origin and nothing broke.
export async function openPage(browser, { viewport = DESKTOP_SIZE, colorScheme = 'light' } = {}) {
  const context = await browser.newContext({ viewport, colorScheme, locale: 'en-US', timezoneId: 'UTC' });
  const page = await context.newPage();
  page.requests = [];
  page.problems = [];
  page.failures = [];   // "STATUS URL" of every answer ≥ 400
  page.on('request', (req) => page.requests.push(req.url()));
  page.on('response', (res) => { if (res.status() >= 400) page.failures.push(`${res.status()} ${res.url()}`); });
  page.on('console', (msg) => { if (msg.type() === 'error') page.problems.push(`console: ${msg.text()}`); });
  page.on('pageerror', (err) => page.problems.push(`pageerror: ${err.message}`));
  page.setDefaultTimeout(20000);
  return { context, page };
}

// Requests that went anywhere but our origin (the sandbox's checkout page is another origin on
// purpose; callers pass the ones they expect in `allowed`).
export function foreignRequests(page, allowed = []) {
  const ours = new URL(BASE).origin;
  return page.requests.filter((u) => {
    if (u.startsWith('data:') || u.startsWith('blob:') || u === 'about:blank') return false;
    const origin = new URL(u).origin.replace(/^ws/, 'http');
    return origin !== ours && !allowed.includes(origin);
  });
}

let failed = false;

// Runs one named step; a failure is reported with its message and ends the script with status 1
// after the remaining clean-up in `finally` blocks.
export async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok - ${name} (${Date.now() - t0} ms)`);
  } catch (err) {
    failed = true;
    console.log(`not ok - ${name}\n  ${String(err && err.stack ? err.stack : err).replace(/\n/g, '\n  ')}`);
    if (err && typeof err === 'object') err.reported = true;
    throw err;
  }
}

// Runs main(browser) and exits 0 only when every step passed.
export async function run(main) {
  const browser = await launch();
  try {
    await main(browser);
  } catch (err) {
    failed = true;
    if (!(err && err.reported)) console.log(`not ok - ${err && err.stack ? err.stack : err}`);
  } finally {
    await browser.close();
  }
  console.log(failed ? '# FAILED' : '# all steps passed');
  process.exit(failed ? 1 : 0);
}

export async function shot(page, name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  return file;
}

// ---- the sandbox ----------------------------------------------------------------------------

export async function sandbox(method, pathAndQuery, body) {
  const res = await fetch(SANDBOX + pathAndQuery, {
    method,
    headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  return { status: res.status, json, text };
}

// The VAPI outcomes the sandbox plays for calls to this number, in order (e.g. ['answer:8']).
export async function scriptCalls(phone, outcomes) {
  const r = await sandbox('POST', '/_sandbox/vapi/script', { number: phone, outcomes });
  assert.equal(r.status, 200, `sandbox script: ${r.text}`);
}

// ---- people and pages -----------------------------------------------------------------------

let phoneCounter = 0;
// A phone number no other test of this run uses (each run has its own database anyway).
export function uniquePhone() {
  phoneCounter += 1;
  const tail = String((process.pid * 100 + phoneCounter) % 10000000).padStart(7, '0');
  return `+1555${tail}`;
}

export async function fillBookingForm(page, { name = 'Ann Example', phone, email = 'ann@example.com', plan = 'free_trial',
  message = '', method = 'stripe' } = {}) {
  await page.locator('#name').fill(name);
  await page.locator('#phone').fill(phone);
  await page.locator('#email').fill(email);
  await page.locator('#plan').selectOption(plan);
  if (message) await page.locator('#message').fill(message);
  if (plan !== 'free_trial') await page.locator(`input[name=payment_method][value=${method}]`).check();
}

export async function openHome(page) {
  const res = await page.goto(BASE + '/', { waitUntil: 'load' });
  assert.equal(res.status(), 200);
  await page.locator('.plan-card[data-plan=premium] [data-choose=premium]').waitFor();
}

// The waiting page's history: [{seq, status}] in page order.
export async function historyOf(page) {
  return page.locator('#events li[data-seq]').evaluateAll((items) =>
    items.map((li) => ({ seq: Number(li.dataset.seq), status: li.dataset.status })));
}

export async function waitForStatus(page, status, timeout = 60000) {
  await page.locator(`#status[data-status="${status}"]`).waitFor({ timeout });
}

// Asserts the history is exactly the statuses given, with seq 1, 2, 3 … and no repeats.
export async function assertHistory(page, statuses) {
  const h = await historyOf(page);
  assert.deepEqual(h.map((e) => e.status), statuses, `history ${JSON.stringify(h)}`);
  assert.deepEqual(h.map((e) => e.seq), statuses.map((_, i) => i + 1), `sequence numbers ${JSON.stringify(h)}`);
}

export function bookingIdOf(page) {
  return new URL(page.url()).searchParams.get('booking');
}

export { assert };
