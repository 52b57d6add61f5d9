// The booking form's errors. The browser's own checks mirror the server's; to see that every
// error the server gives is shown on its field, each case lets the form pass its checks and then
// changes one field of the request on its way out (page.route → the real sweetyd answers 400).
// Then: a second free trial for the same phone shows the cooldown with the time left, a network
// failure shows a toast, and the button is disabled while a request is in flight.
import { assert, BASE, fillBookingForm, openHome, openPage, run, step, uniquePhone } from './lib.mjs';

const SERVER_CASES = [
  { field: 'name', code: 'invalid_name', change: { name: 'Ann\u0007' } },
  { field: 'phone', code: 'invalid_phone', change: { phone: '+0123' } },
  { field: 'email', code: 'invalid_email', change: { email: 'ann@' } },
  { field: 'plan', code: 'invalid_plan', change: { plan: 'gold' } },
  { field: 'message', code: 'message_too_long', change: { message: 'x'.repeat(501) } },
  { field: 'payment_method', code: 'invalid_payment_method', change: { payment_method: 'paypal' }, plan: 'standard' },
];

async function errorOf(page, field) {
  const el = page.locator(`#${field}-error`);
  await el.waitFor({ state: 'visible' });
  return { code: await el.getAttribute('data-code'), text: (await el.textContent()).trim() };
}

await run(async (browser) => {
  const { page } = await openPage(browser);
  await openHome(page);

  await step('the browser checks each field before sending', async () => {
    let posts = 0;
    page.on('request', (r) => { if (r.method() === 'POST' && r.url().endsWith('/api/bookings')) posts += 1; });
    await fillBookingForm(page, { name: 'Ann', phone: '12345', email: 'not-an-email', message: 'y'.repeat(501) });
    await page.locator('#submit').click();
    assert.equal((await errorOf(page, 'phone')).code, 'invalid_phone');
    assert.equal((await errorOf(page, 'email')).code, 'invalid_email');
    assert.equal((await errorOf(page, 'message')).code, 'message_too_long');
    assert.equal(await page.locator('#phone').getAttribute('aria-invalid'), 'true');
    assert.match(await page.locator('#phone').getAttribute('aria-describedby'), /phone-error/);
    assert.equal(await page.evaluate(() => document.activeElement && document.activeElement.id), 'phone');
    assert.equal(posts, 0, 'nothing was sent');
  });

  for (const c of SERVER_CASES) {
    await step(`the server's ${c.code} is shown on the ${c.field} field`, async () => {
      await openHome(page);
      await page.route('**/api/bookings', (route) => {
        const body = { ...JSON.parse(route.request().postData()), ...c.change };
        return route.continue({ postData: JSON.stringify(body) });
      });
      const answer = page.waitForResponse((r) => r.url() === `${BASE}/api/bookings`);
      await fillBookingForm(page, { phone: uniquePhone(), plan: c.plan || 'free_trial' });
      await page.locator('#submit').click();
      const res = await answer;
      assert.equal(res.status(), 400);
      const sent = (await res.json()).error;
      const shown = await errorOf(page, c.field);
      assert.equal(shown.code, c.code);
      assert.equal(sent.code, c.code);
      assert.ok(shown.text.length > 0);
      assert.equal(await page.locator('#submit').isDisabled(), false, 'the button is usable again');
      await page.unroute('**/api/bookings');
    });
  }

  const phone = uniquePhone();
  await step('a second free trial for the same phone shows the cooldown and the time left', async () => {
    await openHome(page);
    await fillBookingForm(page, { phone });
    await Promise.all([page.waitForURL(/\/waiting\?booking=/), page.locator('#submit').click()]);
    await openHome(page);
    await fillBookingForm(page, { phone });
    await page.locator('#submit').click();
    const err = page.locator('#form-error[data-code=free_trial_cooldown]');
    await err.waitFor();
    assert.match(await err.textContent(), /2[34] h|\d+ h \d+ min/);
    assert.equal(page.url(), `${BASE}/`);
  });

  await step('the button is disabled while the request is in flight', async () => {
    await openHome(page);
    let release;
    const held = new Promise((r) => { release = r; });
    await page.route('**/api/bookings', async (route) => { await held; await route.continue(); });
    await fillBookingForm(page, { phone: uniquePhone() });
    await page.locator('#submit').click();
    await page.locator('#submit:disabled').waitFor();
    release();
    await page.waitForURL(/\/waiting\?booking=/);
    await page.unroute('**/api/bookings');
  });

  await step('a network failure shows a toast and the form can be sent again', async () => {
    await openHome(page);
    await page.route('**/api/bookings', (route) => route.abort('internetdisconnected'));
    await fillBookingForm(page, { phone: uniquePhone() });
    await page.locator('#submit').click();
    await page.locator('#toasts .toast').first().waitFor();
    assert.match(await page.locator('#toasts').textContent(), /network/i);
    assert.equal(await page.locator('#submit').isDisabled(), false);
    await page.unroute('**/api/bookings');
  });

  await step('no script errors', async () => {
    // the aborted request of the last step is reported by Chromium itself
    const problems = page.problems.filter((p) => !/ERR_INTERNET_DISCONNECTED|Failed to load resource/.test(p));
    assert.deepEqual(problems, []);
  });
});
