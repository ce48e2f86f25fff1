// Drives the collector's debugger page in headless Chromium and checks what a person sees.
// Usage: node debugger.mjs <base-url> <admin-token> <write-key> <screenshot.png>
// Exits 0 when every check holds; otherwise prints the failed check and exits 1.
import { chromium } from "playwright-core";

const [url, token, writeKey, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function check(condition, message) {
  if (!condition) throw new Error("check failed: " + message);
}

const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  const dialogs = [];
  page.on("dialog", async (dialog) => { dialogs.push(dialog.message()); await dialog.dismiss(); });

  // Without a token: the page asks for one and shows no data.
  await page.goto(url + "/");
  await page.waitForSelector("#login:not([hidden])");
  check(await page.locator("#main").isHidden(), "no data without a token");

  // A wrong token is refused.
  await page.fill("#token", "not-the-token-at-all");
  await page.click("#login button");
  await page.waitForFunction(() => document.getElementById("login-error").textContent.includes("refused"));

  // With the token in the fragment: the events load.
  await page.goto(url + "/#token=" + token);
  await page.waitForSelector("#main:not([hidden])");
  await page.waitForFunction(() => document.querySelectorAll("#rows tr").length >= 4);
  check(!page.url().includes(token), "the token is removed from the address bar");
  // Item 14: the icon the page names, and the one browsers ask for unprompted, are there
  // (headless Chromium asks for neither, so the page is made to).
  const icons = await page.evaluate(async () => [
    (await fetch(document.querySelector("link[rel=icon]").href)).status,
    (await fetch("/favicon.ico")).status]);
  check(icons.every((status) => status === 200), "the icons are served: " + icons);

  // Hostile payloads are shown as text, never run.
  const xss = await page.evaluate(() => window.__xss);
  check(xss === undefined, "a payload ran as script: " + xss);
  check(dialogs.length === 0, "a payload opened a dialog: " + dialogs.join(", "));
  const hostile = page.locator("#rows tr", { hasText: "<img src=x onerror=" });
  check(await hostile.count() === 1, "the hostile event name is shown as text");
  check(await page.locator("#rows img, #detail img, #rows script").count() === 0, "no element was injected");

  // The rejected event is marked with its reason.
  const rejected = page.locator("#rows tr.rejected");
  check(await rejected.count() === 1, "one rejected row");
  check((await rejected.textContent()).includes("needs a non-empty `event`"), "the reason is shown");

  // Destinations: lag and counts, and dead letters with their reasons on a click.
  await page.waitForSelector("#destinations:not([hidden])");
  await page.waitForFunction(() => document.querySelector("#destination-rows td.dead") !== null, null, { timeout: 15000 });
  const destination = await page.textContent("#destination-rows tr");
  check(destination.includes("Hook") && destination.includes("webhook"), "the destination is listed: " + destination);
  await page.click("#destination-rows td.dead");
  await page.waitForFunction(() => document.getElementById("detail").textContent.includes("HTTP 400"));
  const letters = JSON.parse(await page.textContent("#detail"));
  check(letters.length === 1 && letters[0].reason.includes("HTTP 400"), "the dead letter shows its reason");

  // A click shows the full JSON.
  await page.locator("#rows tr", { hasText: "Order Completed" }).click();
  const detail = JSON.parse(await page.textContent("#detail"));
  check(detail.properties.revenue === 42.5, "the detail shows the event's JSON");
  check(detail._trackway.source === "web", "and where it came from");
  check(detail._trackway.delivery.Hook === "delivered", "and its delivery state");

  // Filters: by type, then free text.
  await page.selectOption("#type", "identify");
  check(await page.locator("#rows tr").count() === 1, "type filter keeps the identify only");
  await page.selectOption("#type", "");
  await page.fill("#search", "order completed");
  check(await page.locator("#rows tr").count() === 1, "free-text filter");
  await page.fill("#search", "");

  // Live: an event sent now appears without a reload.
  await page.waitForFunction(() => document.getElementById("status").textContent === "live");
  const response = await fetch(url + "/v1/track", {
    method: "POST",
    headers: { "content-type": "application/json",
               authorization: "Basic " + Buffer.from(writeKey + ":").toString("base64") },
    body: JSON.stringify({ userId: "live-user", event: "Arrived Live" }),
  });
  check(response.status === 200, "the live event was accepted");
  await page.waitForSelector("#rows tr:has-text('Arrived Live')", { timeout: 10000 });

  await page.screenshot({ path: screenshot, fullPage: true });
  console.log("debugger checks passed; screenshot at " + screenshot);
} catch (error) {
  console.error(error.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
