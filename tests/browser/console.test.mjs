//! Browser test of the persona console: the page `persona serve --console` serves at /, driven
//! in headless Chromium (playwright-core) as a chatter would.
//!
//!   PERSONA_URL=http://127.0.0.1:PORT PERSONA_TOKEN=... node tests/browser/console.test.mjs
//!
//! Env: PERSONA_URL (base URL of a running server in --review --console mode), PERSONA_TOKEN,
//! CHROMIUM (default /usr/bin/chromium), SCREENSHOTS_DIR (optional: console-draft.png,
//! console-refused.png, console-approved.png are saved there). The server needs a working LLM.
//!
//! Steps: (a) a wrong token is refused, the right one logs in; (b) "Try it" as fan `test-fan`
//! yields a pending draft with demos and filter verdicts; (c) an edit naming another platform is
//! refused with the verdict in an alert and the draft stays pending; (d) a clean edit is approved
//! and shows in the history as the creator's; (e) the page logged no error and no CSP violation.
//! Prints one line per step and `N passed, N failed`; exits 1 on any failure.

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import process from 'node:process';

import { chromium } from 'playwright-core';

const BASE_URL = requiredEnv('PERSONA_URL').replace(/\/+$/, '');
const TOKEN = requiredEnv('PERSONA_TOKEN');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOTS_DIR = process.env.SCREENSHOTS_DIR || '';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

const FAN = 'test-fan';
const FAN_MESSAGE = 'hey, just got home from work and i am so tired lol';
const BLOCKED_EDIT = 'add me on snapchat babe, my handle is wren_tea';
const CLEAN_EDIT = 'mm that sounds lovely... tell me more about your day';
const DRAFT_TIMEOUT_MS = 120_000;
// The refusals this test provokes on purpose, which Chromium logs as failed loads.
const EXPECTED_LOAD_ERRORS = /Failed to load resource: the server responded with a status of (401|422)\b/;

function requiredEnv(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`console.test.mjs: set ${name} (see the comment at the top of this file)`);
    process.exit(2);
  }
  return value;
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A JSON API call made by the test itself, to check what the server holds. */
async function apiGet(pathAndQuery) {
  const response = await fetch(`${BASE_URL}${pathAndQuery}`, {
    headers: { Authorization: `Bearer ${TOKEN}`, Accept: 'application/json' },
  });
  const body = await response.json().catch(() => null);
  assert.ok(response.ok, `GET ${pathAndQuery} answered ${response.status}: ${JSON.stringify(body)}`);
  return body;
}

async function pendingDraftIds(creator) {
  const query = new URLSearchParams({ creator, fan_id: FAN });
  const body = await apiGet(`/v1/drafts?${query}`);
  return body.data.map((draft) => draft.draft_id);
}

async function screenshot(page, name) {
  if (!SCREENSHOTS_DIR) return;
  await mkdir(SCREENSHOTS_DIR, { recursive: true });
  const file = path.join(SCREENSHOTS_DIR, name);
  await page.screenshot({ path: file });
  console.log(`  screenshot ${file}`);
}

/** Waits for `locator` to be visible, failing with `what` was expected rather than a bare timeout. */
async function waitVisible(locator, what, timeout = 30_000) {
  try {
    await locator.waitFor({ state: 'visible', timeout });
  } catch (err) {
    throw new assert.AssertionError({ message: `${what}: not shown within ${timeout / 1000} s (${err.message.split('\n')[0]})` });
  }
}

/** The draft card holding the fan message this test sent. */
function ourDraftCard(page) {
  const fanMessage = page.getByTestId('draft-fan-message').filter({
    hasText: new RegExp(`^${escapeRegExp(FAN_MESSAGE)}$`),
  });
  return page.getByTestId('draft').filter({ has: fanMessage }).last();
}

/** Opens the card's editor if closed, types `text` and submits it. */
async function approveEdited(card, text) {
  const area = card.getByTestId('edit-textarea');
  if (!(await area.isVisible())) await card.getByTestId('edit').click();
  await area.fill(text);
  await card.getByTestId('approve-edited').click();
}

