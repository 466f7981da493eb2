// earshot dashboard: one page over the public API, nothing else.
//
// The API key lives in this tab's sessionStorage and travels only in the
// Authorization header: never in a URL, never logged. The view (campaign,
// range, options) lives in the page's URL, so it can be bookmarked; whoever
// opens it signs in with their own key. Numbers are shown as the API gives
// them; each one is also in a data-value attribute, exact, for the tests.
"use strict";

(() => {
  const KEY_STORE = "earshot.key";
  const HOUR = 3600e3;
  const DAY = 24 * HOUR;
  /// The API's limits (services/reporting/src/report.rs).
  const MAX_RANGE_DAYS = 400;
  const MAX_HOURLY_RANGE_DAYS = 31;
  /// Ranges up to this many days are drawn by the hour, longer ones by the day.
  const HOURLY_UP_TO_DAYS = 7;

  const DIMS = [
    ["creative", "Creative"], ["episode", "Episode"], ["show", "Show"], ["placement", "Placement"],
    ["country", "Country"], ["region", "Region"], ["app", "App"], ["device", "Device"],
  ];
  /// The breakdowns whose rows have reach: the dimensions the loader
  /// sketches (earshot_platform::sketch::DIMS).
  const REACH_DIMS = ["creative", "episode", "show", "country", "app", "device"];
  /// The VAST funnel, in order.
  const FUNNEL = [
    ["impressions", "Impressions"], ["starts", "Starts"], ["first_quartiles", "First quartile"],
    ["midpoints", "Midpoint"], ["third_quartiles", "Third quartile"], ["completes", "Completes"],
  ];
  /// What the time series can draw; the bot series are shown with "include bots".
  const SERIES = [...FUNNEL, ["clicks", "Clicks"]];
  const BOT_SERIES = [["bot_hits", "Bot hits"], ["invalid_hits", "Invalid hits"]];
  const COLORS = ["#1d4ed8", "#047857", "#7c3aed", "#b45309", "#be185d", "#0e7490", "#4d7c0f"];
  const BOT_COLORS = ["#b91c1c", "#6b7280"];

  const ratio = (n, d) => (n == null || !d ? null : n / d);
  /// The KPI tiles: one entry each. `value` reads the range's totals
  /// (`total`, a granularity=total report), the campaign's `pacing` and the
  /// `campaign`. `hint` is a note under the value, or a function of the
  /// context giving one.
  const KPIS = [
    { id: "impressions", label: "Impressions", format: "int", value: (c) => c.total.impressions },
    { id: "reach", label: "Reach", format: "int",
      hint: (c) => (c.total.reach_upper_bound
        ? "upper bound: listener ids change between periods in this range"
        : "distinct listeners over the range"),
      value: (c) => c.total.reach },
    { id: "frequency", label: "Frequency", format: "ratio", hint: "impressions per listener reached",
      value: (c) => c.total.frequency },
    { id: "unique_listeners", label: "Unique listeners", format: "int", hint: "daily uniques, summed over the days",
      value: (c) => c.total.unique_listeners },
    { id: "completion_rate", label: "Completion rate", format: "pct", hint: "completes / starts",
      value: (c) => c.total.completion_rate },
    { id: "starts", label: "Starts", format: "int", value: (c) => c.total.starts },
    { id: "clicks", label: "Clicks", format: "int", value: (c) => c.total.clicks },
    { id: "invalid_share", label: "Invalid hits", format: "pct", hint: "share of raw hits",
      value: (c) => ratio(c.total.invalid_hits, c.total.raw_hits) },
    { id: "bot_share", label: "Bot hits", format: "pct", hint: "share of raw hits",
      value: (c) => ratio(c.total.bot_hits, c.total.raw_hits) },
    { id: "delivery", label: "Delivered vs goal", format: "pct", hint: "whole flight",
      value: (c) => ratio(c.pacing.delivered, c.pacing.impression_goal) },
  ];

  const intFmt = new Intl.NumberFormat("en-US");
  const fmt = {
    int: (v) => (v == null ? "–" : intFmt.format(v)),
    pct: (v) => (v == null ? "–" : `${(v * 100).toFixed(1)}%`),
    ratio: (v) => (v == null ? "–" : v.toFixed(2)),
  };

  // ---- DOM ---------------------------------------------------------------
  /// Builds an element. Text is always set as text, never parsed as HTML.
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c != null && c !== false) el.append(c.nodeType ? c : String(c));
    return el;
  }
  const $ = (sel, root = document) => root.querySelector(sel);
  const main = () => $("#main");
  /// Runs an action that may show another page; the page says it is busy
  /// meanwhile (data-state, aria-busy), and ready again if it stayed.
  async function busyWhile(action) {
    const m = main();
    m.dataset.state = "busy";
    m.setAttribute("aria-busy", "true");
    try {
      return await action();
    } finally {
      if (m.dataset.state === "busy") {
        m.dataset.state = "ready";
        m.setAttribute("aria-busy", "false");
      }
    }
  }
  /// A number cell: formatted text, the exact value in data-value.
  const num = (v, format = "int", attrs = {}) =>
    h("td", { ...attrs, dataset: { value: v == null ? "" : String(v), ...(attrs.dataset || {}) } }, fmt[format](v));
  const alert = (text) => h("div", { class: "alert", role: "alert" }, text);
  /// A scrolling box: focusable, so keyboard users can scroll it.
  const scroller = (name, child) => h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": name }, child);

  // ---- time --------------------------------------------------------------
  const pad = (n) => String(n).padStart(2, "0");
  const isoDay = (t) => new Date(t).toISOString().slice(0, 10);
  const isoHour = (t) => new Date(t).toISOString().slice(0, 13) + ":00:00Z";
  /// A range bound as the API takes it: a date at midnight, else the hour.
  const bound = (t) => (t % DAY === 0 ? isoDay(t) : isoHour(t));
  const parseBound = (s) => (s && /^\d{4}-\d{2}-\d{2}$/.test(s) ? Date.parse(s + "T00:00:00Z") : Date.parse(s));
  const label = (t, hourly) => {
    const d = new Date(t);
    const day = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
    return hourly ? `${day} ${pad(d.getUTCHours())}:00` : day;
  };
  const endOfHour = () => Math.floor(Date.now() / HOUR) * HOUR + HOUR;
  const tomorrow = () => Math.floor(Date.now() / DAY) * DAY + DAY;

  /// The ranges the picker offers, for `campaign` (flight: its dates).
  function presets(campaign) {
    const out = [
      { id: "24h", label: "24 h", from: endOfHour() - DAY, to: endOfHour() },
      { id: "7d", label: "7 d", from: endOfHour() - 7 * DAY, to: endOfHour() },
      { id: "30d", label: "30 d", from: tomorrow() - 30 * DAY, to: tomorrow() },
    ];
    if (campaign && campaign.flight_start) {
      const from = Date.parse(campaign.flight_start + "T00:00:00Z");
      const end = campaign.flight_end ? Date.parse(campaign.flight_end + "T00:00:00Z") + DAY : tomorrow();
      const to = Math.max(from + DAY, Math.min(end, tomorrow()));
      out.push({ id: "flight", label: "Flight", from: Math.max(from, to - MAX_RANGE_DAYS * DAY), to });
    }
    return out;
  }
  const autoGranularity = (from, to) => (to - from <= HOURLY_UP_TO_DAYS * DAY ? "hour" : "day");

  // ---- API ---------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, problem) {
      super(problem.detail || problem.title || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }
  const key = () => sessionStorage.getItem(KEY_STORE);

  /// One API call with the stored key. A 401 on a stored key means it was
  /// revoked (or never right): the dashboard signs out and says so.
  async function call(method, path, body, accept = "application/json", k = key()) {
    const headers = { Accept: accept };
    if (k) headers.Authorization = `Bearer ${k}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
    } catch (e) {
      throw new ApiError(0, { detail: `The API did not answer (${e.message}).` });
    }
    if (!resp.ok) {
      let problem;
      try {
        problem = await resp.json();
      } catch {
        problem = { detail: `The API answered ${resp.status} ${resp.statusText}.` };
      }
      const err = new ApiError(resp.status, problem);
      if (resp.status === 401 && k && k === key()) {
        signOut("Your key is no longer accepted: it was revoked or is wrong. Sign in with a valid key.");
        throw Object.assign(err, { handled: true });
      }
      throw err;
    }
    return resp;
  }
  const get = async (path) => (await call("GET", path)).json();
  const send = async (method, path, body) => (await call(method, path, body)).json();

  /// A report's query string: exactly what the view shows.
  function reportQuery(v, extra) {
    const q = new URLSearchParams({ from: bound(v.from), to: bound(v.to), ...extra });
    if (v.bots) q.set("include_bots", "true");
    return q.toString();
  }
  const reportPath = (id, query) => `/v1/campaigns/${encodeURIComponent(id)}/report?${query}`;

  /// Every row of a report (following its pages).
  async function report(id, query) {
    let page = await get(reportPath(id, query));
    const rows = [...page.rows];
    while (page.next_page_token) {
      page = await get(reportPath(id, `${query}&page_token=${encodeURIComponent(page.next_page_token)}`));
      rows.push(...page.rows);
    }
    return { ...page, rows };
  }

  /// Saves the API's own CSV for `query`: the bytes it sent, not a re-render.
  async function downloadCsv(id, query, filename) {
    const parts = [];
    let next = `${query}&format=csv`;
    for (let first = true; next; first = false) {
      const resp = await call("GET", reportPath(id, next), undefined, "text/csv");
      let bytes = new Uint8Array(await resp.arrayBuffer());
      // Later pages repeat the header line: keep the first page's only.
      if (!first) bytes = bytes.subarray(bytes.indexOf(10) + 1);
      parts.push(bytes);
      const link = /<\?page_token=([^>]+)>;\s*rel="next"/.exec(resp.headers.get("Link") || "");
      next = link ? `${query}&format=csv&page_token=${link[1]}` : null;
    }
    const url = URL.createObjectURL(new Blob(parts, { type: "text/csv" }));
    const a = h("a", { href: url, download: filename });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10e3);
  }

  // ---- session -----------------------------------------------------------
  let me = null; // GET /v1/me of the stored key
  let flash = null; // a message for the next page shown
  const isAdmin = () => me && me.key.scope === "admin";

  function signOut(message) {
    sessionStorage.removeItem(KEY_STORE);
    me = null;
    cache.clear();
    flash = message;
    render();
  }

  /// Checks a key with the API (GET /v1/me), then keeps it for this tab.
  async function signIn(k) {
    me = await (await call("GET", "/v1/me", undefined, "application/json", k)).json();
    sessionStorage.setItem(KEY_STORE, k);
    cache.clear();
  }

  // ---- routing -----------------------------------------------------------
  const cache = new Map(); // per-campaign data that does not depend on the range

  let focusNext = null; // what to focus once the next page is shown
  /// Shows `url`; `focus`: a selector to focus then (else the page's heading).
  function go(url, replace, focus) {
    history[replace ? "replaceState" : "pushState"](null, "", url);
    focusNext = focus || null;
    render();
  }
  document.addEventListener("click", (e) => {
    const a = e.target.closest("a[href^='/app']");
    if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0 || a.hasAttribute("download")) return;
    e.preventDefault();
    go(a.getAttribute("href"));
  });
  window.addEventListener("popstate", () => render());

  let renderId = 0;
  /// Shows the page the URL names.
  async function render() {
    const id = ++renderId;
    const path = location.pathname.replace(/\/+$/, "");
    const m = main();
    m.setAttribute("aria-busy", "true");
    delete m.dataset.state;
    header();
    if (!key()) return done(id, signInPage());
    if (!me) {
      try {
        me = await get("/v1/me");
      } catch (e) {
        if (!e.handled) m.replaceChildren(alert(e.message));
        return;
      }
      header();
    }
    let page;
    let parts;
    if (path === "/app" || path === "/app/campaigns") page = campaignsPage();
    else if ((parts = /^\/app\/campaigns\/([^/]+)$/.exec(path))) page = campaignPage(decodeURIComponent(parts[1]));
    else if ((parts = /^\/app\/campaigns\/([^/]+)\/manage$/.exec(path))) page = managePage(decodeURIComponent(parts[1]));
    else if (path === "/app/admin/advertisers") page = advertisersPage();
    else if (path === "/app/admin/keys") page = keysPage();
    else page = Promise.resolve(h("section", {}, h("h1", { tabindex: "-1" }, "Page not found"), h("p", {}, h("a", { href: "/app" }, "Campaigns"))));
    await done(id, page);
  }

  /// Puts a page in place (unless another render started since), then
  /// marks the page ready and moves focus to its heading.
  async function done(id, pageOrPromise) {
    let page;
    try {
      page = await pageOrPromise;
    } catch (e) {
      if (e.handled) return;
      page = h("section", {}, h("h1", { tabindex: "-1" }, e.status === 404 ? "Not found" : "Something went wrong"), alert(e.message));
    }
    if (id !== renderId) return;
    const m = main();
    if (page.parentNode !== m) m.replaceChildren(page);
    if (flash) {
      m.prepend(h("div", { class: "ok", role: "status" }, flash));
      flash = null;
    }
    await page.ready;
    if (id !== renderId) return;
    m.setAttribute("aria-busy", "false");
    m.dataset.state = "ready";
    performance.mark("earshot:ready");
    const target = (focusNext && $(focusNext, m)) || $("h1", m);
    focusNext = null;
    if (target && !m.contains(document.activeElement)) target.focus();
  }

  function header() {
    const nav = $("#nav");
    const who = $("#who");
    if (!me) {
      nav.replaceChildren(h("a", { href: "/docs" }, "API reference"));
      who.replaceChildren();
      return;
    }
    const here = location.pathname;
    const link = (href, text, current) => h("a", { href, "aria-current": current ? "page" : null }, text);
    const links = [link("/app", "Campaigns", here === "/app" || here.startsWith("/app/campaigns"))];
    if (isAdmin()) {
      links.push(link("/app/admin/advertisers", "Advertisers", here === "/app/admin/advertisers"),
        link("/app/admin/keys", "Keys", here === "/app/admin/keys"));
    }
    nav.replaceChildren(...links, h("a", { href: "/docs" }, "API reference"));
    const name = me.advertiser ? me.advertiser.name : "Admin";
    who.replaceChildren(
      h("span", { id: "signed-in-as" }, `${name} · key ${me.key.prefix}`),
      h("button", { type: "button", id: "sign-out", onclick: () => signOut("Signed out. The key is forgotten in this tab.") }, "Sign out"),
    );
  }

  // ---- sign in -----------------------------------------------------------
  function signInPage() {
    const error = h("div");
    const input = h("input", { id: "api-key", type: "password", autocomplete: "off", spellcheck: "false", required: true, "aria-describedby": "api-key-help" });
    const form = h("form", { class: "stack", novalidate: true, onsubmit: (e) => busyWhile(async () => {
      e.preventDefault();
      error.replaceChildren();
      const k = input.value.trim();
      if (!k) return error.replaceChildren(alert("Paste an API key first."));
      try {
        await signIn(k);
      } catch (err) {
        input.value = "";
        const text = err.status === 401
          ? "This key was not accepted: it is wrong or has been revoked."
          : err.message;
        return error.replaceChildren(alert(text));
      }
      render();
    }) },
    h("label", { for: "api-key" }, "API key"),
    input,
    h("p", { id: "api-key-help", class: "note" }, "An earshot key (esk_…). It stays in this tab only and is sent to the API in a header, never in a URL."),
    h("div", {}, h("button", { type: "submit", class: "btn primary" }, "Sign in")));
    return h("section", { class: "card signin" }, h("h1", { tabindex: "-1" }, "Sign in"), error, form);
  }

  // ---- campaigns ---------------------------------------------------------
  const flight = (c) => (c.flight_start || c.flight_end ? `${c.flight_start || "…"} → ${c.flight_end || "…"}` : "none");

  function campaignTable(campaigns) {
    return h("table", {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Campaign"), h("th", { scope: "col", class: "left" }, "Id"),
        h("th", { scope: "col", class: "left" }, "Flight"), h("th", { scope: "col" }, "Impression goal"))),
      h("tbody", {}, campaigns.map((c) => h("tr", { dataset: { campaign: c.id } },
        h("td", {}, h("a", { href: `/app/campaigns/${encodeURIComponent(c.id)}` }, c.name)),
        h("td", { class: "left" }, c.id), h("td", { class: "left" }, flight(c)), num(c.impression_goal)))));
  }

  async function campaignsPage() {
    const campaigns = await get("/v1/campaigns");
    const page = h("section", {}, h("div", { class: "head" }, h("h1", { tabindex: "-1" }, "Campaigns")));
    if (!isAdmin()) {
      page.append(h("div", { class: "card" }, campaigns.length
        ? campaignTable(campaigns)
        : h("p", { class: "note" }, "No campaigns yet for this advertiser.")));
      return page;
    }
    const advertisers = await get("/v1/advertisers");
    for (const a of advertisers) {
      const mine = campaigns.filter((c) => c.advertiser_id === a.id);
      page.append(h("section", { class: "card group", "aria-labelledby": `adv-${a.id}`, dataset: { advertiser: a.id } },
        h("h2", { id: `adv-${a.id}` }, a.name),
        mine.length ? campaignTable(mine) : h("p", { class: "note" }, "No campaigns.")));
    }
    page.append(newCampaignForm(advertisers));
    return page;
  }

  let fieldSeq = 0;
  /// A labelled control (label[for], so its name is the label's text alone).
  function field(labelText, input) {
    if (!input.id) input.id = `field-${++fieldSeq}`;
    return h("div", { class: "field" }, h("label", { for: input.id }, labelText), input);
  }

  /// A form whose submit calls `action`; its errors show in the form.
  function apiForm(cls, action, ...fields) {
    const status = h("div", { role: "status" });
    const form = h("form", { class: cls, onsubmit: (e) => {
      e.preventDefault();
      status.replaceChildren();
      return busyWhile(async () => {
        try {
          await action(form, status);
        } catch (err) {
          if (!err.handled) status.replaceChildren(alert(err.message));
        }
      });
    } }, ...fields);
    return h("div", {}, status, form);
  }
  const val = (form, name) => {
    const v = form.elements[name].value.trim();
    return v === "" ? null : v;
  };

  function newCampaignForm(advertisers) {
    return h("section", { class: "card", "aria-labelledby": "new-campaign" }, h("h2", { id: "new-campaign" }, "New campaign"),
      apiForm("inline", async (form) => {
        const goal = val(form, "goal");
        const c = await send("POST", "/v1/campaigns", {
          id: val(form, "id"), advertiser_id: val(form, "advertiser"), name: val(form, "name"),
          flight_start: val(form, "start"), flight_end: val(form, "end"), impression_goal: goal == null ? null : Number(goal),
        });
        go(`/app/campaigns/${encodeURIComponent(c.id)}/manage`);
      },
      field("Id (used in pixel URLs)", h("input", { name: "id", required: true, pattern: "[A-Za-z0-9._\\-]{1,64}" })),
      field("Advertiser", h("select", { name: "advertiser", required: true }, advertisers.map((a) => h("option", { value: a.id }, a.name)))),
      field("Name", h("input", { name: "name" })),
      field("Flight start", h("input", { name: "start", type: "date" })),
      field("Flight end", h("input", { name: "end", type: "date" })),
      field("Impression goal", h("input", { name: "goal", type: "number", min: "0", step: "1" })),
      h("button", { type: "submit", class: "btn primary" }, "Create campaign")));
  }

  // ---- one campaign --------------------------------------------------------
  /// The view the URL describes: range, granularity, options.
  function viewOf(campaign) {
    const q = new URLSearchParams(location.search);
    let from = parseBound(q.get("from"));
    let to = parseBound(q.get("to"));
    if (!Number.isFinite(from) || !Number.isFinite(to)) {
      const p = presets(campaign).find((r) => r.id === "30d");
      from = p.from;
      to = p.to;
    }
    const g = q.get("granularity");
    return {
      from, to,
      granularity: g === "hour" || g === "day" ? g : autoGranularity(from, to),
      bots: q.get("bots") === "1",
      by: DIMS.some(([d]) => d === q.get("by")) ? q.get("by") : "creative",
      series: (q.get("series") || "impressions").split(",").filter((s) => SERIES.some(([k]) => k === s)),
    };
  }

  function viewUrl(id, v) {
    const q = new URLSearchParams({ from: bound(v.from), to: bound(v.to), granularity: v.granularity });
    if (v.bots) q.set("bots", "1");
    if (v.by !== "creative") q.set("by", v.by);
    if (v.series.join(",") !== "impressions") q.set("series", v.series.join(","));
    return `/app/campaigns/${encodeURIComponent(id)}?${q}`;
  }

  /// Data of a campaign that does not change with the range.
  async function campaignData(id) {
    if (!cache.has(id)) {
      const p = Promise.all([get(`/v1/campaigns/${encodeURIComponent(id)}`), get(`/v1/campaigns/${encodeURIComponent(id)}/pacing`)])
        .then(async ([campaign, pacing]) => {
          let delivery = null;
          const f = presets(campaign).find((r) => r.id === "flight");
          if (f) delivery = await report(id, new URLSearchParams({ from: bound(f.from), to: bound(f.to), granularity: "day" }).toString());
          return { campaign, pacing, delivery };
        });
      p.catch(() => cache.delete(id));
      cache.set(id, p);
    }
    return cache.get(id);
  }

  async function campaignPage(id) {
    const base = await campaignData(id);
    const { campaign } = base;
    const v = viewOf(campaign);
    // The URL always names the range shown, so any view can be bookmarked.
    if (!new URLSearchParams(location.search).has("from")) history.replaceState(null, "", viewUrl(id, v));
    const page = h("section", { id: "campaign", dataset: { campaign: id } });
    const head = h("div", { class: "head" },
      h("div", {}, h("h1", { tabindex: "-1" }, campaign.name),
        h("p", { class: "meta" }, `${campaign.id} · flight ${flight(campaign)} · goal ${fmt.int(campaign.impression_goal)} · all times UTC`)),
      isAdmin() && h("a", { href: `/app/campaigns/${encodeURIComponent(id)}/manage` }, "Settings, creatives and tracking URLs"));
    page.append(head, rangePicker(id, campaign, v));
    const body = h("div", { id: "view" }, h("p", { class: "note" }, "Loading…"));
    page.append(body);
    page.ready = fillView(id, base, v, body);
    return page;
  }

  function rangePicker(id, campaign, v) {
    const goView = (change, focus) => {
      performance.mark("earshot:range-start");
      const next = { ...v, ...change };
      if (change.from !== undefined) next.granularity = autoGranularity(next.from, next.to);
      go(viewUrl(id, next), false, focus);
    };
    const error = h("div");
    const fromInput = h("input", { type: "date", name: "from", value: isoDay(v.from) });
    const toInput = h("input", { type: "date", name: "to", value: isoDay(v.to - 1) });
    const hourlyOk = v.to - v.from <= MAX_HOURLY_RANGE_DAYS * DAY;
    return h("section", { class: "card", "aria-label": "Range and options" },
      h("div", { class: "row spread" },
        h("div", { class: "row", role: "group", "aria-label": "Range presets" }, presets(campaign).map((p) =>
          h("button", { type: "button", class: "btn", "aria-pressed": String(p.from === v.from && p.to === v.to), dataset: { preset: p.id },
            onclick: () => goView({ from: p.from, to: p.to }, `[data-preset="${p.id}"]`) }, p.label))),
        h("form", { class: "inline", onsubmit: (e) => {
          e.preventDefault();
          const from = parseBound(fromInput.value);
          const to = parseBound(toInput.value) + DAY;
          if (!(from < to)) return error.replaceChildren(alert("The first day must be on or before the last day."));
          goView({ from, to });
        } },
        field("First day", fromInput), field("Last day", toInput), h("button", { type: "submit", class: "btn" }, "Apply"))),
      h("div", { class: "row" },
        h("label", { class: "check" }, h("input", { type: "checkbox", id: "include-bots", checked: v.bots, onchange: (e) => goView({ bots: e.target.checked }, "#include-bots") }),
          "Include bots and invalid hits"),
        field("Granularity", h("select", { id: "granularity", onchange: (e) => goView({ granularity: e.target.value }, "#granularity") },
          h("option", { value: "hour", selected: v.granularity === "hour", disabled: !hourlyOk }, "Hour"),
          h("option", { value: "day", selected: v.granularity === "day" }, "Day"))),
        h("span", { class: "note", id: "range-label" }, `${label(v.from, v.granularity === "hour")} to ${label(v.to, v.granularity === "hour")} (end excluded)`)),
      error);
  }

  /// Loads and draws everything that depends on the range.
  async function fillView(id, base, v, body) {
    // All three at once; each settles to { value } or { error }.
    const settle = (p) => p.then((value) => ({ value }), (error) => ({ error }));
    const total = settle(report(id, reportQuery(v, { granularity: "total" })));
    const series = settle(report(id, reportQuery(v, { granularity: v.granularity })));
    const breakdown = settle(report(id, reportQuery(v, { granularity: "total", group_by: v.by })));
    const { value: totalReport, error } = await total;
    if (error) {
      if (!error.handled) body.replaceChildren(alert(error.message));
      return;
    }
    const t = totalReport.totals;
    const ctx = { total: t, pacing: base.pacing, campaign: base.campaign };
    const sections = [tiles(ctx)];
    if (t.raw_hits === 0) {
      sections.push(h("div", { class: "card", id: "empty" }, h("p", {}, "No hits were recorded for this campaign in this range."),
        h("p", { class: "note" }, "Pick a longer range, or check that its tracking URLs are in the ad server.")));
    }
    const seriesCard = h("section", { class: "card", id: "series", "aria-labelledby": "series-h" }, h("h2", { id: "series-h" }, "Over time"), h("p", { class: "note" }, "Loading…"));
    const breakdownCard = h("section", { class: "card", id: "breakdown", "aria-labelledby": "breakdown-h" }, h("h2", { id: "breakdown-h" }, "Breakdown"));
    sections.push(seriesCard, h("div", { class: "grid2" }, funnel(t), pacingCard(base)), breakdownCard);
    body.replaceChildren(...sections);
    const show = async (settled, card, draw) => {
      const { value, error: e } = await settled;
      if (!e) draw(id, card, value, v);
      else if (!e.handled) card.replaceChildren(card.firstChild, alert(e.message));
    };
    await Promise.all([show(series, seriesCard, drawSeries), show(breakdown, breakdownCard, drawBreakdown)]);
  }

  function tiles(ctx) {
    return h("ul", { class: "tiles", id: "kpis", "aria-label": "Key figures" }, KPIS.map((k) => {
      const value = k.value(ctx);
      const hint = typeof k.hint === "function" ? k.hint(ctx) : k.hint;
      return h("li", { class: "tile", dataset: { kpi: k.id } },
        h("div", { class: "label" }, k.label),
        h("div", { class: "value", dataset: { value: value == null ? "" : String(value) } }, fmt[k.format](value)),
        hint && h("div", { class: "hint" }, hint));
    }));
  }

  /// A uPlot chart in `el` (UTC axis). Its first drawing is marked in the
  /// browser's performance timeline as `earshot:chart:<name>`
  /// (tests/browser/bench.py reads it).
  function chart(el, name, labelText, xs, series, height = 260) {
    let drawn = false;
    const width = Math.max(320, el.clientWidth || 800);
    const opts = {
      width, height,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      scales: { x: { time: true } },
      series: [{ label: "Time (UTC)" }, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2, dash: s.dash, points: { show: xs.length < 60 } }))],
      axes: [{}, { size: 64, values: (u, ticks) => ticks.map((v) => intFmt.format(v)) }],
      legend: { live: false },
      hooks: { draw: [() => drawn || (drawn = true, performance.mark(`earshot:chart:${name}`))] },
    };
    const holder = h("div", { class: "chart", role: "img", "aria-label": labelText });
    el.append(holder);
    const plot = new uPlot(opts, [xs, ...series.map((s) => s.values)], holder);
    new ResizeObserver(() => plot.setSize({ width: Math.max(320, holder.clientWidth), height })).observe(holder);
    return plot;
  }

  function drawSeries(id, card, rep, v) {
    const hourly = v.granularity === "hour";
    const columns = v.bots ? [...SERIES, ...BOT_SERIES] : SERIES;
    // The API has rows only where there were hits; the chart draws the
    // buckets between them as zeros rather than joining the dots.
    const step = hourly ? HOUR : DAY;
    const byBucket = new Map(rep.rows.map((r) => [Date.parse(r.bucket), r]));
    const xs = [];
    for (let t = Math.floor(v.from / step) * step; t < v.to; t += step) xs.push(t);
    const shown = v.series.map((k) => ({ key: k, label: SERIES.find(([s]) => s === k)[1], color: COLORS[SERIES.findIndex(([s]) => s === k)] }));
    if (v.bots) BOT_SERIES.forEach(([k, l], i) => shown.push({ key: k, label: l, color: BOT_COLORS[i], dash: [6, 4] }));
    const picker = h("fieldset", { id: "series-picker" }, h("legend", {}, "Show on the chart"),
      h("div", { class: "row" }, SERIES.map(([k, l]) => h("label", { class: "check" },
        h("input", { type: "checkbox", value: k, checked: v.series.includes(k), onchange: (e) => {
          const next = SERIES.map(([s]) => s).filter((s) => (s === k ? e.target.checked : v.series.includes(s)));
          go(viewUrl(id, { ...v, series: next.length ? next : ["impressions"] }), true, `#series-picker input[value="${k}"]`);
        } }), l))));
    const table = h("table", { id: "series-table" },
      h("caption", { class: "note" }, `${hourly ? "Hourly" : "Daily"} figures, as drawn`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, hourly ? "Hour (UTC)" : "Day (UTC)"), columns.map(([, l]) => h("th", { scope: "col" }, l)))),
      h("tbody", {}, rep.rows.map((r) => h("tr", { dataset: { bucket: r.bucket } },
        h("th", { scope: "row", class: "left" }, label(Date.parse(r.bucket), hourly)),
        columns.map(([k]) => num(r[k], "int", { dataset: { metric: k } }))))));
    card.replaceChildren(
      h("div", { class: "row spread" }, h("h2", { id: "series-h" }, "Over time"),
        csvButton(id, reportQuery(v, { granularity: v.granularity }), `${id}_${bound(v.from)}_${bound(v.to)}_${v.granularity}.csv`, "series")),
      picker);
    if (rep.rows.length === 0) {
      card.append(h("p", { class: "note" }, "Nothing in this range."));
      return;
    }
    chart(card, "series", `${shown.map((s) => s.label).join(", ")} by ${hourly ? "hour" : "day"}; the table below has every value`,
      xs.map((t) => t / 1e3), shown.map((s) => ({ ...s, values: xs.map((t) => (byBucket.get(t) || {})[s.key] ?? 0) })));
    card.append(h("details", {}, h("summary", {}, "Show as a table"), scroller("Figures over time", table)));
  }

  function csvButton(id, query, filename, what) {
    const status = h("span", { role: "status" });
    return h("span", { class: "row" }, status, h("button", { type: "button", class: "btn", dataset: { csv: what }, onclick: async () => {
      status.replaceChildren();
      try {
        await downloadCsv(id, query, filename);
      } catch (e) {
        if (!e.handled) status.replaceChildren(alert(e.message));
      }
    } }, "Download CSV"));
  }

  function funnel(t) {
    const top = t.impressions || 0;
    let prev = null;
    return h("section", { class: "card", id: "funnel", "aria-labelledby": "funnel-h" }, h("h2", { id: "funnel-h" }, "VAST funnel"),
      h("table", {},
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Event"), h("th", { scope: "col" }, "Count"),
          h("th", { scope: "col" }, "Of impressions"), h("th", { scope: "col" }, "Of the step before"), h("th", { scope: "col", class: "barcell" }, h("span", { class: "note" }, "Share")))),
        h("tbody", {}, FUNNEL.map(([k, l]) => {
          const n = t[k];
          const share = ratio(n, top);
          const row = h("tr", { dataset: { step: k } }, h("th", { scope: "row", class: "left" }, l), num(n),
            num(share, "pct"), num(prev == null ? null : ratio(n, prev), "pct"),
            h("td", { class: "barcell", "aria-hidden": "true" }, h("div", { class: "bar" })));
          row.querySelector(".bar").style.width = `${Math.min(100, (share || 0) * 100)}%`;
          prev = n;
          return row;
        }))),
      h("p", { class: "note" }, `Completion rate (completes / starts): ${fmt.pct(t.completion_rate)}`));
  }

  function pacingCard(base) {
    const { pacing: p, delivery } = base;
    const card = h("section", { class: "card", id: "pacing", "aria-labelledby": "pacing-h" }, h("h2", { id: "pacing-h" }, "Pacing"));
    const projected = p.flight_elapsed > 0 ? p.delivered / p.flight_elapsed : null;
    card.append(h("dl", { class: "facts" },
      fact("Goal", p.impression_goal, "int", "goal"), fact("Delivered", p.delivered, "int", "delivered"),
      fact("Expected by now", p.expected_by_now == null ? null : Math.round(p.expected_by_now), "int", "expected"),
      fact("Pace", p.pace_ratio, "ratio", "pace"), fact("Flight elapsed", p.flight_elapsed, "pct", "elapsed"),
      fact("Projected at end of flight", projected == null ? null : Math.round(projected), "int", "projected")));
    if (!p.impression_goal || !p.flight_start || !p.flight_end || !delivery) {
      card.append(h("p", { class: "note" }, "Pacing needs a flight (start and end) and an impression goal."));
      return card;
    }
    const start = Date.parse(p.flight_start + "T00:00:00Z");
    const days = Math.round((Date.parse(p.flight_end + "T00:00:00Z") - start) / DAY) + 1;
    const byDay = new Map(delivery.rows.map((r) => [Date.parse(r.bucket), r.impressions]));
    const xs = [];
    const line = [];
    const cumulative = [];
    let sum = 0;
    const today = tomorrow();
    for (let i = 0; i < days; i++) {
      const t = start + i * DAY;
      xs.push(t / 1e3);
      line.push(Math.round((p.impression_goal * (i + 1)) / days));
      sum += byDay.get(t) || 0;
      cumulative.push(t < today ? sum : null);
    }
    chart(card, "pacing", "Delivered impressions, cumulative, against the straight line to the goal; the table below has every value", xs, [
      { label: "Delivered", color: COLORS[0], values: cumulative },
      { label: "Straight line to goal", color: "#6b7280", dash: [6, 4], values: line },
    ], 220);
    card.append(h("details", {}, h("summary", {}, "Show as a table"), scroller("Delivery by day", h("table", { id: "pacing-table" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Day (UTC)"), h("th", { scope: "col" }, "Delivered, cumulative"), h("th", { scope: "col" }, "Straight line"))),
      h("tbody", {}, xs.map((x, i) => h("tr", {}, h("th", { scope: "row", class: "left" }, label(x * 1e3, false)), num(cumulative[i]), num(line[i]))))))));
    return card;
  }
  const fact = (dt, value, format, name) =>
    h("div", {}, h("dt", {}, dt), h("dd", { dataset: { fact: name, value: value == null ? "" : String(value) } }, fmt[format](value)));

  function drawBreakdown(id, card, rep, v) {
    const dim = v.by;
    const total = rep.totals.impressions;
    const cols = [
      ["impressions", "Impressions", "int"], ["share", "Share of impressions", "pct"],
      // Reach where the loader keeps sketches; daily uniques per creative
      // only (docs/COUNTING.md, "Reach and frequency").
      ...(REACH_DIMS.includes(dim) ? [["reach", "Reach", "int"]] : []),
      ...(dim === "creative" ? [["unique_listeners", "Unique listeners", "int"]] : []),
      ["starts", "Starts", "int"], ["completes", "Completes", "int"], ["completion_rate", "Completion rate", "pct"],
      ["clicks", "Clicks", "int"], ["raw_hits", "Raw hits", "int"],
      ...(v.bots ? [["bot_hits", "Bot hits", "int"], ["invalid_hits", "Invalid hits", "int"]] : []),
    ];
    const rows = rep.rows.map((r) => ({ key: r[dim], ...r, share: ratio(r.impressions, total) }));
    let sort = { col: "impressions", dir: "descending" };
    const tbody = h("tbody");
    const heads = [];
    const fill = () => {
      const k = sort.col;
      const sign = sort.dir === "ascending" ? 1 : -1;
      const cmp = (a, b) => (k === "key" ? String(a.key ?? "").localeCompare(String(b.key ?? "")) : (a[k] ?? -1) - (b[k] ?? -1));
      rows.sort((a, b) => sign * cmp(a, b) || String(a.key ?? "").localeCompare(String(b.key ?? "")));
      tbody.replaceChildren(...rows.map((r) => h("tr", { dataset: { key: r.key ?? "" } },
        h("th", { scope: "row", class: "left" }, r.key ?? "(not set)"), cols.map(([c, , f]) => num(r[c], f, { dataset: { metric: c } })))));
      for (const th of heads) th.setAttribute("aria-sort", th.dataset.col === k ? sort.dir : "none");
    };
    const head = (col, text) => {
      const th = h("th", { scope: "col", dataset: { col } }, h("button", { type: "button", onclick: () => {
        sort = { col, dir: sort.col === col && sort.dir === "descending" ? "ascending" : "descending" };
        fill();
      } }, text));
      heads.push(th);
      return th;
    };
    const table = h("table", { id: "breakdown-table" },
      h("thead", {}, h("tr", {}, head("key", DIMS.find(([d]) => d === dim)[1]), cols.map(([c, l]) => head(c, l)))), tbody);
    fill();
    const tabs = h("div", { role: "tablist", "aria-label": "Break down by" }, DIMS.map(([d, l]) =>
      h("button", { type: "button", role: "tab", id: `tab-${d}`, "aria-selected": String(d === dim), "aria-controls": "breakdown-panel",
        tabindex: d === dim ? "0" : "-1", dataset: { dim: d }, onclick: () => go(viewUrl(id, { ...v, by: d }), true, `#tab-${d}`),
        onkeydown: (e) => {
          const i = DIMS.findIndex(([x]) => x === d);
          const j = e.key === "ArrowRight" ? (i + 1) % DIMS.length : e.key === "ArrowLeft" ? (i + DIMS.length - 1) % DIMS.length : -1;
          if (j >= 0) {
            e.preventDefault();
            go(viewUrl(id, { ...v, by: DIMS[j][0] }), true, `#tab-${DIMS[j][0]}`);
          }
        } }, l)));
    card.replaceChildren(
      h("div", { class: "row spread" }, h("h2", { id: "breakdown-h" }, "Breakdown"),
        csvButton(id, reportQuery(v, { granularity: "total", group_by: dim }), `${id}_${bound(v.from)}_${bound(v.to)}_by_${dim}.csv`, "breakdown")),
      tabs,
      h("div", { role: "tabpanel", id: "breakdown-panel", "aria-labelledby": `tab-${dim}`, class: "scroll", tabindex: "0" },
        rows.length ? table : h("p", { class: "note" }, "Nothing in this range.")));
  }

  // ---- admin -------------------------------------------------------------
  async function managePage(id) {
    if (!isAdmin()) throw new ApiError(403, { detail: "Only admin keys manage campaigns." });
    const [c, creatives] = await Promise.all([get(`/v1/campaigns/${encodeURIComponent(id)}`), get(`/v1/campaigns/${encodeURIComponent(id)}/creatives`)]);
    const urls = h("div", { id: "tracking-urls" });
    const page = h("section", {},
      h("div", { class: "head" }, h("div", {}, h("h1", { tabindex: "-1" }, `${c.name}: settings`), h("p", { class: "meta" }, c.id)),
        h("a", { href: `/app/campaigns/${encodeURIComponent(id)}` }, "Back to the report")),
      h("section", { class: "card", "aria-labelledby": "settings-h" }, h("h2", { id: "settings-h" }, "Settings"),
        h("p", { class: "note" }, "The API keeps a field's value when it is left empty."),
        apiForm("inline", async (form, status) => {
          const goal = val(form, "goal");
          await send("PATCH", `/v1/campaigns/${encodeURIComponent(id)}`, {
            name: val(form, "name"), flight_start: val(form, "start"), flight_end: val(form, "end"), impression_goal: goal == null ? null : Number(goal),
          });
          cache.delete(id);
          status.replaceChildren(h("div", { class: "ok" }, "Saved."));
        },
        field("Name", h("input", { name: "name", value: c.name, required: true })),
        field("Flight start", h("input", { name: "start", type: "date", value: c.flight_start || "" })),
        field("Flight end", h("input", { name: "end", type: "date", value: c.flight_end || "" })),
        field("Impression goal", h("input", { name: "goal", type: "number", min: "0", step: "1", value: c.impression_goal ?? "" })),
        h("button", { type: "submit", class: "btn primary" }, "Save"))),
      h("section", { class: "card", "aria-labelledby": "creatives-h" }, h("h2", { id: "creatives-h" }, "Creatives"),
        h("table", { id: "creatives" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Id"), h("th", { scope: "col", class: "left" }, "Name"), h("th", { scope: "col" }, "Duration (ms)"))),
          h("tbody", {}, creatives.map((cr) => h("tr", {}, h("td", {}, cr.id), h("td", { class: "left" }, cr.name), num(cr.duration_ms))))),
        h("h3", {}, "Add or update a creative"),
        apiForm("inline", async (form) => {
          const d = val(form, "duration");
          await send("POST", `/v1/campaigns/${encodeURIComponent(id)}/creatives`, { id: val(form, "id"), name: val(form, "name"), duration_ms: d == null ? null : Number(d) });
          render();
        },
        field("Id (used in pixel URLs)", h("input", { name: "id", required: true })), field("Name", h("input", { name: "name" })),
        field("Duration (ms)", h("input", { name: "duration", type: "number", min: "1" })),
        h("button", { type: "submit", class: "btn" }, "Save creative"))),
      h("section", { class: "card", "aria-labelledby": "urls-h" }, h("h2", { id: "urls-h" }, "Tracking URLs"),
        creatives.length === 0 ? h("p", { class: "note" }, "Add a creative first.") : apiForm("inline", async (form) => {
          const body = { creative: val(form, "creative") };
          for (const k of ["episode", "show", "placement"]) if (val(form, k)) body[k] = val(form, k);
          const t = await send("POST", `/v1/campaigns/${encodeURIComponent(id)}/tracking-urls`, body);
          urls.replaceChildren(
            h("p", { class: "note" }, t.key_id ? `Signed with key ${t.key_id}. Players fill [CACHEBUSTING] (and [ERRORCODE] on errors).` : "Unsigned: the server has no signing keys."),
            h("table", { class: "urls" }, h("tbody", {}, Object.entries(t.urls).map(([ev, url]) => h("tr", { dataset: { event: ev } },
              h("th", { scope: "row", class: "left" }, ev), h("td", {}, url), h("td", {}, copyButton(url, `Copy the ${ev} URL`)))))));
        },
        field("Creative", h("select", { name: "creative" }, creatives.map((cr) => h("option", { value: cr.id }, `${cr.name} (${cr.id})`)))),
        field("Episode (optional)", h("input", { name: "episode" })), field("Show (optional)", h("input", { name: "show" })),
        field("Placement", h("select", { name: "placement" }, h("option", { value: "" }, "any"), ["pre", "mid", "post"].map((p) => h("option", { value: p }, p)))),
        h("button", { type: "submit", class: "btn primary" }, "Make URLs")), urls));
    return page;
  }

  function copyButton(text, labelText) {
    const b = h("button", { type: "button", class: "btn", "aria-label": labelText, onclick: async () => {
      try {
        await navigator.clipboard.writeText(text);
        b.textContent = "Copied";
      } catch {
        b.textContent = "Select and copy";
      }
    } }, "Copy");
    return b;
  }

  async function advertisersPage() {
    if (!isAdmin()) throw new ApiError(403, { detail: "Only admin keys manage advertisers." });
    const advertisers = await get("/v1/advertisers");
    const rows = advertisers.map((a) => {
      const nameCell = h("td", { class: "left" }, a.name);
      const rename = h("button", { type: "button", class: "link", onclick: () => {
        const input = h("input", { value: a.name, "aria-label": `New name for ${a.name}` });
        nameCell.replaceChildren(apiForm("inline", async () => {
          await send("PATCH", `/v1/advertisers/${a.id}`, { name: input.value });
          render();
        }, input, h("button", { type: "submit", class: "btn" }, "Save")));
        input.focus();
      } }, "Rename");
      return h("tr", { dataset: { advertiser: a.id } }, nameCell, h("td", { class: "left" }, a.id), h("td", { class: "left" }, a.created_at.slice(0, 10)), h("td", {}, rename));
    });
    return h("section", {}, h("div", { class: "head" }, h("h1", { tabindex: "-1" }, "Advertisers")),
      h("div", { class: "card" }, h("table", { id: "advertisers" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col", class: "left" }, "Id"), h("th", { scope: "col", class: "left" }, "Created"), h("th", { scope: "col" }, h("span", { class: "note" }, "Actions")))),
        h("tbody", {}, rows))),
      h("section", { class: "card", "aria-labelledby": "new-adv" }, h("h2", { id: "new-adv" }, "New advertiser"),
        apiForm("inline", async (form) => {
          await send("POST", "/v1/advertisers", { name: val(form, "name") || "" });
          render();
        }, field("Name", h("input", { name: "name", required: true })), h("button", { type: "submit", class: "btn primary" }, "Create advertiser"))));
  }

  async function keysPage() {
    if (!isAdmin()) throw new ApiError(403, { detail: "Only admin keys manage keys." });
    const [keys, advertisers] = await Promise.all([get("/v1/keys"), get("/v1/advertisers")]);
    const names = new Map(advertisers.map((a) => [a.id, a.name]));
    const created = h("div", { id: "new-key" });
    const rows = keys.map((k) => {
      const action = h("td", {});
      if (k.revoked_at) action.append(h("span", { class: "note" }, `revoked ${k.revoked_at.slice(0, 10)}`));
      else {
        const revoke = h("button", { type: "button", class: "btn danger", dataset: { revoke: k.prefix }, onclick: async () => {
          if (revoke.dataset.confirm !== "1") {
            revoke.dataset.confirm = "1";
            revoke.textContent = `Confirm: revoke ${k.prefix}`;
            return;
          }
          await busyWhile(async () => {
            try {
              await send("DELETE", `/v1/keys/${k.id}`);
              render();
            } catch (e) {
              if (!e.handled) action.append(alert(e.message));
            }
          });
        } }, "Revoke");
        action.append(revoke);
      }
      const mine = k.id === me.key.id ? " (this key)" : "";
      return h("tr", { dataset: { prefix: k.prefix } }, h("td", {}, k.prefix + mine), h("td", { class: "left" }, k.name || "–"),
        h("td", { class: "left" }, k.scope === "admin" ? "admin" : names.get(k.advertiser_id) || k.advertiser_id),
        h("td", { class: "left" }, k.created_at.slice(0, 10)), action);
    });
    const scope = h("select", { name: "scope" }, h("option", { value: "advertiser" }, "Advertiser"), h("option", { value: "admin" }, "Admin"));
    const advSelect = h("select", { name: "advertiser" }, advertisers.map((a) => h("option", { value: a.id }, a.name)));
    scope.addEventListener("change", () => { advSelect.disabled = scope.value === "admin"; });
    return h("section", {}, h("div", { class: "head" }, h("h1", { tabindex: "-1" }, "API keys")),
      created,
      h("div", { class: "card" }, h("table", { id: "keys" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Prefix"), h("th", { scope: "col", class: "left" }, "Name"), h("th", { scope: "col", class: "left" }, "Scope"),
          h("th", { scope: "col", class: "left" }, "Created"), h("th", { scope: "col" }, h("span", { class: "note" }, "Status")))),
        h("tbody", {}, rows))),
      h("section", { class: "card", "aria-labelledby": "new-key-h" }, h("h2", { id: "new-key-h" }, "New key"),
        apiForm("inline", async (form) => {
          const body = { scope: scope.value, name: val(form, "name") || "" };
          if (scope.value === "advertiser") body.advertiser_id = advSelect.value;
          const k = await send("POST", "/v1/keys", body);
          await render();
          const box = $("#new-key");
          box.replaceChildren(h("div", { class: "ok", role: "status" },
            h("p", {}, `Key ${k.prefix} created. Copy it now: it is shown this once and only its hash is kept.`),
            h("p", { class: "row" }, h("code", { class: "secret", id: "new-key-value" }, k.key), copyButton(k.key, "Copy the new key"))));
        },
        field("Name", h("input", { name: "name", maxlength: "200" })), field("Scope", scope), field("Advertiser", advSelect),
        h("button", { type: "submit", class: "btn primary" }, "Create key"))));
  }

  // ---- start -------------------------------------------------------------
  /// Says when the API runs without Redis (still exact, uncached) or without
  /// its database.
  async function health() {
    try {
      const r = await (await fetch("/readyz", { cache: "no-store" })).json();
      const banner = $("#banner");
      if (r.status === "degraded") banner.textContent = "Redis is down: reports come straight from PostgreSQL, uncached. The numbers are the same; pages may be slower.";
      else if (r.status === "unavailable") banner.textContent = "The API cannot reach its database: reports are unavailable.";
      else banner.textContent = "";
      banner.dataset.status = r.status;
    } catch {
      // /readyz unreachable: the API calls will say so themselves.
    }
  }

  health();
  render();
})();
