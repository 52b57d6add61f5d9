// A paid plan: choose it on its card, book, pay on the sandbox's Stripe Checkout page, land on the
// confirmation page, follow the link to the waiting page, and see the call through to completed.
import {
  assert, assertHistory, BASE, bookingIdOf, fillBookingForm, foreignRequests, openHome, openPage, run, SANDBOX, step,
  uniquePhone, waitForStatus,
} from './lib.mjs';

await run(async (browser) => {
  const { page } = await openPage(browser);
  const phone = uniquePhone();

  await step('choosing the standard plan on its card selects it in the form', async () => {
    await openHome(page);
    await page.locator('[data-choose=standard]').click();
    assert.equal(await page.locator('#plan').inputValue(), 'standard');
    assert.equal(await page.locator('#payment-method').isVisible(), true);
  });

  await step('submitting goes to the checkout page', async () => {
    await fillBookingForm(page, { phone, plan: 'standard', method: 'stripe' });
    await Promise.all([page.waitForURL((u) => u.toString().startsWith(`${SANDBOX}/pay/`)), page.locator('#submit').click()]);
  });

  let booking;
  await step('paying lands on the confirmation page', async () => {
    await Promise.all([page.waitForURL(/\/booking-confirmation\?booking=/), page.locator('#pay').click()]);
    booking = bookingIdOf(page);
    assert.match(booking, /^[0-9a-f-]{36}$/);
    await page.locator('#confirmation').waitFor();
    assert.equal(await page.locator('#to-waiting').getAttribute('href'), `/waiting?booking=${booking}`);
  });

  await step('the confirmation page links to the waiting page, where the call completes', async () => {
    await Promise.all([page.waitForURL(`${BASE}/waiting?booking=${booking}`), page.locator('#to-waiting').click()]);
    await waitForStatus(page, 'completed');
    await assertHistory(page, ['pending', 'pending_payment', 'confirmed', 'queued', 'initiating', 'calling', 'completed']);
    await page.locator('#final[data-final=completed]').waitFor();
  });

  await step('only our origin and the checkout page were contacted', async () => {
    assert.deepEqual(foreignRequests(page, [new URL(SANDBOX).origin]), []);
    // Chromium asks the sandbox's checkout page for /favicon.ico, which it does not have
    const ours = page.failures.filter((f) => !f.startsWith(`404 ${SANDBOX}/favicon.ico`));
    assert.deepEqual(ours, []);
    assert.deepEqual(page.problems.filter((p) => !/Failed to load resource/.test(p) || ours.length), []);
  });
});
