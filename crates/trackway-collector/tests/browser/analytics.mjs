// Segment's browser library, analytics.js (@segment/analytics-next, its UMD build from
// node_modules), in headless Chromium, sending to the collector from a page on another origin
// (this script's own page server, on another port).
// Usage: node analytics.mjs <collector-url> <admin-token> <write-key> <shop-key> <retried-event>
// The shop key's source allows only https://shop.example. Every host name but loopback fails
// to resolve, and every request for one is reported: nothing may need Segment's CDN or API.
// Exits 0 when every check holds; otherwise prints the failed check and exits 1.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const [collector, token, writeKey, shopKey, retriedEvent] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const umd = join(dirname(fileURLToPath(import.meta.url)), "node_modules/@segment/analytics-next/dist/umd");

function check(condition, message) {
  if (!condition) throw new Error("check failed: " + message);
}

/// How long the next page takes to arrive when leaving one: a slow real-world navigation,
/// and room for analytics.js to start its request even when a loaded CI machine holds the
/// renderer back (only then can keepalive carry it past the page's end; the batching mode
/// starts its own on pagehide). The scenarios end when the event arrives, so the wait costs
/// little: about 2 s a run next to 1000 ms.
const NAVIGATION_LATENCY_MS = 3000;

// The page's origin: a page that loads analytics.js, and a second page to navigate to.
const html = (body) => `<!doctype html><html><head><title>shop</title>
<script src="/ajs/index.js"></script></head><body>${body}</body></html>`;
const pages = createServer(async (req, res) => {
  const path = new URL(req.url, "http://page").pathname;
  if (path.startsWith("/ajs/")) {
    const file = normalize(join(umd, path.slice("/ajs/".length)));
    if (!file.startsWith(umd)) { res.writeHead(404).end(); return; }
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": "text/javascript" }).end(body);
    } catch {
      res.writeHead(404).end();
    }
    return;
  }
  // The page a visitor leaves for takes a moment to come, as over a real network: the
  // moment in which analytics.js must get the last event out.
  if (req.url.includes("slow")) await new Promise((resolve) => setTimeout(resolve, NAVIGATION_LATENCY_MS));
  res.writeHead(200, { "content-type": "text/html" })
    .end(html(path === "/next.html" ? "<h1>next</h1>" : '<a id="next" href="/next.html">next</a>'));
});
await new Promise((resolve) => pages.listen(0, "127.0.0.1", resolve));
const origin = `http://127.0.0.1:${pages.address().port}`;
check(origin !== collector, "the page and the collector are on different origins");

/// Every event of the collector, through the admin API (from node, not the page).
async function stored() {
  const response = await fetch(collector + "/api/events?limit=1000", { headers: { authorization: "Bearer " + token } });
  check(response.ok, "admin API answers: " + response.status);
  return (await response.json()).events;
}

/// Polls until `select(events)` is truthy; 20 s at most (a hang guard, not a timing check).
async function until(what, select) {
  const deadline = Date.now() + 20000;
  for (;;) {
    const found = select(await stored());
    if (found) return found;
    check(Date.now() < deadline, "never happened: " + what);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/// Waits a little longer, then checks nothing more arrived: a duplicate would have by now.
async function settled(what, select, count) {
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const events = select(await stored());
  check(events.length === count, `${what}: ${count} stored, not ${events.length}`);
  return events;
}

const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         // Every host name but loopback fails: nothing may need Segment's CDN or API.
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
         "--no-proxy-server"],
});
/// Requests for anything but loopback: there must be none.
const offLoopback = [];

/// A fresh browser context (its own localStorage and cookies) whose requests are logged.
/// (Not intercepted with `route`: a request made as a page goes, as analytics.js's batching
/// mode makes them, would never be let through by an interceptor whose page is gone.)
async function freshContext() {
  const context = await browser.newContext();
  const requests = [];
  if (process.env.DEBUG_AJS) {
    context.on("requestfailed", (r) => console.error("failed:", r.url(), r.failure()?.errorText));
    context.on("requestfinished", async (r) => console.error("finished:", r.method(), r.url(), (await r.response())?.status()));
    context.on("page", (p) => p.on("console", (m) => console.error("console:", m.text())));
  }
  context.on("request", (request) => {
    const url = new URL(request.url());
    if (url.hostname !== "127.0.0.1") offLoopback.push(request.url());
  });
  context.on("request", (request) => requests.push({
    method: request.method(), url: request.url(), body: request.postData(),
    headers: request.headers(),
  }));
  return { context, requests };
}