// The steps share what earlier ones found.
const ctx = { creator: null, draftId: null, card: null };

const steps = [
  [
    '(a) a wrong token is refused with a message, the right one logs in',
    async (page) => {
      const response = await page.goto(`${BASE_URL}/`);
      assert.equal(response.status(), 200, 'GET / should serve the page');
      const csp = response.headers()['content-security-policy'] || '';
      assert.match(csp, /script-src 'self'/, `GET / should carry the strict CSP, got: ${csp || 'none'}`);

      await page.getByTestId('token-input').fill(`${TOKEN}-wrong`);
      await page.getByTestId('login-button').click();
      const refused = page.getByTestId('login-error');
      await waitVisible(refused, 'a message saying the wrong token was refused');
      assert.match(await refused.textContent(), /refused/i, 'the login error should say the token was refused');
      assert.ok(await page.getByTestId('fan-list').isHidden(), 'no fan list with a wrong token');

      await page.getByTestId('token-input').fill(TOKEN);
      await page.getByTestId('token-input').press('Enter');
      await waitVisible(page.getByTestId('logout-button'), 'the console after logging in with the right token');
      assert.ok(await refused.isHidden(), 'the login error should be gone after logging in');
      const stored = await page.evaluate(() => ({ session: sessionStorage.length, local: localStorage.length }));
      assert.deepEqual(stored, { session: 1, local: 0 }, 'the token lives in sessionStorage only');

      const consoleInfo = await apiGet('/v1/console');
      ctx.creator = consoleInfo.creators[0];
      assert.ok(ctx.creator, 'GET /v1/console should name a creator');
    },
  ],
  [
    `(b) "Try it" as ${FAN} yields a pending draft with demos and verdicts`,
    async (page) => {
      await page.getByTestId('nav-try').click();
      const fanInput = page.getByTestId('try-fan');
      assert.equal(await fanInput.inputValue(), FAN, `the try-it fan id should default to ${FAN}`);
      await fanInput.fill(FAN);
      await page.getByTestId('try-message').fill(FAN_MESSAGE);
      await page.getByTestId('try-send').click();

      const card = ourDraftCard(page);
      await waitVisible(card, `a pending draft answering "${FAN_MESSAGE}"`, DRAFT_TIMEOUT_MS);
      await waitVisible(card.getByTestId('demo').first(), 'at least one demo in the draft');
      await waitVisible(card.getByTestId('verdict').first(), 'at least one filter verdict in the draft');
      assert.ok((await card.getByTestId('demo').count()) >= 1, 'at least one demo');
      assert.ok((await card.getByTestId('verdict').count()) >= 1, 'at least one filter verdict');
      assert.match(await card.getByTestId('demo-score').first().textContent(), /\d\.\d\d\b/, 'scores have 2 decimals');
      assert.ok((await card.getByTestId('draft-text').textContent()).trim(), 'the draft text is shown');
      assert.equal((await page.getByTestId('conv-title').textContent()).trim(), FAN, 'the conversation opened');

      ctx.draftId = await card.getAttribute('data-draft-id');
      assert.ok(ctx.draftId, 'the draft card names its draft id');
      assert.ok((await pendingDraftIds(ctx.creator)).includes(ctx.draftId), 'the server holds the draft as pending');
      ctx.card = page.locator(`[data-testid="draft"][data-draft-id="${ctx.draftId}"]`);
      await screenshot(page, 'console-draft.png');
    },
  ],
  [
    '(c) an edit naming another platform is refused and the draft stays pending',
    async (page) => {
      const card = ctx.card;
      await approveEdited(card, BLOCKED_EDIT);
      const alert = page.getByTestId('alert');
      await waitVisible(alert, `an alert refusing the edit "${BLOCKED_EDIT}"`);
      assert.equal(await alert.getAttribute('role'), 'alert');
      const text = await alert.textContent();
      assert.match(text, /refused/i, `the alert should say the approval was refused: ${text}`);
      assert.match(text, /\b422\b/, `the alert should carry the 422: ${text}`);
      const category = (await alert.getByTestId('alert-category').textContent()).trim();
      assert.ok(category && category !== 'none', `the alert should name the verdict's category: ${text}`);
      assert.ok((await alert.getByTestId('alert-reason').textContent()).trim(), `the alert gives a reason: ${text}`);

      await card.getByTestId('approve-edited').waitFor({ state: 'visible' });
      await page.waitForFunction(
        (id) => !document.querySelector(`[data-draft-id="${id}"] [data-testid="approve-edited"]`)?.disabled,
        ctx.draftId,
      );
      assert.ok(await card.isVisible(), 'the refused draft is still shown');
      assert.ok((await pendingDraftIds(ctx.creator)).includes(ctx.draftId), 'the server still holds it as pending');
      const sent = page.locator('[data-testid="history-message"][data-from="creator"]', { hasText: 'snapchat' });
      assert.equal(await sent.count(), 0, 'the refused text was not sent');
      await screenshot(page, 'console-refused.png');
    },
  ],
  [
    '(d) a clean edit is approved and shows in the history as the creator',
    async (page) => {
      await approveEdited(ctx.card, CLEAN_EDIT);
      const sent = page
        .locator('[data-testid="history-message"][data-from="creator"] [data-testid="history-text"]')
        .filter({ hasText: new RegExp(`^${escapeRegExp(CLEAN_EDIT)}$`) });
      await waitVisible(sent.first(), `"${CLEAN_EDIT}" as a creator message in the history`);
      await ctx.card.waitFor({ state: 'detached' }).catch(() => {
        throw new assert.AssertionError({ message: 'the approved draft is still shown as pending' });
      });
      assert.ok(await page.getByTestId('alert').isHidden(), 'no alert after a successful approval');
      assert.ok(!(await pendingDraftIds(ctx.creator)).includes(ctx.draftId), 'the draft is no longer pending');

      const query = new URLSearchParams({ creator: ctx.creator });
      const history = await apiGet(`/v1/fans/${encodeURIComponent(FAN)}/messages?${query}`);
      const last = history.messages[history.messages.length - 1];
      assert.deepEqual([last.from_creator, last.content], [true, CLEAN_EDIT], 'the server stored the edited reply');
      await screenshot(page, 'console-approved.png');
    },
  ],
  [
    '(e) the page logged no error and no CSP violation',
    async (page, problems) => {
      await page.waitForTimeout(500);
      assert.deepEqual(problems, [], `the page logged:\n  ${problems.join('\n  ')}`);
    },
  ],
];

