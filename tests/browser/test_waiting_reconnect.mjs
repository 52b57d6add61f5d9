// The waiting page through a reload and a dropped connection in the middle of a call: the
// timeline stays complete and nothing is shown twice. The drop goes through Playwright's WebSocket
// routing: the page's socket is relayed to the real /ws, so the test can cut it and read what the
// page sends when it comes back (after_seq = the last seq it showed).
import {
  assert, assertHistory, fillBookingForm, historyOf, openHome, openPage, run, scriptCalls, step, uniquePhone,
  waitForStatus,
} from './lib.mjs';

await run(async (browser) => {
  const { page } = await openPage(browser);

  await step('reload during the call: the history is whole and has no repeats', async () => {
    const phone = uniquePhone();
    await scriptCalls(phone, ['answer:12']);
    await openHome(page);
    await fillBookingForm(page, { phone });
    await Promise.all([page.waitForURL(/\/waiting\?booking=/), page.locator('#submit').click()]);
    await waitForStatus(page, 'calling');
    await page.reload({ waitUntil: 'load' });
    await waitForStatus(page, 'calling');
    await assertHistory(page, ['queued', 'initiating', 'calling']);
    await waitForStatus(page, 'completed', 60000);
    await assertHistory(page, ['queued', 'initiating', 'calling', 'completed']);
  });

  await step('a dropped connection is resumed with after_seq and misses nothing', async () => {
    const phone = uniquePhone();
    await scriptCalls(phone, ['answer:6']);
    const sent = [];
    let pageSide = null;
    await page.routeWebSocket(/\/ws$/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((m) => { sent.push(JSON.parse(String(m))); server.send(m); });
      server.onMessage((m) => ws.send(m));
      pageSide = ws;
    });
    await openHome(page);
    await fillBookingForm(page, { phone });
    await Promise.all([page.waitForURL(/\/waiting\?booking=/), page.locator('#submit').click()]);
    await waitForStatus(page, 'calling');
    const before = await historyOf(page);
    const lastSeq = before[before.length - 1].seq;
    await pageSide.close({ code: 4000, reason: 'test drop' });
    await page.locator('#connection[data-state=reconnecting], #connection[data-state=connecting]').first()
      .waitFor({ timeout: 5000 }).catch(() => {});   // may already be live again
    await waitForStatus(page, 'completed', 60000);
    const subscribes = sent.filter((m) => m.type === 'subscribe');
    assert.ok(subscribes.length >= 2, `subscribed again: ${JSON.stringify(subscribes)}`);
    assert.equal(subscribes[0].after_seq, 0);
    assert.equal(subscribes[subscribes.length - 1].after_seq, lastSeq);
    await assertHistory(page, ['queued', 'initiating', 'calling', 'completed']);
    await page.locator('#connection').waitFor();
  });

  await step('no script errors', async () => {
    assert.deepEqual(page.problems.filter((p) => !/WebSocket/.test(p)), []);
  });
});
