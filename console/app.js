/* The Longmen admin console (docs/console.md). Plain JavaScript, no
 * framework, no network but this origin. Every piece of text that comes
 * from the server (names, models, messages) is put in the page with
 * textContent through h() below, never as HTML. */
"use strict";
(function () {
  const S = { role: null, csrf: null, lang: "en", page: "overview", secret: null, win: "hour", by: "model" };

  /* ---------------------------------------------------------------- text */
  function pickLang() {
    const saved = localStorage.getItem("lm.lang");
    if (saved === "en" || saved === "zh") return saved;
    return document.documentElement.lang.toLowerCase().startsWith("zh") ? "zh" : "en";
  }
  function t(key, vars) {
    const tab = window.LM_I18N[S.lang] || {};
    let s = tab[key] !== undefined ? tab[key] : window.LM_I18N.en[key] !== undefined ? window.LM_I18N.en[key] : key;
    for (const k in vars || {}) s = s.split("{" + k + "}").join(String(vars[k]));
    return s;
  }
  const locale = () => (S.lang === "zh" ? "zh-CN" : "en-US");
  const fmtNum = (v, d) => new Intl.NumberFormat(locale(), { maximumFractionDigits: d === undefined ? 0 : d }).format(v);
  const fmtMoney = (micro) =>
    new Intl.NumberFormat(locale(), { minimumFractionDigits: 2, maximumFractionDigits: 6 }).format(micro / 1e6);
  const fmtTime = (ms) =>
    new Intl.DateTimeFormat(locale(), { dateStyle: "short", timeStyle: "medium" }).format(new Date(ms));
  const fmtClock = (ms) => new Intl.DateTimeFormat(locale(), { hour: "2-digit", minute: "2-digit" }).format(new Date(ms));

  /* ----------------------------------------------------------------- DOM */
  /* h("tag.class", {attr: v, onclick: f}, child...) - strings become text nodes. */
  function h(spec, attrs, ...kids) {
    /* spec: tag, then any of #id and .class, e.g. "p.error#login-error" */
    const m = spec.match(/^[a-z0-9]+/);
    const el = document.createElement(m[0]);
    const id = spec.match(/#([A-Za-z0-9_-]+)/);
    const cls = spec.slice(m[0].length).replace(/#[A-Za-z0-9_-]+/, "").split(".").filter(Boolean);
    if (id) el.id = id[1];
    if (cls.length) el.className = cls.join(" ");
    for (const k in attrs || {}) {
      const v = attrs[k];
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "value") el.value = v;
      else if (k === "checked") el.checked = !!v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of kids.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return el;
  }
  const $ = (sel) => document.querySelector(sel);
  /* Replace el's children, skipping the null/false of conditional parts. */
  function fill(el, ...kids) {
    el.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false && k !== ""));
  }
  function toast(msg, bad) {
    const el = $("#toast");
    el.textContent = msg;
    el.className = bad ? "toast bad" : "toast";
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (el.className = "toast hidden"), 6000);
  }

  /* ----------------------------------------------------------------- API */
  async function api(method, path, body) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && S.csrf) headers["X-CSRF-Token"] = S.csrf;
    const r = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let js = null;
    const txt = await r.text();
    try { js = txt ? JSON.parse(txt) : null; } catch (e) { js = null; }
    if (r.status === 401 && path !== "/admin/session") {
      S.role = null;
      renderLogin(t("msg.session_over"));
      throw new Error("signed out");
    }
    return { status: r.status, js, headers: r.headers };
  }
  const errMsg = (res) => (res.js && res.js.error && res.js.error.message) || "HTTP " + res.status;

  /* --------------------------------------------------------------- shell */
  function langSwitch() {
    const sel = h("select#lang", { "aria-label": t("lang.label"), onchange: (e) => {
      S.lang = e.target.value;
      localStorage.setItem("lm.lang", S.lang);
      document.documentElement.lang = S.lang === "zh" ? "zh-CN" : "en";
      S.role ? renderShell() : renderLogin();
    } }, h("option", { value: "zh" }, "中文"), h("option", { value: "en" }, "English"));
    sel.value = S.lang;
    return sel;
  }

  function renderLogin(note) {
    document.title = t("app.title");
    const err = h("p.error#login-error", { role: "alert" }, note || "");
    const input = h("input#token", { type: "password", autocomplete: "current-password", required: true });
    const form = h("form.login", { onsubmit: async (e) => {
      e.preventDefault();
      const res = await api("POST", "/admin/session", { token: input.value });
      if (res.status === 200) {
        S.role = res.js.role; S.csrf = res.js.csrf_token;
        input.value = "";
        renderShell();
      } else if (res.status === 429) {
        err.textContent = t("login.blocked", { s: res.headers.get("Retry-After") || "60" });
      } else {
        err.textContent = t("login.bad");
      }
    } },
      h("h1", {}, t("app.title")),
      h("label", { for: "token" }, t("login.token")), input,
      h("p.hint", {}, t("login.hint")),
      h("button#login-submit", { type: "submit" }, t("login.submit")), err);
    fill($("#app"), h("div.topbar", {}, h("span.brand", {}, "Longmen"), langSwitch()), form, h("div#toast.toast.hidden", { role: "status" }));
    input.focus();
  }

  const PAGES = ["overview", "channels", "keys", "usage", "requests"];
  function renderShell() {
    document.title = t("app.title");
    const nav = h("nav", { "aria-label": "main" }, PAGES.map((p) =>
      h("a", { href: "#" + p, id: "nav-" + p, "aria-current": S.page === p ? "page" : null }, t("nav." + p))));
    const admin = S.role === "admin";
    const tools = h("div.tools", {},
      h("span.badge#role", {}, t("role." + S.role)),
      admin && h("button#btn-reload", { onclick: doReload }, t("btn.reload")),
      admin && h("button#btn-check", { onclick: doCheck }, t("btn.check")),
      langSwitch(),
      h("button#btn-signout", { onclick: doSignOut }, t("btn.signout")));
    fill($("#app"), 
      h("header.topbar", {}, h("span.brand", {}, "Longmen"), nav, tools),
      h("div#checkout"),
      !admin && h("p.note#readonly-note", {}, t("msg.readonly")),
      h("main#main", { tabindex: "-1" }),
      h("div#toast.toast.hidden", { role: "status" }));
    route();
  }

  async function doReload() {
    const res = await api("POST", "/admin/reload");
    res.status === 202 ? toast(t("msg.reload_requested")) : toast(t("msg.error", { m: errMsg(res) }), true);
  }
  async function doCheck() {
    const res = await api("POST", "/admin/check");
    const box = $("#checkout");
    if (res.status !== 200) return toast(t("msg.error", { m: errMsg(res) }), true);
    if (res.js.ok) return fill(box, h("p.ok#check-result", {}, t("msg.check_ok")));
    fill(box, h("div.bad#check-result", {}, h("p", {}, t("msg.check_failed")),
      h("ul", {}, res.js.errors.map((e) => h("li", {}, h("code", {}, e.file ? e.file + ":" + e.line : ""), " ", e.message)))));
  }
  async function doSignOut() {
    await api("DELETE", "/admin/session");
    S.role = null; S.csrf = null;
    renderLogin();
  }

  function route() {
    const p = location.hash.replace(/^#/, "");
    S.page = PAGES.includes(p) ? p : "overview";
    document.querySelectorAll("nav a").forEach((a) => a.setAttribute("aria-current", a.id === "nav-" + S.page ? "page" : "false"));
    const main = $("#main");
    if (!main) return;
    if (S.page !== "keys") S.secret = null; /* the secret is shown once */
    fill(main, h("p.loading", {}, t("msg.loading")));
    ({ overview: pageOverview, channels: pageChannels, keys: pageKeys, usage: pageUsage, requests: pageRequests })[S.page](main)
      .catch((e) => { if (e.message !== "signed out") fill(main, h("p.error", {}, t("msg.error", { m: e.message }))); });
  }
  window.addEventListener("hashchange", () => S.role && route());

  function table(id, cols, rows, empty) {
    if (!rows.length) return h("p.empty#" + id + "-empty", {}, empty);
    return h("div.scroll", {}, h("table#" + id, {},
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))))));
  }
  function field(id, label, input, help) {
    return h("div.field", {}, h("label", { for: id }, label), input, help || null, h("p.field-error", { id: id + "-error", role: "alert" }));
  }

  /* ------------------------------------------------------------ overview */
  /* A line chart in SVG: one polyline per series over the buckets. */
  function chart(id, title, series, fromMs, width, valueFmt) {
    const W = 600, H = 160, P = 28;
    let max = 0;
    for (const s of series) for (const v of s.values) max = Math.max(max, v);
    const n = series.length ? series[0].values.length : 0;
    const total = series.length ? series[0].sum : 0;
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", title);
    svg.setAttribute("id", id);
    svg.setAttribute("data-total", String(total));
    const add = (tag, a, text) => {
      const e = document.createElementNS(ns, tag);
      for (const k in a) e.setAttribute(k, a[k]);
      if (text !== undefined) e.textContent = text;
      svg.appendChild(e);
      return e;
    };
    add("line", { x1: P, y1: H - P, x2: W - 4, y2: H - P, class: "axis" });
    add("text", { x: 2, y: 12, class: "tick" }, valueFmt(max));
    add("text", { x: P, y: H - 8, class: "tick" }, fmtClock(fromMs));
    add("text", { x: W - 60, y: H - 8, class: "tick" }, fmtClock(fromMs + n * width));
    series.forEach((s, i) => {
      const pts = s.values.map((v, k) => {
        const x = P + (k * (W - P - 4)) / Math.max(1, n - 1);
        const y = H - P - (max ? (v / max) * (H - P - 16) : 0);
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      add("polyline", { points: pts.join(" "), class: "line c" + (i % 6) });
    });
    const legend = h("ul.legend", {}, series.map((s, i) => h("li", {}, h("span.swatch.c" + (i % 6)), s.name)));
    return h("figure.chart", {}, h("figcaption", {}, title, " ", h("span.total", {}, t("ov.total", { v: valueFmt(total) }))), svg, legend);
  }

  async function pageOverview(main) {
    const [st, se] = await Promise.all([api("GET", "/admin/status"), api("GET", `/admin/usage/series?window=${S.win}&group_by=${S.by}`)]);
    if (st.status !== 200) throw new Error(errMsg(st));
    if (se.status !== 200) throw new Error(errMsg(se));
    const s = st.js, d = se.js, secs = d.bucket_ms / 1000;
    const pick = (name) => [{ name: t("col.requests"), g: d.total }, ...d.groups.map((g) => ({ name: g.group, g }))];
    const rate = (g) => g.requests.map((v) => v / secs);
    const errs = (g) => g.requests.map((v, i) => (v ? (100 * g.errors[i]) / v : 0));
    const mk = (fn, sumFn) => pick().map((x) => ({ name: x.name, values: fn(x.g), sum: sumFn(x.g) }));
    const sum = (a) => a.reduce((p, v) => p + v, 0);
    const totalReq = sum(d.total.requests);
    const controls = h("div.controls", {},
      h("label", { for: "win" }, t("ov.window")),
      sel("win", [["hour", t("ov.hour")], ["day", t("ov.day")]], S.win, (v) => { S.win = v; route(); }),
      h("label", { for: "by" }, t("ov.group_by")),
      sel("by", [["model", t("ov.by_model")], ["channel", t("ov.by_channel")]], S.by, (v) => { S.by = v; route(); }),
      h("button#ov-refresh", { onclick: route }, t("btn.refresh")));
    fill(main, 
      h("h2", {}, t("nav.overview")),
      h("div.cards", {},
        h("div.card", {}, h("span.label", {}, t("ov.generation")), h("span.big#ov-generation", {}, fmtNum(s.generation))),
        h("div.card", {}, h("span.label", {}, t("ov.inflight")), h("span.big#ov-inflight", {}, fmtNum(s.inflight))),
        h("div.card", {}, h("span.label", {}, t("col.requests")), h("span.big#ov-requests", {}, fmtNum(totalReq)))),
      controls,
      totalReq ? null : h("p.empty#ov-empty", {}, t("ov.no_traffic")),
      h("div.charts", {},
        chart("chart-requests", t("ov.requests"), mk(rate, (g) => sum(g.requests)), d.from_ms, d.bucket_ms, (v) => fmtNum(v, 2)),
        chart("chart-errors", t("ov.errors"), mk(errs, (g) => (sum(g.requests) ? (100 * sum(g.errors)) / sum(g.requests) : 0)), d.from_ms, d.bucket_ms, (v) => fmtNum(v, 1) + "%"),
        chart("chart-tokens", t("ov.tokens"), mk((g) => g.tokens, (g) => sum(g.tokens)), d.from_ms, d.bucket_ms, (v) => fmtNum(v)),
        chart("chart-cost", t("ov.cost"), mk((g) => g.cost_micro.map((v) => v / 1e6), (g) => sum(g.cost_micro) / 1e6), d.from_ms, d.bucket_ms, (v) => fmtMoney(v * 1e6))),
      h("h3", {}, t("ov.plugins")),
      table("plugins", [t("col.name"), t("col.version"), t("col.abi")], s.plugins.map((p) => [p.name, p.version, p.abi]), ""),
      h("h3", {}, t("ov.scripts")),
      table("scripts", [t("col.name"), t("col.path")], s.scripts.map((x) => [x.name, x.path]), t("ov.no_scripts")));
  }
  function sel(id, opts, cur, onchange) {
    const e = h("select", { id, onchange: (ev) => onchange(ev.target.value) }, opts.map(([v, l]) => h("option", { value: v }, l)));
    e.value = cur;
    return e;
  }

  /* ------------------------------------------------------------ channels */
  function healthText(m) {
    if (m.held_for_ms > 0) return t("h.held", { s: Math.ceil(m.held_for_ms / 1000) });
    if (m.state === "ejected") return t("h.ejected", { s: Math.ceil(m.ejected_for_ms / 1000) });
    return t("h." + m.state);
  }
  const splitList = (s) => s.split(/[\n,]/).map((x) => x.trim()).filter(Boolean);

  async function pageChannels(main) {
    const [cl, st] = await Promise.all([api("GET", "/admin/channels"), api("GET", "/admin/status")]);
    if (cl.status !== 200) throw new Error(errMsg(cl));
    const health = {};
    for (const c of (st.js && st.js.channels) || []) health[c.name] = c.models;
    const admin = S.role === "admin";
    const rows = cl.js.data.map((c) => {
      const stored = c.source === "store";
      const hl = (health[c.name] || []).map((m) => h("div.health." + (m.healthy ? "good" : "bad"), {},
        m.model + ": " + healthText(m) + (m.latency_ms !== null ? " · " + fmtNum(m.latency_ms) + " ms" : "") + (m.inflight ? " · " + t("ov.inflight") + " " + m.inflight : "")));
      const status = [stored ? t("ch.store") : t("ch.file"), c.enabled === false ? t("ch.disabled") : c.active ? t("ch.active") : t("ch.inactive"), c.shadowed ? t("ch.shadowed") : null].filter(Boolean).join(" · ");
      const acts = admin && stored ? h("div.actions", {},
        h("button", { "data-act": "edit", "data-name": c.name, onclick: () => channelForm(main, c) }, t("btn.edit")),
        h("button", { "data-act": "toggle", "data-name": c.name, onclick: async () => {
          const res = await api("PATCH", "/admin/channels/" + encodeURIComponent(c.name), { enabled: c.enabled === false });
          res.status === 200 ? (toast(t("msg.saved")), route()) : toast(t("msg.error", { m: errMsg(res) }), true);
        } }, c.enabled === false ? t("btn.enable") : t("btn.disable")),
        confirmButton(t("btn.delete"), { "data-act": "delete", "data-name": c.name }, async () => {
          const res = await api("DELETE", "/admin/channels/" + encodeURIComponent(c.name));
          res.status === 200 ? (toast(t("msg.deleted")), route()) : toast(t("msg.error", { m: errMsg(res) }), true);
        })) : "";
      return [c.name, c.plugin, (c.models || []).join(", "), String(c.priority ?? ""), String(c.weight ?? ""), h("div", {}, hl), status, acts];
    });
    fill(main, h("h2", {}, t("ch.title")),
      admin ? h("button#ch-add", { onclick: () => channelForm(main, null) }, t("ch.add")) : null,
      h("div#ch-form"),
      table("channels", [t("col.name"), t("col.plugin"), t("col.models"), t("col.priority"), t("col.weight"), t("col.health"), t("col.status"), t("col.actions")], rows, t("ch.empty")));
  }

  /* A button that asks for a second press before it acts. */
  function confirmButton(label, attrs, act) {
    let armed = false;
    const b = h("button.danger", Object.assign({}, attrs, { onclick: async () => {
      if (!armed) { armed = true; b.textContent = t("btn.confirm_delete"); return; }
      await act();
    }, onblur: () => { armed = false; b.textContent = label; } }), label);
    return b;
  }

  function channelForm(main, c) {
    const box = $("#ch-form");
    const v = c || { name: "", plugin: "openai", models: [], settings: {}, priority: 0, weight: 1, enabled: true };
    const settingsText = Object.entries(v.settings || {}).map(([k, x]) => k + "=" + (Array.isArray(x) ? x.join(",") : x)).join("\n");
    const f = {
      name: h("input#cf-name", { value: v.name, required: true, disabled: !!c }),
      plugin: h("input#cf-plugin", { value: v.plugin, required: true }),
      models: h("textarea#cf-models", { rows: 2, value: (v.models || []).join("\n") }),
      settings: h("textarea#cf-settings", { rows: 3, value: settingsText, spellcheck: "false" }),
      priority: h("input#cf-priority", { type: "number", min: 0, value: v.priority }),
      weight: h("input#cf-weight", { type: "number", min: 1, value: v.weight }),
      enabled: h("input#cf-enabled", { type: "checkbox", checked: v.enabled !== false }),
    };
    const formErr = h("p.error#cf-error", { role: "alert" });
    const form = h("form.panel#channel-form", { onsubmit: async (e) => {
      e.preventDefault();
      box.querySelectorAll(".field-error").forEach((x) => (x.textContent = ""));
      formErr.textContent = "";
      const settings = {};
      for (const line of f.settings.value.split("\n").map((x) => x.trim()).filter(Boolean)) {
        const i = line.indexOf("=");
        if (i <= 0) { $("#cf-settings-error").textContent = t("ch.bad_setting"); return; }
        const k = line.slice(0, i).trim(), val = line.slice(i + 1).trim(), was = (v.settings || {})[k];
        /* a rotating secret is an array: unchanged text sends it back as it was */
        settings[k] = Array.isArray(was) && was.join(",") === val ? was : val;
      }
      const body = { plugin: f.plugin.value.trim(), models: splitList(f.models.value), settings,
        priority: Number(f.priority.value), weight: Number(f.weight.value), enabled: f.enabled.checked };
      let res;
      if (c) res = await api("PATCH", "/admin/channels/" + encodeURIComponent(c.name), body);
      else res = await api("POST", "/admin/channels", Object.assign({ name: f.name.value.trim() }, body));
      if (res.status === 200 || res.status === 201) { toast(t("msg.saved")); return route(); }
      /* the parser's message goes next to the field it is about */
      const param = (res.js && res.js.error && res.js.error.param) || "";
      const key = param.split(".")[0];
      const slot = $("#cf-" + (f[key] ? key : "none") + "-error");
      (slot || formErr).textContent = errMsg(res);
    } },
      h("h3", {}, c ? t("ch.edit", { n: c.name }) : t("ch.add")),
      field("cf-name", t("ch.f.name"), f.name), field("cf-plugin", t("ch.f.plugin"), f.plugin),
      field("cf-models", t("ch.f.models"), f.models), field("cf-settings", t("ch.f.settings"), f.settings),
      h("div.row", {}, field("cf-priority", t("ch.f.priority"), f.priority), field("cf-weight", t("ch.f.weight"), f.weight),
        field("cf-enabled", t("ch.f.enabled"), f.enabled)),
      formErr,
      h("div.actions", {}, h("button#cf-save", { type: "submit" }, t("btn.save")),
        h("button", { type: "button", onclick: () => fill(box) }, t("btn.cancel"))));
    fill(box, form);
    (c ? f.plugin : f.name).focus();
  }

  /* ---------------------------------------------------------------- keys */
  async function pageKeys(main) {
    const res = await api("GET", "/admin/keys?limit=500");
    if (res.status !== 200) throw new Error(errMsg(res));
    const admin = S.role === "admin";
    const keys = res.js.data;
    const search = h("input#key-search", { type: "search", placeholder: t("key.search"), "aria-label": t("key.search") });
    const list = h("div#key-list");
    const draw = () => {
      const q = search.value.trim().toLowerCase();
      const shown = keys.filter((k) => !q || [k.name, k.owner, k.prefix, k.group].some((x) => (x || "").toLowerCase().includes(q)));
      fill(list, table("keys", [t("col.name"), t("col.prefix"), t("col.owner"), t("col.quota"), t("col.models"), t("col.limits"), t("col.expires"), t("col.status"), t("col.actions")],
        shown.map((k) => [k.name, k.prefix, k.owner, quotaBar(k), k.models.length ? k.models.join(", ") : t("key.all_models"),
          limits(k), k.expires_at ? fmtTime(k.expires_at * 1000) : t("key.never"), k.enabled ? "" : t("key.disabled"),
          admin ? h("div.actions", {},
            h("button", { "data-act": "edit", "data-id": k.id, onclick: () => keyForm(k) }, t("btn.edit")),
            h("button", { "data-act": "toggle", "data-id": k.id, onclick: async () => {
              const r = await api("PATCH", "/admin/keys/" + k.id, { enabled: !k.enabled });
              r.status === 200 ? route() : toast(t("msg.error", { m: errMsg(r) }), true);
            } }, k.enabled ? t("btn.disable") : t("btn.enable")),
            confirmButton(t("btn.delete"), { "data-act": "delete", "data-id": k.id }, async () => {
              const r = await api("DELETE", "/admin/keys/" + k.id);
              r.status === 200 ? (toast(t("msg.deleted")), route()) : toast(t("msg.error", { m: errMsg(r) }), true);
            })) : ""]), t("key.empty")));
    };
    search.addEventListener("input", draw);
    draw();
    fill(main, h("h2", {}, t("key.title")), secretPanel(), search,
      admin ? h("button#key-add", { onclick: () => keyForm(null) }, t("key.add")) : null, h("div#key-form"), list);
  }
  function quotaBar(k) {
    if (k.unlimited) return h("span", {}, t("key.unlimited") + " · " + fmtMoney(k.used_micro));
    const pct = k.quota_micro ? Math.min(100, (100 * k.used_micro) / k.quota_micro) : 100;
    const fill = h("div.fill" + (pct > 90 ? ".hot" : ""), { "data-pct": pct.toFixed(0) });
    fill.style.width = pct.toFixed(1) + "%"; /* CSSOM: allowed by the CSP, unlike a style attribute */
    return h("div.quota", { title: pct.toFixed(1) + "%" },
      h("div.bar", {}, fill),
      h("span", {}, t("key.used_of", { u: fmtMoney(k.used_micro), q: fmtMoney(k.quota_micro) })));
  }
  function limits(k) {
    const parts = [];
    if (k.rpm) parts.push(fmtNum(k.rpm) + " rpm");
    if (k.tpm) parts.push(fmtNum(k.tpm) + " tpm");
    if (k.max_concurrent) parts.push("≤" + fmtNum(k.max_concurrent));
    if (k.cidrs.length) parts.push(k.cidrs.join(", "));
    return parts.join(" · ");
  }
  function secretPanel() {
    if (!S.secret) return null;
    const s = S.secret;
    const code = h("code#key-secret", {}, s);
    const copy = h("button#key-copy", { onclick: async () => {
      try { await navigator.clipboard.writeText(s); } catch (e) {
        const r = document.createRange(); r.selectNodeContents(code);
        const w = getSelection(); w.removeAllRanges(); w.addRange(r); document.execCommand("copy");
      }
      copy.textContent = t("btn.copied");
    } }, t("btn.copy"));
    S.secret = null; /* gone at the next render */
    return h("div.panel.secret#secret-panel", { role: "status" }, h("h3", {}, t("key.secret_title")), h("p", {}, t("key.secret_once")), h("div.row", {}, code, copy));
  }
  /* Create a key (k null) or change one (PATCH: the secret stays). */
  function keyForm(k) {
    const localTime = (sec) => { const d = new Date(sec * 1000); return new Date(d - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16); };
    const v = k || { name: "", owner: "", unlimited: true, models: [], cidrs: [], rpm: 0, tpm: 0, max_concurrent: 0, expires_at: 0 };
    const f = {
      name: h("input#kf-name", { value: v.name }), owner: h("input#kf-owner", { value: v.owner }),
      quota: h("input#kf-quota", { inputmode: "decimal", value: v.unlimited ? "" : v.quota }),
      models: h("input#kf-models", { value: v.models.join(", ") }), cidrs: h("input#kf-cidrs", { value: v.cidrs.join(", ") }),
      rpm: h("input#kf-rpm", { type: "number", min: 0, value: v.rpm }), tpm: h("input#kf-tpm", { type: "number", min: 0, value: v.tpm }),
      max_concurrent: h("input#kf-max_concurrent", { type: "number", min: 0, value: v.max_concurrent }),
      expires_at: h("input#kf-expires_at", { type: "datetime-local", value: v.expires_at ? localTime(v.expires_at) : "" }),
    };
    const err = h("p.error#kf-error", { role: "alert" });
    const form = h("form.panel#key-create", { onsubmit: async (e) => {
      e.preventDefault();
      document.querySelectorAll("#key-create .field-error").forEach((x) => (x.textContent = ""));
      err.textContent = "";
      const body = { name: f.name.value, owner: f.owner.value, quota: f.quota.value.trim() || "unlimited",
        models: splitList(f.models.value), cidrs: splitList(f.cidrs.value), rpm: Number(f.rpm.value),
        tpm: Number(f.tpm.value), max_concurrent: Number(f.max_concurrent.value),
        expires_at: f.expires_at.value ? Math.floor(new Date(f.expires_at.value).getTime() / 1000) : 0 };
      const res = k ? await api("PATCH", "/admin/keys/" + k.id, body) : await api("POST", "/admin/keys", body);
      if (res.status === 201) { S.secret = res.js.secret; return route(); }
      if (res.status === 200) { toast(t("msg.saved")); return route(); }
      const param = (res.js && res.js.error && res.js.error.param) || "";
      ($("#kf-" + param + "-error") || err).textContent = errMsg(res);
    } },
      h("h3", {}, k ? t("key.edit", { n: k.name || k.prefix }) : t("key.add")),
      field("kf-name", t("key.f.name"), f.name), field("kf-owner", t("key.f.owner"), f.owner),
      field("kf-quota", t("key.f.quota"), f.quota), field("kf-models", t("key.f.models"), f.models),
      field("kf-cidrs", t("key.f.cidrs"), f.cidrs),
      h("div.row", {}, field("kf-rpm", t("key.f.rpm"), f.rpm), field("kf-tpm", t("key.f.tpm"), f.tpm),
        field("kf-max_concurrent", t("key.f.conc"), f.max_concurrent)),
      field("kf-expires_at", t("key.f.expires"), f.expires_at), err,
      h("div.actions", {}, h("button#kf-save", { type: "submit" }, k ? t("btn.save") : t("btn.create")),
        h("button", { type: "button", onclick: () => fill($("#key-form")) }, t("btn.cancel"))));
    fill($("#key-form"), form);
    f.name.focus();
  }

  /* --------------------------------------------------------------- usage */
  const U = { key: "", model: "", channel: "", from: "", to: "" };
  async function fetchRows(keyId, max) {
    let rows = [], after = "";
    while (rows.length < max) {
      const q = "/admin/usage/rows?limit=500" + (keyId ? "&key_id=" + keyId : "") + (after ? "&after=" + after : "");
      const res = await api("GET", q);
      if (res.status !== 200) throw new Error(errMsg(res));
      rows = rows.concat(res.js.data);
      if (!res.js.has_more) break;
      after = res.js.last_id;
    }
    return rows;
  }
  async function pageUsage(main) {
    const keys = await api("GET", "/admin/keys?limit=500");
    const names = {};
    for (const k of (keys.js && keys.js.data) || []) names[k.id] = k.name || k.prefix;
    const from = U.from ? new Date(U.from).getTime() : 0, to = U.to ? new Date(U.to).getTime() : 0;
    const all = await fetchRows(U.key, 5000);
    const rows = all.filter((r) => (!U.model || r.model_asked.includes(U.model)) && (!U.channel || r.channel.includes(U.channel)) &&
      (!from || r.created_at_ms >= from) && (!to || r.created_at_ms < to));
    const tot = {};
    for (const r of rows) {
      const g = (tot[r.model_asked] = tot[r.model_asked] || { n: 0, p: 0, c: 0, cost: 0 });
      g.n++; g.p += r.prompt_tokens; g.c += r.completion_tokens; g.cost += r.cost_micro;
    }
    const keySel = sel("uf-key", [["", t("use.any")], ...Object.keys(names).map((id) => [id, names[id] + " (#" + id + ")"])], U.key, (v) => (U.key = v));
    const inp = (id, k, type) => h("input", { id, type: type || "text", value: U[k], oninput: (e) => (U[k] = e.target.value) });
    const filters = h("form.controls#usage-filters", { onsubmit: (e) => { e.preventDefault(); route(); } },
      field("uf-key", t("use.f.key"), keySel), field("uf-model", t("use.f.model"), inp("uf-model", "model")),
      field("uf-channel", t("use.f.channel"), inp("uf-channel", "channel")),
      field("uf-from", t("use.f.from"), inp("uf-from", "from", "datetime-local")),
      field("uf-to", t("use.f.to"), inp("uf-to", "to", "datetime-local")),
      h("button#uf-apply", { type: "submit" }, t("btn.apply")),
      h("button#uf-csv", { type: "button", onclick: () => exportCsv(rows, names) }, t("btn.export")));
    fill(main, h("h2", {}, t("use.title")), filters,
      h("h3", {}, t("use.totals")),
      table("usage-totals", [t("col.model"), t("col.requests"), t("col.tokens"), t("col.cost")],
        Object.keys(tot).sort().map((m) => [m, fmtNum(tot[m].n), fmtNum(tot[m].p + tot[m].c), fmtMoney(tot[m].cost)]), t("use.empty")),
      h("h3", {}, t("use.rows")),
      table("usage-rows", [t("col.time"), t("col.key"), t("col.model"), t("col.channel"), t("col.tokens"), t("col.cost"), t("col.status")],
        rows.slice(0, 500).map((r) => [fmtTime(r.created_at_ms), r.key_id ? names[r.key_id] || "#" + r.key_id : t("req.config_key"), r.model_asked, r.channel,
          fmtNum(r.prompt_tokens + r.completion_tokens), fmtMoney(r.cost_micro), String(r.status)]), t("use.empty")));
  }
  function exportCsv(rows, names) {
    const cols = ["created_at_ms", "request_id", "attempt", "key_id", "key", "channel", "model_asked", "model_served", "prompt_tokens",
      "completion_tokens", "cached_tokens", "reasoning_tokens", "cost", "latency_ms", "ttft_ms", "status"];
    /* quoted, and a leading = + - @ is defused so a spreadsheet does not run it */
    const cell = (v) => { let s = v === null || v === undefined ? "" : String(v); if (/^[=+\-@\t\r]/.test(s)) s = "'" + s; return '"' + s.replace(/"/g, '""') + '"'; };
    const lines = [cols.join(",")].concat(rows.map((r) => cols.map((c) => cell(c === "key" ? names[r.key_id] || "" : r[c])).join(",")));
    const url = URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" }));
    const a = h("a", { href: url, download: "longmen-usage.csv" });
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  /* ------------------------------------------------------------ requests */
  async function pageRequests(main) {
    const [res, keys] = await Promise.all([api("GET", "/admin/usage/rows?limit=200"), api("GET", "/admin/keys?limit=500")]);
    if (res.status !== 200) throw new Error(errMsg(res));
    const names = {};
    for (const k of (keys.js && keys.js.data) || []) names[k.id] = k.name || k.prefix;
    const filter = h("input#req-filter", { type: "search", placeholder: t("req.filter"), "aria-label": t("req.filter") });
    const box = h("div");
    const draw = () => {
      const q = filter.value.trim().toLowerCase();
      const rows = res.js.data.filter((r) => !q || [r.model_asked, r.model_served, r.channel, String(r.status), r.request_id].some((x) => (x || "").toLowerCase().includes(q)));
      fill(box, table("requests", [t("col.time"), t("col.request_id"), t("col.key"), t("col.model"), t("col.channel"), t("col.attempt"), t("col.status"), t("col.latency"), t("col.ttft"), t("col.tokens"), t("col.cost")],
        rows.map((r) => [fmtTime(r.created_at_ms), r.request_id, r.key_id ? names[r.key_id] || "#" + r.key_id : t("req.config_key"), r.model_asked, r.channel, String(r.attempt), String(r.status),
          fmtNum(r.latency_ms) + " ms", r.ttft_ms > 0 ? fmtNum(r.ttft_ms) + " ms" : "", fmtNum(r.prompt_tokens + r.completion_tokens), fmtMoney(r.cost_micro)]), t("req.empty")));
    };
    filter.addEventListener("input", draw);
    draw();
    fill(main, h("h2", {}, t("req.title")), h("div.controls", {}, filter, h("button#req-refresh", { onclick: route }, t("btn.refresh"))), box);
  }

  /* --------------------------------------------------------------- start */
  async function start() {
    S.lang = pickLang();
    document.documentElement.lang = S.lang === "zh" ? "zh-CN" : "en";
    const r = await fetch("/admin/session", { credentials: "same-origin" });
    if (r.status === 200) {
      const js = await r.json();
      S.role = js.role; S.csrf = js.csrf_token;
      return renderShell();
    }
    renderLogin();
  }
  start();
})();