async function main() {
  const userDataDir = await mkdtemp(path.join(tmpdir(), 'persona-console-chromium-'));
  let context;
  let passed = 0;
  let failed = 0;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1366, height: 768 },
    });
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(30_000);
    const problems = [];
    page.on('console', (msg) => {
      if (msg.type() === 'error' && !EXPECTED_LOAD_ERRORS.test(msg.text())) {
        problems.push(`console error: ${msg.text()}`);
      }
    });
    page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`));

    for (const [name, run] of steps) {
      if (failed) {
        console.log(`skip - ${name}`);
        continue;
      }
      try {
        await run(page, problems);
        passed += 1;
        console.log(`ok - ${name}`);
      } catch (err) {
        failed += 1;
        console.log(`not ok - ${name}\n  ${String(err.stack || err).replaceAll('\n', '\n  ')}`);
        await screenshot(page, 'console-failure.png').catch(() => {});
      }
    }
    if (failed && problems.length) console.log(`  the page logged:\n  ${problems.join('\n  ')}`);
  } catch (err) {
    failed += 1;
    console.log(`not ok - launching Chromium (${CHROMIUM}): ${err.message}`);
  } finally {
    await context?.close().catch(() => {});
    await rm(userDataDir, { recursive: true, force: true });
  }
  const skipped = steps.length - passed - failed;
  console.log(`${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`);
  process.exitCode = failed ? 1 : 0;
}

await main();
