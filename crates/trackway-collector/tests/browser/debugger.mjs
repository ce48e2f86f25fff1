// Drives the collector's debugger page in headless Chromium and checks what a person sees.
// Usage: node debugger.mjs <base-url> <admin-token> <write-key> <screenshot-dir> <accept-file>
// The webhook refuses mallory's event until <accept-file> exists. The store holds the seed
// (ada's identify and order, mallory's hostile event, a rejected one), one event of source
// "app", then 250 fillers: more than the page's first 200.
// Exits 0 when every check holds; otherwise prints the failed check and exits 1.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, token, writeKey, screenshots, accept] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function check(condition, message) {
  if (!condition) throw new Error("check failed: " + message);
}

async function send(event) {
  const response = await fetch(url + "/v1/track", {
    method: "POST",
    headers: { "content-type": "application/json",
               authorization: "Basic " + Buffer.from(writeKey + ":").toString("base64") },
    body: JSON.stringify(event),
  });
  check(response.status === 200, "the live event was accepted");
}

/// Waits for `step` to hold in the page; a timeout names the step.
async function until(page, what, step, arg, timeout = 15000) {
  try {
    await page.waitForFunction(step, arg, { timeout });
  } catch (error) {
    throw new Error("check failed: never happened: " + what);
  }
}

async function shoot(page, name) {
  const path = join(screenshots, name);
  await page.screenshot({ path });
  console.log("screenshot: " + path);
}

