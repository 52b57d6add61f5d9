// A free trial as a person books it: home page → form → waiting page, where the call plays out
// live (queued → initiating → calling → completed) as the sandbox's VAPI rings and hangs up.
// Also: nothing is fetched from any other origin (fonts included), no console or CSP errors, and
// screenshots of the home and waiting pages at phone and desktop sizes.
import {
  assert, assertHistory, BASE, DESKTOP_SIZE, fillBookingForm, foreignRequests, openHome, openPage, PHONE_SIZE,
  run, shot, step, uniquePhone, waitForStatus,
} from './lib.mjs';

await run(async (browser) => {
  const { page } = await openPage(browser, { viewport: DESKTOP_SIZE });
  const phone = uniquePhone();

  await step('home page renders the plans from /api/plans', async () => {
    await openHome(page);
    const plans = await page.locator('.plan-card[data-plan]').evaluateAll((cards) => cards.map((c) => c.dataset.plan));
    assert.deepEqual(plans, ['free_trial', 'standard', 'extended', 'premium']);
    await page.evaluate(() => document.fonts.ready);
    await shot(page, 'home-1440x900');
  });

  await step('home page at 375x812', async () => {
    const small = await openPage(browser, { viewport: PHONE_SIZE });
    await openHome(small.page);
    await small.page.evaluate(() => document.fonts.ready);
    await shot(small.page, 'home-375x812');
    assert.deepEqual(foreignRequests(small.page), []);
    await small.context.close();
  });

  await step('booking a free trial leads to the waiting page', async () => {
    await fillBookingForm(page, { phone, plan: 'free_trial' });
    assert.equal(await page.locator('#payment-method').isHidden(), true, 'no payment method for a free trial');
    await Promise.all([page.waitForURL(/\/waiting\?booking=[0-9a-f-]{36}$/), page.locator('#submit').click()]);
    const status = page.locator('#status');
    assert.equal(await status.getAttribute('aria-live'), 'polite');
  });

  await step('the waiting page shows queued → initiating → calling → completed', async () => {
    await waitForStatus(page, 'completed');
    await assertHistory(page, ['queued', 'initiating', 'calling', 'completed']);
    await page.locator('#final[data-final=completed]').waitFor();
    const steps = await page.locator('#timeline li[data-step]').evaluateAll((items) =>
      items.map((li) => [li.dataset.step, li.classList.contains('done') || li.classList.contains('current')]));
    assert.deepEqual(steps.map((s) => s[0]), ['queued', 'initiating', 'calling', 'completed']);
    assert.ok(steps.every((s) => s[1]), `every step reached: ${JSON.stringify(steps)}`);
    await shot(page, 'waiting-1440x900');
    await page.setViewportSize(PHONE_SIZE);
    await shot(page, 'waiting-375x812');
  });

  await step('every request went to our own origin, fonts included, and nothing failed', async () => {
    assert.deepEqual(foreignRequests(page), []);
    const fonts = page.requests.filter((u) => u.startsWith(`${BASE}/assets/fonts/`));
    assert.ok(fonts.length > 0, 'the typefaces are served by sweetyd');
    assert.deepEqual(page.problems, []);
  });
});