/// Paths of the requests that went to the collector.
const collectorPaths = (requests) =>
  requests.filter((r) => r.url.startsWith(collector)).map((r) => new URL(r.url).pathname);

/// Loads analytics.js in `page` with `cdnURL` at the collector and `options`; returns its
/// anonymousId.
async function load(page, key, options) {
  return page.evaluate(async ({ key, cdnURL, options }) => {
    if (options && options.updateCDNSettings) {
      options.updateCDNSettings = (settings) => ({ ...settings, metrics: { ...settings.metrics, flushTimer: 100 } });
    }
    const [analytics] = await window.AnalyticsNext.AnalyticsBrowser.load({ writeKey: key, cdnURL }, options);
    window.analytics = analytics;
    return analytics.user().anonymousId();
  }, { key, cdnURL: collector, options });
}

/// identify, track, page, group, alias and screen, as a page calls them.
async function everyCall(page) {
  await page.evaluate(async () => {
    const a = window.analytics;
    await a.identify("user-42", { email: "ada@example.com" });
    await a.track("Order Completed", { revenue: 42.5 });
    await a.page("Docs", "Home");
    await a.group("group-7", { name: "Acme" });
    await a.alias("user-42-new", "user-42");
    await a.screen("Home Screen");
  });
}

/// The six calls arrived once each, with what analytics.js sets and what the collector adds.
async function checkEveryCall(what, anonymousId) {
  const mine = (events) => events.filter((e) => e.anonymousId === anonymousId);
  await until(`${what}: six events`, (events) => mine(events).length >= 6);
  const events = await settled(what, mine, 6);
  const types = events.map((e) => e.type).sort();
  check(JSON.stringify(types) === JSON.stringify(["alias", "group", "identify", "page", "screen", "track"]),
        `${what}: one of each type: ${types}`);
  check(new Set(events.map((e) => e.messageId)).size === 6, `${what}: distinct messageIds`);
  for (const event of events) {
    const c = event.context || {};
    check(event._trackway.source === "web", `${what}: ${event.type} from the web source`);
    check(c.library && c.library.name === "analytics.js", `${what}: ${event.type} context.library: ${JSON.stringify(c.library)}`);
    check(c.page && c.page.url && c.page.url.startsWith(origin), `${what}: ${event.type} context.page: ${JSON.stringify(c.page)}`);
    check(typeof c.userAgent === "string" && c.userAgent.length > 0, `${what}: ${event.type} context.userAgent`);
    check(c.ip === "127.0.0.1", `${what}: ${event.type} context.ip added by the collector: ${c.ip}`);
  }
  const track = events.find((e) => e.type === "track");
  check(track.event === "Order Completed" && track.properties.revenue === 42.5, `${what}: the track's fields`);
  const alias = events.find((e) => e.type === "alias");
  check(alias.previousId === "user-42", `${what}: the alias's previousId: ${JSON.stringify(alias)}`);
}

