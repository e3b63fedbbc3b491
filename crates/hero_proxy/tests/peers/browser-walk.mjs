// Headless Chromium (Debian's /usr/bin/chromium through npm playwright-core) walking the full sign-in:
// open <url> on the proxy → redirected to the OIDC provider → back to /oauth/callback → the upstream page.
// Prints one JSON line: { url, body, cookies } where body is the final page's text (the echo upstream's JSON).
// Flags per shared/reference/test-peers.md §7; a fresh profile directory per run.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const peersDir = process.env.HERO_PEERS_DIR || path.resolve(here, '../../../../tools/peers');
const { chromium } = await import(pathToFileURL(path.join(peersDir, 'node_modules/playwright-core/index.mjs')).href);

const url = process.argv[2];
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'hero-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  await page.goto(url, { waitUntil: 'load', timeout: 30000 });
  // A provider with a real sign-in form (the dev Forge): fill it like a person would, then approve consent.
  // FORGE_PASSWORD_FILE keeps the password out of argv and the environment.
  for (let i = 0; i < 3; i++) {
    if (await page.locator('form#login, #login').count()) {
      const pw = fs.readFileSync(process.env.FORGE_PASSWORD_FILE, 'utf8').trim();
      await page.fill('input[name=user_name]', process.env.FORGE_USER || 'alice');
      await page.fill('input[name=password]', pw);
      await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.locator('form#login [type=submit], #login [type=submit]').first().click()]);
    } else if (await page.locator('form#consent, #consent').count()) {
      await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.locator('#consent [name=granted][value=true], #consent button[type=submit]').first().click()]);
    } else break;
  }
  const body = await page.evaluate(() => document.body.innerText);
  const cookies = await browser.cookies();
  process.stdout.write(JSON.stringify({ url: page.url(), body, cookies }) + '\n');
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
