// Drives `pythia console` in headless Chromium. Started by
// tests/console_browser.rs, which runs the broker, the workers and the
// console, and passes:
//   CONSOLE_URL      the console's address
//   EXPECTED         JSON: { lag: <`pythia lag --json` output>, clients: [client ids], dead_letters: n }
//   SCREENSHOTS      the directory to save screenshots in
//   CHROMIUM         the browser binary (default /usr/bin/chromium)
// It prints one line of JSON on success: the dead letter it replayed.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import path from "node:path";

const url = process.env.CONSOLE_URL;
const expected = JSON.parse(process.env.EXPECTED);
const shots = process.env.SCREENSHOTS;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (error) => { throw error; });
  await page.goto(url);
  const shot = (name, locator) => (locator || page).screenshot({ path: path.join(shots, `${name}.png`), ...(locator ? {} : { fullPage: true }) });

  // Groups and instances: both instances, with their partitions.
  await page.waitForFunction((n) => document.querySelectorAll("tr.member").length === n, expected.clients.length, { timeout: 30000 });
  const members = await page.$$eval("tr.member", (rows) => rows.map((r) => ({ client: r.dataset.clientId, assigned: r.querySelector(".assigned").textContent })));
  assert.deepEqual(members.map((m) => m.client).sort(), [...expected.clients].sort());
  const partitions = members.flatMap((m) => [...m.assigned.matchAll(/\d+/g)].map((x) => Number(x[0]))).sort();
  assert.deepEqual(partitions, expected.lag.partitions.map((p) => p.partition).sort(), `assigned: ${JSON.stringify(members)}`);
  await page.waitForFunction((n) => document.querySelectorAll("tr.instance").length === n, expected.clients.length);
  // Stalled instances say so, with the reason.
  await page.waitForFunction(() => [...document.querySelectorAll("tr.instance td.live")].every((td) => td.textContent.startsWith("stalled")), null, { timeout: 30000 });

  // Lag: the same numbers as `pythia lag --json`.
  await page.waitForFunction((total) => document.getElementById("lag").dataset.total === String(total), expected.lag.lag, { timeout: 30000 });
  const rows = await page.$$eval("tr.partition", (rows) => rows.map((r) => ({ topic: r.dataset.topic, partition: Number(r.dataset.partition), lag: Number(r.querySelector(".lag").textContent) })));
  assert.deepEqual(rows, expected.lag.partitions.map((p) => ({ topic: p.topic, partition: p.partition, lag: p.lag })));
  assert.equal(await page.textContent("#lag-total"), String(expected.lag.lag));
  // A few samples for the charts.
  await page.waitForTimeout(6000);
  const points = await page.$eval("#chart-lag polyline", (line) => line.getAttribute("points").split(" ").length);
  assert.ok(points >= 3, `the lag chart has ${points} points`);
  await shot("console-groups", page.locator("#groups"));
  await shot("console-lag", page.locator("#lag"));

  // Dead letters with their reasons.
  await page.waitForFunction((n) => document.querySelectorAll("tr.letter").length === n, expected.dead_letters, { timeout: 30000 });
  const letters = await page.$$eval("tr.letter", (rows) => rows.map((r) => ({
    partition: Number(r.dataset.partition), offset: Number(r.dataset.offset),
    reason: r.querySelector(".reason").textContent, origin: r.querySelector(".origin").textContent,
    payload: r.querySelector("pre.preview")?.textContent,
  })));
  for (const letter of letters) {
    assert.ok(letter.reason.length > 3 && letter.reason !== "–", `a reason for ${JSON.stringify(letter)}`);
    assert.match(letter.origin, /^orders\/\d+@\d+$/);
  }
  await shot("console-dead-letters", page.locator("#dead-letters"));

  // Replay one: confirm, then the result.
  const chosen = letters[0];
  await page.click(`tr.letter[data-offset="${chosen.offset}"][data-partition="${chosen.partition}"] button.replay-one`);
  await page.waitForSelector("#confirm:not([hidden])");
  assert.match(await page.textContent("#confirm-text"), /Replay 1 message from orders\.dlq to orders\?/);
  await shot("console-replay-confirm", page.locator("#dead-letters"));
  await page.click("#confirm-yes");
  await page.waitForFunction(() => document.getElementById("replay-result").textContent.startsWith("Replayed"), null, { timeout: 30000 });
  assert.equal(await page.textContent("#replay-result"), "Replayed 1 (skipped 0); every send was confirmed.");
  await shot("console", null);

  // Replay a filtered set: the letters whose origin matches another one's.
  const other = letters.find((l) => l !== chosen);
  await page.fill("#dlq-filter", other.origin);
  await page.waitForFunction(() => document.querySelectorAll("tr.letter").length === 1);
  await page.click("#replay-filtered");
  assert.match(await page.textContent("#confirm-text"), /^Replay 1 message from orders\.dlq to orders\?/);
  await page.click("#confirm-yes");
  await page.waitForFunction(() => document.getElementById("replay-result").textContent.startsWith("Replayed") && document.getElementById("confirm").hidden);
  await page.waitForFunction(() => document.getElementById("replay-result").textContent === "Replayed 1 (skipped 0); every send was confirmed.");
  console.log(JSON.stringify({ replayed: [chosen, other] }));
} finally {
  await browser.close();
}