let failed = null;
try {
  // 1. The default delivery: settings from the collector, one request per message.
  {
    const { context, requests } = await freshContext();
    const page = await context.newPage();
    await page.goto(origin + "/");
    // analytics.js would post its telemetry every 30 s, to Segment's API, were the settings'
    // sampleRate not 0: made to try every 100 ms, it would have by the end of the test.
    const anonymousId = await load(page, writeKey, { updateCDNSettings: "telemetry every 100 ms" });
    check(typeof anonymousId === "string" && anonymousId.length > 0, "an anonymousId");
    await everyCall(page);
    await checkEveryCall("standard delivery", anonymousId);
    await page.waitForTimeout(500);
    const paths = collectorPaths(requests);
    check(paths[0] === `/v1/projects/${writeKey}/settings`, "the settings come from the collector first: " + paths);
    for (const path of ["/v1/i", "/v1/t", "/v1/p", "/v1/g", "/v1/a", "/v1/s"]) {
      check(paths.includes(path), `standard delivery posts to ${path}: ${paths}`);
    }
    const track = requests.find((r) => r.url === collector + "/v1/t");
    check(track.headers["content-type"].startsWith("text/plain"), "analytics.js posts text/plain");
    check((track.headers["authorization"] || "").startsWith("Basic "), "with Basic auth (so preflighted)");
    await context.close();
  }

  // 2. The batching delivery strategy: /v1/b, following the settings' protocol.
  {
    const { context, requests } = await freshContext();
    const page = await context.newPage();
    await page.goto(origin + "/");
    const anonymousId = await load(page, writeKey, {
      integrations: { "Segment.io": { deliveryStrategy: { strategy: "batching", config: { size: 6, timeout: 200 } } } },
    });
    await everyCall(page);
    await checkEveryCall("batching delivery", anonymousId);
    const paths = collectorPaths(requests).filter((p) => !p.includes("/settings"));
    check(paths.length > 0 && paths.every((p) => p === "/v1/b"), "batching posts to /v1/b only: " + paths);
    await context.close();
  }

  // 3. Leaving the page, default delivery: the unsent event is kept in localStorage on
  //    pagehide and sent when the next page loads analytics.js.
  {
    const { context } = await freshContext();
    const page = await context.newPage();
    await page.goto(origin + "/");
    const anonymousId = await load(page, writeKey);
    await Promise.all([
      page.waitForURL(origin + "/next.html"),
      page.evaluate(() => {
        window.analytics.track("Left Default");
        document.getElementById("next").click();
      }),
    ]);
    await load(page, writeKey);
    const mine = (events) => events.filter((e) => e.event === "Left Default" && e.anonymousId === anonymousId);
    await until("leaving with default delivery: the event arrives", (events) => mine(events).length > 0);
    await settled("leaving with default delivery: stored once", mine, 1);
    await context.close();
  }

  // 4. Leaving the page with keepalive: sent as the page goes (the next page never loads
  //    analytics.js, so nothing else could send it).
  {
    const { context } = await freshContext();
    const page = await context.newPage();
    await page.goto(origin + "/");
    const anonymousId = await load(page, writeKey, {
      integrations: { "Segment.io": { deliveryStrategy: { config: { keepalive: true } } } },
    });
    await page.evaluate(() => {
      window.analytics.track("Left Keepalive");
      window.location.href = "/next.html?slow";
    });
    const mine = (events) => events.filter((e) => e.event === "Left Keepalive" && e.anonymousId === anonymousId);
    await until("leaving with keepalive: the event arrives", (events) => mine(events).length > 0);
    await settled("leaving with keepalive: stored once", mine, 1);
    await context.close();
  }

  // 5. Leaving the page in batching mode: the batch is flushed (with keepalive) as the page
  //    goes, long before its 60 s timeout.
  {
    const { context } = await freshContext();
    const page = await context.newPage();
    await page.goto(origin + "/");
    const anonymousId = await load(page, writeKey, {
      integrations: { "Segment.io": { deliveryStrategy: { strategy: "batching", config: { size: 100, timeout: 60000 } } } },
    });
    await page.evaluate(() => {
      window.analytics.track("Left Batching");
      setTimeout(() => { window.location.href = "/next.html?slow"; }, 100);
    });
    const mine = (events) => events.filter((e) => e.event === "Left Batching" && e.anonymousId === anonymousId);
    await until("leaving in batching mode: the batch arrives", (events) => mine(events).length > 0);
    await settled("leaving in batching mode: stored once", mine, 1);
    await context.close();
  }

  // 6. A retried message: stored, answered 503, retried by the page, stored once.
  {
    const { context, requests } = await freshContext();
    const page = await context.newPage();
    await page.goto(origin + "/");
    const anonymousId = await load(page, writeKey);
    await page.evaluate((name) => { window.analytics.track(name); }, retriedEvent);
    const tries = () => requests.filter((r) => r.url === collector + "/v1/t" && (r.body || "").includes(retriedEvent));
    const mine = (events) => events.filter((e) => e.event === retriedEvent && e.anonymousId === anonymousId);
    await until("the retry", () => tries().length >= 2);
    check(tries()[1].headers["x-retry-count"] === "1", "the retry says so: " + JSON.stringify(tries()[1].headers));
    const events = await settled("a retried message is stored once", mine, 1);
    check(events[0].messageId === JSON.parse(tries()[0].body).messageId, "the same messageId");
    await context.close();
  }

  // 7. A source that allows other origins only: refused, nothing stored; and nothing of the
  //    admin API is readable cross-origin, even with the token.
  {
    const { context } = await freshContext();
    const page = await context.newPage();
    await page.goto(origin + "/");
    const refused = await page.evaluate(async ({ collector, shopKey, token }) => {
      const out = {};
      const settings = await fetch(`${collector}/v1/projects/${shopKey}/settings`);
      out.settings = settings.status;
      // analytics.js with its settings inline: its track is refused, and not retried.
      const host = collector.replace("http://", "") + "/v1";
      const [analytics] = await window.AnalyticsNext.AnalyticsBrowser.load({
        writeKey: shopKey,
        cdnSettings: { integrations: { "Segment.io": { apiKey: shopKey, apiHost: host, protocol: "http" } } },
      }, { disableClientPersistence: true });
      const ctx = await analytics.track("From A Stranger");
      out.failedDelivery = Boolean(ctx.failedDelivery());
      const direct = await fetch(`${collector}/v1/t`, {
        method: "POST", headers: { "content-type": "text/plain" },
        body: JSON.stringify({ type: "track", event: "From A Stranger", anonymousId: "x", writeKey: shopKey }),
      });
      out.direct = direct.status;
      for (const path of ["/api/events", "/api/stats"]) {
        try {
          const r = await fetch(collector + path, { headers: { authorization: "Bearer " + token } });
          out[path] = "read: " + r.status + " " + (await r.text()).slice(0, 80);
        } catch (e) {
          out[path] = "refused";
        }
      }
      const opaque = await fetch(collector + "/api/events", { mode: "no-cors" });
      out.opaque = opaque.type + ":" + (await opaque.text()).length;
      return out;
    }, { collector, shopKey, token });
    check(refused.settings === 403, "the shop's settings are refused to this origin: " + JSON.stringify(refused));
    check(refused.failedDelivery, "analytics.js's delivery to the shop source failed: " + JSON.stringify(refused));
    check(refused.direct === 403, "a direct post as the shop is refused: " + JSON.stringify(refused));
    check(refused["/api/events"] === "refused" && refused["/api/stats"] === "refused",
          "the admin API is not readable cross-origin: " + JSON.stringify(refused));
    check(refused.opaque === "opaque:0", "nor through no-cors: " + refused.opaque);
    await settled("nothing from a refused origin", (events) => events.filter((e) => e.event === "From A Stranger"), 0);
    await context.close();
  }

  // 8. The debugger shows the page's events like any others, and filters by source: one
  //    server-side event (no Origin) of the shop source is the other source's only row.
  {
    const response = await fetch(collector + "/v1/track", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ writeKey: shopKey, userId: "backend", event: "Server Side" }),
    });
    check(response.ok, "a server-side event of the shop source: " + response.status);
    const { context } = await freshContext();
    const page = await context.newPage();
    await page.goto(collector + "/#token=" + token);
    await page.waitForSelector("#main:not([hidden])");
    await page.waitForFunction(() => Array.from(document.querySelectorAll("#rows tr")).some((tr) => tr.textContent.includes("Order Completed")));
    const options = await page.$$eval("#source option", (os) => os.map((o) => o.value));
    check(options.includes("web") && options.includes("shop"), "the source filter offers both sources: " + options);
    // The filter asks the server, so the list changes when its answer arrives: wait for it
    // (bounded), then check what it shows.
    const rowsOnceSettled = async (done) => {
      await page.waitForFunction(done, null, { timeout: 10000 }).catch(() => {});
      return page.$$eval("#rows tr", (rows) => rows.map((r) => r.textContent));
    };
    await page.selectOption("#source", "shop");
    const shopRows = await rowsOnceSettled(() =>
      Array.from(document.querySelectorAll("#rows tr")).every((tr) => tr.textContent.includes("Server Side")));
    check(shopRows.length === 1 && shopRows[0].includes("Server Side"), "filtered to the shop source: " + shopRows);
    await page.selectOption("#source", "web");
    const webRows = await rowsOnceSettled(() =>
      Array.from(document.querySelectorAll("#rows tr")).length > 6);
    check(webRows.length > 6 && webRows.every((r) => r.includes("web") && !r.includes("Server Side")),
          "filtered to the web source, the page's events: " + webRows.length);
    check(webRows.some((r) => r.includes("page") && r.includes("Home") && !r.includes("Home Screen")),
          "the page view is shown");
    await context.close();
  }

  check(offLoopback.length === 0, "requests that would leave loopback: " + offLoopback.join(", "));
} catch (error) {
  failed = error;
} finally {
  await browser.close();
  pages.close();
}
if (failed) {
  console.error(failed.stack || String(failed));
  process.exit(1);
}
console.log("analytics.js checks passed");
