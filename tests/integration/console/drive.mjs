// Drives the admin console in headless chromium for test_console.py.
// Prints one "PASS name" / "FAIL name: why" line per step and stops at the
// first failure (later steps depend on earlier ones).
// usage: node drive.mjs CONFIG.json   (see test_console.py for the fields)
import fs from "node:fs";
import path from "node:path";
import puppeteer from "puppeteer-core";

const C = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const ZH = C.lang === "zh";
const XSS = "<img src=x onerror=alert(1)>";
const L = ZH
  ? { overview: "概览", channels: "渠道", keys: "令牌", usage: "用量", requests: "请求", signin: "登录", bad: "令牌无效。", title: "龙门控制台", ok: "配置检查通过。", reload: "已请求重新加载。", disable: "停用", disabled: "已停用", readonly: "只读" }
  : { overview: "Overview", channels: "Channels", keys: "Keys", usage: "Usage", requests: "Requests", signin: "Sign in", bad: "Invalid token.", title: "Longmen console", ok: "The configuration checks out.", reload: "Reload requested.", disable: "Disable", disabled: "disabled", readonly: "read-only" };

let browser, page, step = "launch";
const alerts = [];
const wait = (ms) => new Promise((r) => setTimeout(r, ms));
function check(cond, msg) { if (!cond) throw new Error(msg); }
async function shot(name) {
  fs.mkdirSync(C.shots, { recursive: true });
  await page.screenshot({ path: path.join(C.shots, `${C.lang}-${name}.png`), fullPage: true });
}
const text = (sel) => page.$eval(sel, (e) => e.textContent);
async function waitText(sel, want, ms = 8000) {
  await page.waitForFunction((s, w) => { const e = document.querySelector(s); return e && e.textContent.includes(w); }, { timeout: ms }, sel, want)
    .catch(async () => { throw new Error(`${sel} never showed ${JSON.stringify(want)}; it has ${JSON.stringify(await page.$eval(sel, (e) => e.textContent).catch(() => "(missing)"))}`); });
}
// Opens page p and waits until it is drawn. route() marks the nav link and
// shows "loading" in one step, so waiting for both cannot see the previous
// page. A click on the current page's link changes no hash, so that case
// re-runs route() itself to fetch fresh data.
async function go(p) {
  const same = await inPage((id) => location.hash === "#" + id, p);
  if (same) await inPage(() => window.dispatchEvent(new HashChangeEvent("hashchange")));
  else await page.click(`#nav-${p}`);
  await page.waitForFunction((id) => document.querySelector("#nav-" + id).getAttribute("aria-current") === "page" &&
    !document.querySelector("#main .loading"), { timeout: 15000 }, p);
  const err = await page.$eval("#main > p.error", (e) => e.textContent).catch(() => null);
  check(err === null, `page ${p} failed: ${err}`);
}
async function chat(key, n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const r = await fetch(`${C.gw}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json", Authorization: "Bearer " + key },
      body: JSON.stringify({ model: "m1", messages: [{ role: "user", content: "hi" }] }) });
    const js = await r.json();
    check(r.status === 200, `chat ${r.status} ${JSON.stringify(js)}`);
    out.push(js.choices[0].message.content);
  }
  return out;
}
async function signIn(token) {
  await page.waitForSelector("#token");
  await page.type("#token", token);
  await page.click("#login-submit");
}
const inPage = (fn, ...args) => page.evaluate(fn, ...args);

const steps = [
  ["login_page", async () => {
    await page.goto(C.admin + "/", { waitUntil: "load" });
    await page.waitForSelector("#token");
    check((await text("#login-submit")) === L.signin, "sign-in button: " + (await text("#login-submit")));
    check((await page.title()) === L.title, "title " + (await page.title()));
    await shot("login");
  }],
  ["wrong_token_refused", async () => {
    await signIn("not-the-token-0123456789abcdef");
    await waitText("#login-error", L.bad);
    await page.$eval("#token", (e) => (e.value = ""));
  }],
  ["sign_in_cookie", async () => {
    await signIn(C.token);
    await page.waitForSelector("#nav-overview");
    check((await text("#nav-overview")) === L.overview && (await text("#nav-channels")) === L.channels &&
      (await text("#nav-keys")) === L.keys && (await text("#nav-usage")) === L.usage, "nav labels");
    const ck = (await page.cookies()).find((c) => c.name === "lm_console");
    check(ck && ck.httpOnly && ck.sameSite === "Strict" && ck.expires > Date.now() / 1000, "cookie flags " + JSON.stringify(ck));
    check(!(await inPage(() => document.cookie)).includes("lm_console"), "script can read the cookie");
    await page.waitForSelector("#chart-requests");
  }],
  ["create_key_secret_once", async () => {
    await go("keys");
    await page.click("#key-add");
    await page.type("#kf-name", XSS);
    await page.type("#kf-quota", "10");
    await page.type("#kf-models", "m1");
    await page.click("#kf-save");
    await page.waitForSelector("#key-secret");
    C.secret = await text("#key-secret");
    check(/^sk-[A-Za-z0-9_-]{20,}$/.test(C.secret), "secret " + C.secret);
    check(await page.$("#key-copy"), "copy button");
    await shot("keys-secret");
    await go("overview");
    await go("keys");
    check(!(await page.$("#key-secret")), "the secret is shown a second time");
    check(!(await page.content()).includes(C.secret), "the secret is still in the page");
  }],
  ["xss_name_is_text", async () => {
    const cells = await page.$$eval("#keys td", (tds) => tds.map((td) => td.textContent));
    check(cells.includes(XSS), "the name is not shown literally: " + JSON.stringify(cells.slice(0, 8)));
    check((await page.$$("#keys img")).length === 0, "an <img> was created from the name");
    await page.type("#key-search", "onerror");
    check((await page.$$eval("#keys tbody tr", (r) => r.length)) === 1, "search");
    await shot("keys");
  }],
  ["edit_key_limits", async () => {
    await page.click('#keys button[data-act="edit"]');
    await page.waitForSelector("#kf-rpm");
    check((await page.$eval("#kf-quota", (e) => e.value)).startsWith("10"), "quota prefilled");
    await page.$eval("#kf-rpm", (e) => (e.value = ""));
    await page.type("#kf-rpm", "120");
    await page.$eval("#kf-quota", (e) => (e.value = ""));
    await page.type("#kf-quota", "-5");
    await page.click("#kf-save");
    await page.waitForFunction(() => document.querySelector("#kf-quota-error").textContent.length > 0 || document.querySelector("#kf-error").textContent.length > 0, { timeout: 5000 });
    await page.$eval("#kf-quota", (e) => (e.value = ""));
    await page.type("#kf-quota", "10");
    await page.click("#kf-save");
    await page.waitForFunction(() => [...document.querySelectorAll("#keys tbody tr")].some((r) => r.cells[5].textContent.includes("120 rpm")), { timeout: 8000 });
  }],
  ["channel_bad_setting_message", async () => {
    await go("channels");
    await page.click("#ch-add");
    await page.type("#cf-name", "webch");
    await page.$eval("#cf-plugin", (e) => (e.value = ""));
    await page.type("#cf-plugin", "openai");
    await page.type("#cf-models", "m1");
    await page.type("#cf-settings", `base_url=${C.upA}/v1\napi_key=env:LM_TEST_UP_KEY\nbogus_setting=1`);
    await page.click("#cf-save");
    await waitText("#cf-settings-error", "bogus_setting");
    await shot("channel-error");
  }],
  ["channel_created", async () => {
    await page.$eval("#cf-settings", (e) => (e.value = ""));
    await page.type("#cf-settings", `base_url=${C.upA}/v1\napi_key=env:LM_TEST_UP_KEY`);
    await page.click("#cf-save");
    await page.waitForSelector('#channels button[data-name="webch"][data-act="toggle"]', { timeout: 15000 });
    const file = await page.$$eval("#channels tbody tr", (rows) => rows.filter((r) => r.cells[0].textContent === "filech").map((r) => r.cells[7].textContent));
    check(file.length === 1 && !file[0].includes("Disable") && !file[0].includes("停用"), "file channel must be read-only");
    await shot("channels");
  }],
  ["traffic_in_overview_and_usage", async () => {
    const got = await chat(C.secret, 4);
    check(got.every((c) => c === "A:m1"), "served by webch: " + got);
    for (let i = 0; ; i++) {
      await go("overview");
      const total = Number(await page.$eval("#chart-requests", (e) => e.getAttribute("data-total")));
      if (total >= 4) break;
      check(i < 40, "overview chart total stays " + total);
      await wait(250);
    }
    check(await page.$$eval("#chart-requests polyline", (p) => p.length) >= 2, "one line for the total and one per model");
    await shot("overview");
    await page.setViewport({ width: 390, height: 844, isMobile: true });
    await go("channels");
    await shot("phone-channels");
    await page.setViewport({ width: 1280, height: 900 });
    await go("usage");
    await page.waitForSelector("#usage-rows");
    const rows = await page.$$eval("#usage-rows tbody tr", (r) => r.map((x) => [...x.cells].map((c) => c.textContent)));
    check(rows.length >= 4 && rows.every((r) => r[3] === "webch" && r[2] === "m1"), "usage rows " + JSON.stringify(rows.slice(0, 2)));
    check(rows[0][1] === XSS, "the key's name in the usage table is text: " + rows[0][1]);
    await shot("usage");
    await page.type("#uf-channel", "filech");
    await page.click("#uf-apply");
    await page.waitForSelector("#usage-rows-empty");
  }],
  ["csv_export", async () => {
    const cdp = await page.createCDPSession();
    const dir = fs.mkdtempSync(path.join(C.shots, "dl-"));
    await cdp.send("Browser.setDownloadBehavior", { behavior: "allow", downloadPath: dir });
    await page.$eval("#uf-channel", (e) => { e.value = ""; e.dispatchEvent(new Event("input")); });
    await page.click("#uf-apply");
    await page.waitForSelector("#usage-rows");
    await page.click("#uf-csv");
    let csv = null;
    for (let i = 0; i < 40 && csv === null; i++) {
      const f = path.join(dir, "longmen-usage.csv");
      if (fs.existsSync(f)) csv = fs.readFileSync(f, "utf8");
      else await wait(100);
    }
    check(csv && csv.startsWith("created_at_ms,request_id") && csv.split("\r\n").length >= 6, "csv " + (csv || "").slice(0, 200));
    check(csv.includes('"' + XSS.replace(/"/g, '""') + '"') || csv.includes("<img"), "csv carries the key name");
    fs.rmSync(dir, { recursive: true, force: true });
  }],
  ["disable_channel_fails_over", async () => {
    await go("channels");
    await page.click('#channels button[data-name="webch"][data-act="toggle"]');
    await page.waitForFunction((d) => [...document.querySelectorAll("#channels tbody tr")].some((r) => r.cells[0].textContent === "webch" && r.cells[6].textContent.includes(d)),
      { timeout: 15000 }, L.disabled);
    const got = await chat(C.secret, 2);
    check(got.every((c) => c === "B:m1"), "after disabling, the file channel serves: " + got);
    await go("requests");
    await page.waitForFunction(() => [...document.querySelectorAll("#requests tbody tr")].some((r) => r.cells[4].textContent === "filech"), { timeout: 8000 });
    await shot("requests");
  }],
  ["csrf_less_post_refused", async () => {
    const st = await inPage(async () => (await fetch("/admin/keys", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: "csrf", quota: "1" }) })).status);
    check(st === 403, "POST without X-CSRF-Token: " + st);
    // a page of another origin (the data plane) posts to the admin API with the cookie
    const other = await browser.newPage();
    await other.goto(C.gw + "/v1/models").catch(() => {});
    const st2 = await other.evaluate(async (admin) => {
      try {
        await fetch(admin + "/admin/keys", { method: "POST", mode: "no-cors", credentials: "include", headers: { "Content-Type": "text/plain" }, body: '{"name":"cross","quota":"1"}' });
      } catch (e) { return "blocked"; }
      return "sent";
    }, C.admin);
    await other.close();
    const names = await inPage(async () => (await (await fetch("/admin/keys")).json()).data.map((k) => k.name));
    check(!names.includes("csrf") && !names.includes("cross"), "a key was created without the CSRF token: " + names + " " + st2);
  }],
  ["check_and_reload_buttons", async () => {
    await page.click("#btn-check");
    await waitText("#check-result", L.ok, 15000);
    const orig = fs.readFileSync(C.conf, "utf8");
    const line = orig.split("\n").length + 1;
    fs.appendFileSync(C.conf, "\nbogus_directive 1\n");
    try {
      await page.click("#btn-check");
      await waitText("#check-result", `${C.conf}:${line}`, 15000);
      await waitText("#check-result", "bogus_directive", 1000);
      await shot("check-error");
    } finally {
      fs.writeFileSync(C.conf, orig);
    }
    await page.click("#btn-reload");
    await waitText("#toast", L.reload, 5000);
  }],
  ["sign_out", async () => {
    await page.click("#btn-signout");
    await page.waitForSelector("#token");
    const st = await inPage(async () => (await fetch("/admin/keys")).status);
    check(st === 401, "after sign-out: " + st);
    await page.goto(C.admin + "/#keys", { waitUntil: "load" });
    await page.waitForSelector("#token");
  }],
  ["read_only_console", async () => {
    await signIn(C.readToken);
    await page.waitForSelector("#nav-overview");
    check((await text("#role")) === L.readonly, "role badge " + (await text("#role")));
    check(!(await page.$("#btn-reload")) && !(await page.$("#btn-check")), "no reload/check buttons");
    await go("keys");
    check(!(await page.$("#key-add")) && !(await page.$('#keys button[data-act="delete"]')), "no key buttons");
    await go("channels");
    check(!(await page.$("#ch-add")) && !(await page.$('#channels button[data-act="toggle"]')), "no channel buttons");
    const st = await inPage(async () => {
      const s = await (await fetch("/admin/session")).json();
      const r = await fetch("/admin/channels/webch", { method: "PATCH", headers: { "Content-Type": "application/json", "X-CSRF-Token": s.csrf_token }, body: '{"enabled":true}' });
      return r.status;
    });
    check(st === 403, "read-only PATCH with CSRF: " + st);
    await shot("readonly");
    await page.click("#btn-signout");
    await page.waitForSelector("#token");
  }],
  ["language_switch", async () => {
    const other = ZH ? "en" : "zh";
    await page.select("#lang", other);
    await waitText("#login-submit", ZH ? "Sign in" : "登录");
    await page.select("#lang", C.lang);
    await waitText("#login-submit", L.signin);
  }],
  ["no_alert_ran", async () => {
    check(alerts.length === 0, "a dialog opened: " + alerts.join(" | "));
  }],
];

try {
  browser = await puppeteer.launch({ executablePath: C.chromium, headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", `--lang=${ZH ? "zh-CN" : "en-US"}`] });
  page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  await page.setExtraHTTPHeaders({ "Accept-Language": ZH ? "zh-CN,zh;q=0.9" : "en-US,en;q=0.9" });
  page.on("dialog", async (d) => { alerts.push(d.message()); await d.dismiss(); });
  page.on("pageerror", (e) => alerts.push("page error: " + e.message));
  for (const [name, fn] of steps) {
    step = name;
    await fn();
    console.log(`PASS console_${C.lang}_${name}`);
  }
} catch (e) {
  console.log(`FAIL console_${C.lang}_${step}: ${e.message}`);
  if (page) await shot("failure-" + step).catch(() => {});
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
}
