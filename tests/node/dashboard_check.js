// Loads the operator dashboard in headless Chromium and checks what an operator must see.
// usage: node dashboard_check.js URL EXPECTATIONS_JSON SCREENSHOT_PATH
//   EXPECTATIONS_JSON: {"breakers": {"crm": "OPEN"}, "alarms": ["PAGE 1h/5m"], "kill_switches": ["reason"],
//                       "texts": {"limit-crm": "set by oncall"}, "exact_texts": {"last5m-crm": "12 calls..."},
//                       "mcp": {"everything": ["mcp-servers/everything", "13 tools"]}, "sparklines": true}
//   (texts: data-testid → a substring; exact_texts: data-testid → the element's whole text, trimmed; mcp: texts an MCP connector's server line must contain;
//    sparklines: default true)
// Prints one JSON line with what it found; exit 0 when every expectation holds, 1 otherwise.
'use strict';
const { chromium } = require('playwright-core');

async function main() {
  const [url, expectationsJson, screenshot] = process.argv.slice(2);
  const expected = JSON.parse(expectationsJson);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run'],
    timeout: 60000,
  });
  const found = { breakers: {}, alarms: [], kill_switches: [], texts: {}, exact_texts: {}, mcp: {}, errors: [],
                  external_requests: [] };
  let ok = true;
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    page.on('pageerror', e => found.errors.push(String(e)));
    page.on('request', r => { if (!r.url().startsWith(new URL(url).origin)) found.external_requests.push(r.url()); });
    await page.goto(url, { waitUntil: 'load', timeout: 30000 });
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 30000 });
    for (const id of Object.keys(expected.breakers || {})) {
      found.breakers[id] = (await page.textContent(`[data-testid="breaker-${id}"]`, { timeout: 5000 })).trim();
      ok = ok && found.breakers[id] === expected.breakers[id];
    }
    found.queues = {};
    for (const id of Object.keys(expected.queues || {})) {
      found.queues[id] = (await page.textContent(`[data-testid="queue-${id}"]`, { timeout: 5000 })).trim();
      ok = ok && found.queues[id].startsWith(expected.queues[id]);
    }
    found.alarms = (await page.locator('[data-testid="alarm"]').allTextContents()).map(s => s.trim());
    for (const a of expected.alarms || []) ok = ok && found.alarms.some(f => f.includes(a));
    found.kill_switches = (await page.locator('#kill-switches tbody tr').allTextContents()).map(s => s.trim());
    for (const k of expected.kill_switches || []) ok = ok && found.kill_switches.some(f => f.includes(k));
    for (const [id, text] of Object.entries(expected.texts || {})) {
      found.texts[id] = (await page.textContent(`[data-testid="${id}"]`, { timeout: 5000 })).trim();
      ok = ok && found.texts[id].includes(text);
    }
    for (const [id, text] of Object.entries(expected.exact_texts || {})) {
      found.exact_texts[id] = (await page.textContent(`[data-testid="${id}"]`, { timeout: 5000 })).trim();
      ok = ok && found.exact_texts[id] === text;
    }
    for (const [id, texts] of Object.entries(expected.mcp || {})) {
      found.mcp[id] = (await page.textContent(`[data-testid="mcp-${id}"]`, { timeout: 5000 })).trim();
      for (const t of texts) ok = ok && found.mcp[id].includes(t);
    }
    found.sparklines = await page.locator('svg.spark path').count();
    ok = ok && (expected.sparklines === false || found.sparklines > 0) && found.errors.length === 0 &&
         found.external_requests.length === 0;
    await page.screenshot({ path: screenshot, fullPage: true });
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(found));
  process.exit(ok ? 0 : 1);
}

main().catch(e => {
  console.log(JSON.stringify({ error: String(e && e.stack || e) }));
  process.exit(1);
});
