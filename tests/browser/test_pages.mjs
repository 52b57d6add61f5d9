// The pages themselves: 404, robots.txt, headers, SEO tags and JSON-LD, the FAQ by keyboard, dark
// mode (system and toggle), no horizontal scroll at phone and desktop sizes, and no layout shift.
import {
  assert, BASE, DESKTOP_SIZE, foreignRequests, openHome, openPage, PHONE_SIZE, run, shot, step,
} from './lib.mjs';

async function backgroundOf(page) {
  return page.evaluate(() => getComputedStyle(document.body).backgroundColor);
}

await run(async (browser) => {
  const { page } = await openPage(browser);

  await step('an unknown address gets the 404 page with status 404', async () => {
    const res = await page.goto(`${BASE}/no/such/page`);
    assert.equal(res.status(), 404);
    assert.match((await page.locator('h1').textContent()).toLowerCase(), /not found/);
    assert.ok((await res.headerValue('content-security-policy')).includes("default-src 'self'"));
    await page.locator('a[href="/"]').first().waitFor();
    const waiting = await page.goto(`${BASE}/waiting`);
    assert.equal(waiting.status(), 200, '/waiting itself is a page');
  });

  await step('robots.txt', async () => {
    const res = await page.goto(`${BASE}/robots.txt`);
    assert.equal(res.status(), 200);
    assert.match(await res.text(), /User-agent: \*/i);
  });

  await step('the home page has its title, description, Open Graph tags and JSON-LD', async () => {
    await openHome(page);
    assert.ok((await page.title()).length > 10);
    const meta = (sel) => page.locator(sel).getAttribute('content');
    assert.ok((await meta('meta[name=description]')).length > 40);
    for (const p of ['og:title', 'og:description', 'og:type', 'og:url', 'og:image'])
      assert.ok(await meta(`meta[property="${p}"]`), p);
    const org = JSON.parse(await page.locator('#ld-org').textContent());
    assert.equal(org['@type'], 'Organization');
    await page.locator('#ld-offers').waitFor({ state: 'attached' });
    const offers = JSON.stringify(JSON.parse(await page.locator('#ld-offers').textContent()));
    for (const key of ['"Offer"', '"priceCurrency"']) assert.ok(offers.includes(key), key);
    assert.equal((offers.match(/"@type":"Offer"/g) || []).length, 4, offers);
  });

  await step('the FAQ opens and closes from the keyboard', async () => {
    const q = page.locator('.faq-question').first();
    const panel = page.locator(`#${await q.getAttribute('aria-controls')}`);
    assert.equal(await q.getAttribute('aria-expanded'), 'false');
    assert.equal(await panel.isHidden(), true);
    await q.focus();
    await page.keyboard.press('Enter');
    assert.equal(await q.getAttribute('aria-expanded'), 'true');
    assert.equal(await panel.isVisible(), true);
    await page.keyboard.press('Space');
    assert.equal(await q.getAttribute('aria-expanded'), 'false');
  });

  await step('every form field has a label', async () => {
    const unlabelled = await page.locator('#booking-form input:not([type=hidden]), #booking-form select, #booking-form textarea')
      .evaluateAll((els) => els.filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).map((el) => el.id || el.name));
    assert.deepEqual(unlabelled, []);
  });

  await step('dark mode follows the system and the toggle, and the choice is kept', async () => {
    const dark = await openPage(browser, { colorScheme: 'dark' });
    await openHome(dark.page);
    const light = await backgroundOf(page);
    const system = await backgroundOf(dark.page);
    assert.notEqual(light, system, 'a dark system gets a dark page');
    await dark.context.close();
    await page.locator('#theme-toggle').click();
    assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), 'dark');
    assert.equal(await page.locator('#theme-toggle').getAttribute('aria-pressed'), 'true');
    assert.equal(await backgroundOf(page), system);
    await page.reload();
    assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), 'dark');
    await shot(page, 'home-dark-1440x900');
    await page.locator('#theme-toggle').click();
    assert.equal(await backgroundOf(page), light);
  });

  for (const size of [PHONE_SIZE, DESKTOP_SIZE]) {
    await step(`no horizontal scroll and no layout shift at ${size.width}x${size.height}`, async () => {
      const p = await openPage(browser, { viewport: size });
      await p.page.addInitScript(() => {
        window.__cls = 0;
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) if (!e.hadRecentInput) window.__cls += e.value;
        }).observe({ type: 'layout-shift', buffered: true });
      });
      await openHome(p.page);
      await p.page.evaluate(() => document.fonts.ready);
      await p.page.waitForTimeout(500);
      const widths = await p.page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
      assert.ok(widths[0] <= widths[1], `page ${widths[0]} px wide in a ${widths[1]} px window`);
      const cls = await p.page.evaluate(() => window.__cls);
      assert.ok(cls < 0.02, `cumulative layout shift ${cls}`);
      for (const path of ['/waiting', '/booking-confirmation', '/nope']) {
        await p.page.goto(BASE + path);
        const w = await p.page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
        assert.ok(w[0] <= w[1], `${path}: ${w[0]} px wide in ${w[1]}`);
      }
      assert.deepEqual(foreignRequests(p.page), []);
      assert.deepEqual(p.page.problems.filter((x) => !/status of 404/.test(x)), []);
      await p.context.close();
    });
  }
});
