// The waiting page's final states other than completed: a paid call that can never be delivered
// (the number is always busy: one try plus one retry, as browser_stack configures) ends `failed`
// with the refund said in words; a free trial cancelled from the waiting page ends `cancelled`.
import {
  assert, assertHistory, fillBookingForm, openHome, openPage, run, scriptCalls, step, uniquePhone, waitForStatus,
} from './lib.mjs';

await run(async (browser) => {
  const { page } = await openPage(browser);

  await step('a paid call that cannot be delivered ends failed, and the refund is mentioned', async () => {
    const phone = uniquePhone();
    await scriptCalls(phone, ['busy', 'busy', 'busy']);
    await openHome(page);
    await fillBookingForm(page, { phone, plan: 'standard', method: 'stripe' });
    await Promise.all([page.waitForURL(/\/pay\//), page.locator('#submit').click()]);
    await Promise.all([page.waitForURL(/\/booking-confirmation\?booking=/), page.locator('#pay').click()]);
    await Promise.all([page.waitForURL(/\/waiting\?booking=/), page.locator('#to-waiting').click()]);
    await waitForStatus(page, 'failed', 60000);
    const final = page.locator('#final[data-final=failed]');
    await final.waitFor();
    assert.match(await final.textContent(), /refund/i);
    // busy rings first (calling), then ends: back to queued for the retry
    await assertHistory(page, ['pending', 'pending_payment', 'confirmed', 'queued', 'initiating', 'calling', 'queued',
      'initiating', 'calling', 'failed']);
  });

  await step('a booking cancelled from the waiting page ends cancelled', async () => {
    const phone = uniquePhone();
    await openHome(page);
    await fillBookingForm(page, { phone, plan: 'standard', method: 'stripe' });
    let id = null;   // read on its way to the page (the page navigates away at once)
    await page.route('**/api/bookings', async (route) => {
      const response = await route.fetch();
      id = (await response.json()).booking_id;
      await route.fulfill({ response });
    });
    await Promise.all([page.waitForURL(/\/pay\//), page.locator('#submit').click()]);
    await page.unroute('**/api/bookings');
    assert.match(id, /^[0-9a-f-]{36}$/);
    // back from the checkout without paying, then to the waiting page in the same tab
    await page.goBack();
    await page.goto(`${new URL(page.url()).origin}/waiting?booking=${id}`);
    await waitForStatus(page, 'pending_payment');
    await page.locator('#cancel').click();
    await waitForStatus(page, 'cancelled');
    await page.locator('#final[data-final=cancelled]').waitFor();
    assert.equal(await page.locator('#cancel').isVisible(), false);
  });

  await step('no script errors', async () => {
    assert.deepEqual(page.problems.filter((p) => !/Failed to load resource/.test(p)), []);
  });
});