const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const dialogs = [];
  const login = await browser.newPage();
  login.on("dialog", async (dialog) => { dialogs.push(dialog.message()); await dialog.dismiss(); });

  // Without a token: the page asks for one and shows no data.
  await login.goto(url + "/");
  await login.waitForSelector("#login:not([hidden])");
  check(await login.locator("#main").isHidden(), "no data without a token");

  // A wrong token is refused.
  await login.fill("#token", "not-the-token-at-all");
  await login.click("#login button");
  await login.waitForFunction(() => document.getElementById("login-error").textContent.includes("refused"));
  await login.close();

  // From here on, a fresh page in which any console error, failed request or error status
  // fails the run (item 14: the favicon was a 404).
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: url });
  const page = await context.newPage();
  page.on("dialog", async (dialog) => { dialogs.push(dialog.message()); await dialog.dismiss(); });
  const errors = [];
  page.on("console", (message) => { if (message.type() === "error") errors.push("console: " + message.text()); });
  page.on("pageerror", (error) => errors.push("page: " + error.message));
  page.on("requestfailed", (request) => {
    // The stream is cancelled when the page closes; anything else failing is an error.
    if (!request.url().includes("/api/stream")) errors.push("failed: " + request.url());
  });
  page.on("response", (response) => { if (response.status() >= 400) errors.push(response.status() + " " + response.url()); });
  const asked = [];
  page.on("request", (request) => { if (request.url().includes("/api/events")) asked.push(new URL(request.url()).search); });
  const rows = () => page.locator("#rows tr").count();
  const waitRows = (n) => page.waitForFunction((n) => document.querySelectorAll("#rows tr").length === n, n);

  // With the token in the fragment: the newest page of events loads.
  await page.goto(url + "/#token=" + token);
  await page.waitForSelector("#main:not([hidden])");
  await waitRows(200);
  check(!page.url().includes(token), "the token is removed from the address bar");
  check(await page.locator("#more").isVisible(), "older events can be loaded");
  check(await page.locator("#rows tr", { hasText: "Order Completed" }).count() === 0, "the seed is older than the first page");
  await page.waitForFunction(() => document.getElementById("status").textContent === "live");
  await shoot(page, "list.png");
  // Item 14: the icon the page names, and the one browsers ask for unprompted, are there
  // (headless Chromium asks for neither, so the page is made to).
  const icons = await page.evaluate(async () => [
    (await fetch(document.querySelector("link[rel=icon]").href)).status,
    (await fetch("/favicon.ico")).status]);
  check(icons.every((status) => status === 200), "the icons are served: " + icons);

  // Item 10: the search asks the server, so it finds events that are not on the page.
  await page.fill("#search", "ada");
  await waitRows(3);
  check(asked.some((q) => q.includes("q=ada")), "the search asked the server: " + asked.join(" "));
  check(await page.locator("#rows tr", { hasText: "Order Completed" }).count() === 1, "the search found ada's order");
  // By source (also asked of the server), then by type.
  await page.selectOption("#source", "app");
  await waitRows(1);
  check((await page.textContent("#rows tr")).includes("App Opened"), "the source filter keeps app's event");
  check(asked.some((q) => q.includes("source=app")), "the source filter asked the server");
  await page.selectOption("#source", "");
  await page.fill("#search", "");
  await page.selectOption("#type", "identify");
  await waitRows(1);
  check((await page.textContent("#rows tr")).includes("ada"), "the type filter keeps ada's identify");
  await page.selectOption("#type", "rejected");
  await waitRows(1);
  const rejected = page.locator("#rows tr.rejected");
  check((await rejected.textContent()).includes("needs a non-empty `event`"), "the rejected event shows its reason");
  await page.selectOption("#type", "");
  await waitRows(200);
  // Load older: the next page, from where the first ended; then nothing is left.
  await page.click("#more");
  await waitRows(255);
  check(await page.locator("#more").isHidden(), "no older events are left");
  const seeded = await page.locator("#rows tr", { hasText: "Order Completed" }).count();
  check(seeded === 1, "the older page holds the seed: " + seeded + " " + (await page.locator("#rows tr:last-child").textContent()));

  // Hostile payloads are shown as text, never run.
  const xss = await page.evaluate(() => window.__xss);
  check(xss === undefined, "a payload ran as script: " + xss);
  check(dialogs.length === 0, "a payload opened a dialog: " + dialogs.join(", "));
  const hostile = page.locator("#rows tr", { hasText: "<img src=x onerror=" });
  check(await hostile.count() === 1, "the hostile event name is shown as text");
  check(await page.locator("#rows img, #panel img, #rows script, #panel script").count() === 0, "no element was injected");

  // Item 11: each row says, per destination, delivered or dead-lettered (pending ones are
  // asked again until they are done); an event of a source without destinations, stored.
  await until(page, "mallory's row says dead letter", () => {
    const row = Array.from(document.querySelectorAll("#rows tr")).find((tr) => tr.textContent.includes("<img src=x"));
    return row && row.querySelector(".state.dead")?.textContent === "Hook: dead letter";
  });
  check((await hostile.locator(".state.dead").getAttribute("title")).includes("HTTP 400"), "the dead letter's reason is on its chip");
  await until(page, "no row is pending", () => document.querySelectorAll("#rows .state.pending").length === 0);
  const order = page.locator("#rows tr", { hasText: "Order Completed" });
  check(await order.locator(".state.delivered").textContent() === "Hook: delivered", "the order was delivered");
  check(await page.locator("#rows tr", { hasText: "App Opened" }).locator("td.delivery").textContent() === "stored",
        "app's event has no destination");
  check(await page.locator("#rows td.delivery", { hasText: "stored" }).count() === 1, "no web event just says stored");

  // Item 12: the detail shows readable times, a JSON tree that folds, wrapped long values,
  // and copies the event's JSON.
  await order.click();
  await page.waitForSelector("#detail:not([hidden])");
  check((await page.textContent("#detail-title")).includes("Order Completed"), "the detail names the event");
  const received = await page.textContent("#detail-times li:first-child");
  check(received.startsWith("received") && /just now|s ago|min ago/.test(received), "a local, relative time: " + received);
  check(!/\d{13}/.test(await page.textContent("#detail-times")), "no epoch milliseconds");
  const revenue = page.locator("#detail-json .leaf", { hasText: '"revenue"' }).locator(".num");
  check(await revenue.textContent() === "42.5", "numbers are shown as numbers");
  const colour = (selector) => page.locator(selector).first().evaluate((node) => getComputedStyle(node).color);
  check(await colour("#detail-json .num") !== await colour("#detail-json .str"), "values are coloured by kind");
  const panel = await page.locator("#panel").evaluate((node) => [node.scrollWidth, node.clientWidth]);
  check(panel[0] <= panel[1], "long values wrap instead of widening the panel: " + panel);
  await shoot(page, "detail.png");
  const properties = page.locator("#detail-json details", { has: page.locator(":scope > summary", { hasText: '"properties"' }) });
  await properties.locator(":scope > summary").click();
  check(await revenue.isHidden(), "properties fold");
  await properties.locator(":scope > summary").click();
  check(await revenue.isVisible(), "and unfold");
  await page.click("#copy");
  await page.waitForFunction(() => document.getElementById("copy").textContent === "Copied");
  const copied = JSON.parse(await page.evaluate(() => navigator.clipboard.readText()));
  check(copied.properties.revenue === 42.5, "the copy is the event's JSON");
  check(copied._trackway.source === "web", "with where it came from");
  check(copied._trackway.delivery.Hook === "delivered", "and its delivery state");

  // Item 13: the dead letters as a table, replayed with a button, with the result shown.
  await page.waitForSelector("#destination-rows td.dead");
  const destination = await page.textContent("#destination-rows tr");
  check(destination.includes("Hook") && destination.includes("webhook"), "the destination is listed: " + destination);
  await page.click("#destination-rows td.dead");
  await page.waitForSelector("#dead:not([hidden]) #letter-rows tr");
  const letter = await page.locator("#letter-rows tr td").allTextContents();
  check(/ago|just now/.test(letter[0]), "when it failed, readably: " + letter[0]);
  check(letter[1] === "Hook", "which destination: " + letter[1]);
  check(letter[2].includes("<img src=x onerror=") && letter[2].includes("<b>mallory</b>"), "which event: " + letter[2]);
  check(letter[3].includes("HTTP 400"), "why: " + letter[3]);
  await shoot(page, "dead-letters.png");
  writeFileSync(accept, "");
  await page.click("#replay");
  await page.waitForFunction(() => document.getElementById("replay-result").textContent.includes("1 delivered"));
  check(await page.locator("#replay-result.ok").count() === 1, "the result is shown as a success");
  await page.waitForSelector("#no-letters:not([hidden])");
  await until(page, "the replayed row says delivered", () => {
    const row = Array.from(document.querySelectorAll("#rows tr")).find((tr) => tr.textContent.includes("<img src=x"));
    return row && row.querySelector(".state.delivered") !== null;
  });
  await shoot(page, "replayed.png");

  // Item 9: paused, the list holds still and counts what arrives; resumed, it shows them.
  await page.click("#pause");
  check(await page.textContent("#pause") === "Resume", "the button offers to resume");
  check(await page.textContent("#status") === "paused", "the header says paused, not live");
  const before = await rows();
  await send({ userId: "live-user", event: "While Paused" });
  await page.waitForFunction(() => document.getElementById("pause").textContent === "Resume (1 new)", null, { timeout: 10000 });
  check(await rows() === before, "the paused list did not move");
  check(await page.locator("#rows tr", { hasText: "While Paused" }).count() === 0, "the new event waits");
  await shoot(page, "paused.png");
  await page.click("#pause");
  check((await page.textContent("#rows tr:first-child")).includes("While Paused"), "resumed, it is on top");
  check(await page.textContent("#pause") === "Pause", "and the list is live again");
  check(await page.textContent("#status") === "live", "and says live again");

  // Live: an event sent now appears without a reload, pending, then delivered.
  await send({ userId: "live-user", event: "Arrived Live" });
  await page.waitForSelector("#rows tr:first-child:has-text('Arrived Live')", { timeout: 10000 });
  await page.waitForSelector("#rows tr:first-child .state.delivered", { timeout: 15000 });

  // Paused through more events than the page holds (1000), resuming reloads the newest page
  // instead of showing the last 1000 with a gap behind them.
  await page.click("#pause");
  const burst = Array.from({ length: 1001 }, (_, i) => ({ type: "track", userId: "burst", event: "Burst " + i }));
  const response = await fetch(url + "/v1/batch", {
    method: "POST",
    headers: { "content-type": "application/json",
               authorization: "Basic " + Buffer.from(writeKey + ":").toString("base64") },
    body: JSON.stringify({ batch: burst }),
  });
  check(response.status === 200, "the burst was accepted");
  await until(page, "1001 counted while paused",
              () => document.getElementById("pause").textContent === "Resume (1001 new)");
  await page.click("#pause");
  await waitRows(200);
  check((await page.textContent("#rows tr:first-child")).includes("Burst 1000"), "the newest is on top");
  check(await page.locator("#more").isVisible(), "and the rest is a click away");

  check(errors.length === 0, "the page loaded with errors:\n  " + errors.join("\n  "));
  console.log("debugger checks passed");
} catch (error) {
  console.error(error.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
