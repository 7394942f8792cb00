// The explorer's page script: reads the URL, asks the JSON API, draws the view.
//
// - Every view has its own URL (/concepts?…, /concept/N?…, /benchmarks, /themes, /compare);
//   moving between views is history.pushState, so links can be shared and back/forward work.
//   Typing in a search box replaces the current entry instead of adding one per key.
// - Data reaches the page only as text: h() sets textContent and never innerHTML, and URLs
//   are built here from encoded parameters.
// - window.__cgaps records when each list and detail finished drawing (bench/explorer.py and
//   the browser tests read it); performance marks "cgaps:list" and "cgaps:detail" too.
"use strict";
(function () {
  const C = window.CgCharts;
  const fmt = C.fmt;
  const view = document.getElementById("view");
  const runSelect = document.getElementById("run");
  const state = { runs: [], sorts: [], current: null, seq: 0 };
  // rows a page of the list shows: one screen (measured: 50 rows took a third longer to lay out
  // and paint than 25, for rows mostly below the fold)
  const PAGE = 25;
  const perf = (window.__cgaps = { lists: 0, details: 0, views: 0, lastList: 0, lastDetail: 0 });

  // ---------------------------------------------------------------- small helpers

  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      e.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }

  function url(path, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== "" && v !== null && v !== undefined && v !== false) q.set(k, String(v));
    const s = q.toString();
    return s ? `${path}?${s}` : path;
  }

  function link(path, params, ...kids) {
    return h("a", { href: url(path, params), "data-link": true }, ...kids);
  }

  // a data block the server wrote into the page (JSON read as text), or null when it is absent
  function dataBlock(id) {
    const block = document.getElementById(id);
    return block && block.textContent ? JSON.parse(block.textContent) : null;
  }

  // answers the server wrote into the page (the concept list's first pages: fixed while it runs),
  // by the request they answer; without the block every request goes to the server
  const carried = new Map();
  try {
    for (const a of (dataBlock("cgaps-first") || {}).answers || []) carried.set(url(a.path, a.params), a.body);
  } catch (e) {
    carried.clear(); // an unreadable block: the requests go to the server, as for any other page
  }

  async function api(path, params, signal) {
    const asked = url(path, params);
    if (carried.has(asked)) return carried.get(asked);
    const r = await fetch(asked, { signal, headers: { Accept: "application/json" } });
    const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    return body;
  }

  function frame(fn) {
    // after the DOM change: the next frame, then the task after it (the rows have been laid out)
    requestAnimationFrame(() => setTimeout(fn, 0));
  }

  const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
  // a q- or p-value: 3 decimals, small ones in exponent form ("2.1e-5"); 0 (an underflow) as "< 1e-300"
  const fq = (q) => (q === null || q === undefined ? "–" : q === 0 ? "< 1e-300" : q < 1e-3 ? q.toExponential(1) : q.toFixed(3));
  const delta = (a, b) => (a === null || b === null || a === undefined || b === undefined ? null : a - b);
  const signed = (x, d = 3) => (x === null ? "–" : (x >= 0 ? "+" : "") + x.toFixed(d));
  const pill = (text, cls) => (text ? h("span", { class: `pill ${cls || text}` }, text) : "");
  // a call in the page's words: the tables keep weak / strong, the page says gap / strength
  const callWords = (gap, atChance) => (gap === "weak" ? "gap" : gap === "strong" ? (atChance ? "strength · at chance" : "strength") : "");
  // a strength at chance: "strength" greyed, with "at chance" under it (the column stays narrow)
  const callPill = (gap, atChance) =>
    gap === "strong" && atChance ? h("span", { class: "call-chance", title: "a strength at chance level: not significantly above what guessing scores on its items" }, pill("strength", "chance"), " ", pill("at chance", "chance")) : pill(callWords(gap, atChance), gap);
  const chanceWords = (c) => (c === null || c === undefined ? "chance unknown" : c === 0 ? "guessing ~0" : `guessing ${pct(c)}`);
  const GAP_FILTERS = [["", "any call"], ["weak", "gaps"], ["strong", "strengths"], ["strong_above_chance", "strengths above chance"], ["strong_at_chance", "strengths at chance"], ["none", "no call"]];

  function runInfo(name) {
    return state.runs.find((r) => r.name === name) || state.runs[0];
  }

  function describe(r) {
    // a concept's name: its label, else its contexts' tokens, else its number
    const fmtPill = r.format ? h("span", { class: "pill format", title: "fires on prompt text repeated verbatim across items, such as instructions" }, "format") : null;
    if (r.label) return h("span", { class: "lbl" }, r.label, fmtPill ? " " : null, fmtPill);
    if (r.tokens) return h("span", { class: "tokens" }, `tokens: ${r.tokens}`);
    return h("span", { class: "muted" }, `concept ${r.concept}`);
  }

  function errorBox(e) {
    return h("p", { class: "error" }, `error: ${e.message || e}`);
  }

  // ---------------------------------------------------------------- routing

  function go(target, replace) {
    if (target === location.pathname + location.search) return;
    history[replace ? "replaceState" : "pushState"](null, "", target);
    route();
  }

  document.addEventListener("click", (e) => {
    const a = e.target.closest("a[data-link]");
    if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    go(a.getAttribute("href"));
  });
  window.addEventListener("popstate", route);
  runSelect.addEventListener("change", () => {
    const u = new URL(location.href);
    u.searchParams.set("run", runSelect.value);
    u.searchParams.delete("page");
    u.searchParams.delete("scope");
    go(u.pathname + u.search);
  });

  function route() {
    let u = new URL(location.href);
    // the landing page is the run's gaps (what it fails on), when it has any
    const first = runInfo(u.searchParams.get("run"));
    if (u.pathname === "/" && !u.search && first && first.calls && first.calls.gaps > 0) {
      history.replaceState(null, "", "/concepts?gap=weak");
      u = new URL(location.href);
    } else if (u.pathname === "/" && !u.search && first && first.calls && first.calls.theme_gaps > 0) {
      // no concept is a gap alone, but a theme is: its members together carry a weak topic
      history.replaceState(null, "", "/themes");
      u = new URL(location.href);
    }
    const p = u.searchParams;
    const m = u.pathname.match(/^\/concept\/(\d+)$/);
    const name = m ? "detail" : { "/": "concepts", "/concepts": "concepts", "/benchmarks": "benchmarks", "/themes": "themes", "/compare": "compare" }[u.pathname];
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === (name === "detail" ? "concepts" : name));
    const run = runInfo(p.get("run"));
    runSelect.value = run ? run.name : "";
    perf.views += 1;
    if (name === "concepts" && state.current && state.current.name === "concepts" && state.current.run === (p.get("run") || "")) return state.current.update(p);
    state.current = null;
    view.replaceChildren();
    if (!name) return view.appendChild(h("p", { class: "error" }, "No such page. "), link("/concepts", {}, "Go to the concept list."));
    const views = { concepts: Concepts, detail: Detail, benchmarks: Benchmarks, themes: Themes, compare: Compare };
    state.current = views[name](p, m ? Number(m[1]) : null);
  }

  // ---------------------------------------------------------------- the concept list

  const COLUMNS = [
    ["concept", "concept", "num"],
    ["label", "label / tokens", ""],
    [null, "by benchmark", ""],
    ["support", "support", "num"],
    ["chi_bench", "χ_bench", "num"],
    ["chi_model", "χ_model [CI] vs expected", "num"],
    ["delta", "Δ", "num"],
    ["status", "status", ""],
    ["gap", "call", ""],
    ["q_value", "q", "num"],
  ];

  // The run in one line above the list: accuracy against guessing, gaps, strengths (and how many
  // of those are at chance), each a link to its filter.
  function summary(run, runParam) {
    const box = h("p", { class: "summary", id: "run-summary" });
    const s = run.suite;
    if (s) {
      const verdict = { "above chance": "above chance", "at chance": "no better than guessing", "below chance": "worse than guessing" }[s.verdict];
      box.append(`Accuracy ${pct(s.accuracy)} of ${s.n.toLocaleString()} items`);
      if (s.chance !== null && s.chance !== undefined) box.append(` (${chanceWords(s.chance)}: `, h("b", { class: s.verdict === "above chance" ? "pos" : "neg" }, verdict), ")");
      box.append(" · ", link("/benchmarks", { run: runParam }, "per benchmark and category"), " · ");
    }
    const c = run.calls || {};
    box.append(
      link("/concepts", { run: runParam, gap: "weak" }, `${(c.gaps || 0).toLocaleString()} gaps`), " · ",
      link("/concepts", { run: runParam, gap: "strong_above_chance" }, `${((c.strengths || 0) - (c.strengths_at_chance || 0)).toLocaleString()} strengths above chance`), " · ",
      link("/concepts", { run: runParam, gap: "strong_at_chance" }, `${(c.strengths_at_chance || 0).toLocaleString()} strengths at chance level`),
      h("span", { class: "muted" }, ` (FDR ${run.scoring_config && run.scoring_config.fdr !== undefined ? run.scoring_config.fdr : 0.05}, suite-wide)`)
    );
    if (c.theme_gaps || c.theme_strengths) box.append(" · ", link("/themes", { run: runParam }, `${(c.theme_gaps || 0).toLocaleString()} gap themes, ${(c.theme_strengths || 0).toLocaleString()} strength themes`));
    if (!c.gaps && !c.theme_gaps) box.append(h("span", { class: "muted", id: "no-gaps" }, " · this run calls no gap."));
    return box;
  }

  function Concepts(params) {
    const self = { name: "concepts", run: params.get("run") || "" };
    let ctrl = null;
    const read = (p) => ({
      run: p.get("run") || "",
      scope: p.get("scope") || "",
      q: p.get("q") || "",
      gap: p.get("gap") || "",
      status: p.get("status") || "",
      min_support: p.get("min_support") || "",
      sort: p.get("sort") || "q_value",
      order: p.get("order") || "asc",
      page: Number(p.get("page") || 1),
    });
    let cur = read(params);
    const run = runInfo(cur.run);
    const search = h("input", { type: "search", placeholder: "search labels, tokens, concept ids…", "aria-label": "search", id: "search", value: cur.q });
    const scope = h("select", { "aria-label": "benchmark" }, h("option", { value: "" }, "all benchmarks (ALL)"), run.benchmarks.map((b) => h("option", { value: b }, b)));
    const gap = h("select", { "aria-label": "gap" }, GAP_FILTERS.map(([v, t]) => h("option", { value: v }, t)));
    const status = h("select", { "aria-label": "status" }, h("option", { value: "" }, "any status"), ["missing", "under", "normal", "over"].map((s) => h("option", { value: s }, s)));
    const minSupport = h("input", { type: "number", min: 0, "aria-label": "minimum support", placeholder: "0" });
    const info = h("span", { class: "muted", id: "count" });
    const table = h("table", { id: "concepts" });
    const pager = h("div", { class: "pager" });
    const push = (changes, replace) => go(url("/concepts", { ...cur, ...changes, page: changes.page || 1 }), replace);
    search.addEventListener("input", () => {
      // the request first, then the address (the same view: route() would only call update())
      cur = { ...cur, q: search.value, page: 1 };
      load();
      history.replaceState(null, "", url("/concepts", cur));
    });
    scope.addEventListener("change", () => push({ scope: scope.value }));
    gap.addEventListener("change", () => push({ gap: gap.value }));
    status.addEventListener("change", () => push({ status: status.value }));
    minSupport.addEventListener("change", () => push({ min_support: minSupport.value }));
    const title = h("h1", { id: "list-title" });
    const csv = h("a", { id: "csv", download: "" }, "CSV");
    view.append(
      summary(run, cur.run),
      title,
      h("div", { class: "controls" }, search, scope, gap, status, h("label", {}, "min support ", minSupport), info, csv),
      table,
      pager,
      h("p", { class: "muted" }, "Per benchmark: one bar per benchmark (", run.benchmarks.join(", "), "), χ_model on [0, 1] above, χ_bench scaled to the row's largest below; grey = the concept never fires there. In the χ_model cell the dot is χ_model, the bar its interval, the black tick the expected score and the dotted tick the chance level (what guessing scores on its items). A gap is a concept where the model does significantly worse than its benchmarks predict (table value weak), a strength significantly better (strong); a strength at chance is no better than guessing. Click a column to sort, ▸ to expand a concept in place, its number to open it; CSV downloads every row of this filter.")
    );
    search.focus();

    async function load() {
      const seq = ++state.seq;
      if (ctrl) ctrl.abort();
      ctrl = new AbortController();
      // asked before the controls and title are set: the server works while the page does
      const asked = api("/api/concepts", { ...cur, per_page: PAGE }, ctrl.signal);
      if (document.activeElement !== search) search.value = cur.q;
      scope.value = cur.scope;
      gap.value = cur.gap;
      const named = { weak: "Gaps", strong: "Strengths", strong_above_chance: "Strengths above chance", strong_at_chance: "Strengths at chance level", none: "Concepts without a call" }[cur.gap] || "Concepts";
      title.replaceChildren(`${named} — ${run.name}`, h("span", { class: "muted" }, ` · ${cur.scope || "all benchmarks"} · ${run.n_concepts.toLocaleString()} concepts · ${run.benchmarks.length} benchmark${run.benchmarks.length === 1 ? "" : "s"}`));
      csv.setAttribute("href", url("/api/concepts.csv", { run: cur.run, scope: cur.scope, q: cur.q, gap: cur.gap, status: cur.status, min_support: cur.min_support, sort: cur.sort, order: cur.order }));
      status.value = cur.status;
      minSupport.value = cur.min_support;
      let data;
      try {
        data = await asked;
      } catch (e) {
        if (e.name === "AbortError") return;
        table.replaceChildren();
        pager.replaceChildren(errorBox(e));
        return;
      }
      if (seq !== state.seq) return;
      perf.lastFetch = performance.now();
      draw(data);
      perf.lastDom = performance.now();
      frame(() => {
        perf.lists += 1;
        perf.lastList = performance.now();
        performance.mark("cgaps:list");
      });
    }

    function draw(data) {
      const head = h("tr", {}, h("th", {}), COLUMNS.map(([key, title, cls]) => {
        if (!key) return h("th", {}, title);
        const on = cur.sort === key;
        const th = h("th", { class: `sortable ${cls} ${on ? cur.order : ""}`, "data-sort": key, title: "sort" }, title);
        th.addEventListener("click", () => push({ sort: key, order: on && cur.order === "asc" ? "desc" : "asc" }));
        return th;
      }));
      const body = h("tbody", {});
      for (const r of data.rows) {
        const d = delta(r.chi_model, r.expected);
        const btn = h("button", { class: "expand", title: "expand", "aria-label": `expand concept ${r.concept}` }, "▸");
        const tr = h(
          "tr",
          { dataset: { concept: r.concept } },
          h("td", {}, btn),
          h("td", { class: "num" }, link(`/concept/${r.concept}`, { run: cur.run, scope: cur.scope }, String(r.concept))),
          h("td", { class: "label" }, describe(r), r.label && r.tokens ? h("div", { class: "tokens" }, r.tokens) : null),
          h("td", {}, C.spark(r.per_benchmark.chi_model || [], run.benchmarks), h("br", {}),
            C.spark(r.per_benchmark.chi_bench || [], run.benchmarks, { max: Math.max(...(r.per_benchmark.chi_bench || []).map((v) => v || 0), 1e-12), fill: "#e0a030", label: "χ_bench" })),
          h("td", { class: "num" }, String(r.support)),
          h("td", { class: "num" }, fmt(r.chi_bench, 4)),
          h("td", { class: "num" }, C.forest(r.chi_model, r.ci_low, r.ci_high, r.expected, r.chance), ` ${fmt(r.chi_model)} vs ${fmt(r.expected)}`),
          h("td", { class: `num ${d === null ? "" : d < 0 ? "neg" : "pos"}` }, signed(d)),
          h("td", {}, pill(r.status)),
          h("td", { title: r.gap === "strong" ? `${chanceWords(r.chance)} on its items (p = ${fq(r.p_chance)})` : null }, callPill(r.gap, r.at_chance)),
          h("td", { class: "num" }, fq(r.q_value))
        );
        btn.addEventListener("click", () => toggle(tr, btn, r.concept));
        body.appendChild(tr);
      }
      table.replaceChildren(h("thead", {}, head), body);
      const pages = Math.max(Math.ceil(data.total / data.per_page), 1);
      info.textContent = `${data.total.toLocaleString()} concepts${cur.q ? ` match “${cur.q}”` : ""}`;
      pager.replaceChildren(
        cur.page > 1 ? link("/concepts", { ...cur, page: cur.page - 1 }, "‹ previous") : h("span", { class: "muted" }, "‹ previous"),
        h("span", {}, `page ${cur.page} of ${pages.toLocaleString()}`),
        cur.page < pages ? link("/concepts", { ...cur, page: cur.page + 1 }, "next ›") : h("span", { class: "muted" }, "next ›")
      );
      if (!data.rows.length) body.appendChild(h("tr", {}, h("td", { colspan: 11, class: "muted" }, "No concept matches.")));
    }

    async function toggle(tr, btn, concept) {
      const next = tr.nextElementSibling;
      if (next && next.classList.contains("inline")) {
        next.remove();
        btn.textContent = "▸";
        return;
      }
      btn.textContent = "▾";
      const cell = h("td", { colspan: 11 }, h("p", { class: "muted" }, "Loading…"));
      tr.after(h("tr", { class: "inline" }, cell));
      try {
        const d = await api(`/api/concept/${concept}`, { run: cur.run, scope: cur.scope });
        cell.replaceChildren(...detailBody(d, run, true));
      } catch (e) {
        cell.replaceChildren(errorBox(e));
      }
    }

    self.update = (p) => {
      cur = read(p);
      load();
    };
    load();
    return self;
  }

  // ---------------------------------------------------------------- one concept

  function Detail(params, concept) {
    const run = runInfo(params.get("run"));
    const scope = params.get("scope") || "";
    const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    view.append(h("p", {}, link("/concepts", { run: params.get("run") || "" }, "‹ all concepts")), box);
    const seq = ++state.seq;
    api(`/api/concept/${concept}`, { run: params.get("run") || "", scope })
      .then((d) => {
        if (seq !== state.seq) return;
        const scopeSel = h("select", { "aria-label": "examples from" }, h("option", { value: "" }, "all benchmarks"), run.benchmarks.map((b) => h("option", { value: b }, b)));
        scopeSel.value = scope;
        scopeSel.addEventListener("change", () => go(url(`/concept/${concept}`, { run: params.get("run") || "", scope: scopeSel.value })));
        box.replaceChildren(
          h("h1", { id: "detail-title" }, `Concept ${d.concept} — `, d.label ? h("span", {}, d.label) : h("span", { class: "muted" }, "no label")),
          h("div", { class: "controls" }, h("label", {}, "examples and calls from ", scopeSel)),
          ...detailBody(d, run, false)
        );
        if (window.CgFillConfirm) window.CgFillConfirm.concept(box, params.get("run") || "", concept, { h, api });
        frame(() => {
          perf.details += 1;
          perf.lastDetail = performance.now();
          performance.mark("cgaps:detail");
        });
      })
      .catch((e) => seq === state.seq && box.replaceChildren(errorBox(e)));
    return { name: "detail" };
  }

  function detailBody(d, run, compact) {
    const out = [];
    const all = d.scopes.find((s) => s.scope === "ALL") || {};
    const info = h("dl", { class: "kv" });
    const add = (k, v) => info.append(h("dt", {}, k), h("dd", {}, v));
    if (d.source) add("label source", d.source);
    if (d.tokens) add("context tokens", d.tokens);
    add("suite-wide", `support ${all.support}, χ_bench ${fmt(all.chi_bench, 4)}, χ_model ${fmt(all.chi_model)} [${fmt(all.ci_low)}, ${fmt(all.ci_high)}] vs expected ${fmt(all.expected)}, q ${fq(all.q_value)}; ${chanceWords(all.chance)} on its items`);
    add("calls", h("span", {}, pill(all.status), " ", all.gap ? callPill(all.gap, all.at_chance) : pill("no call", "none"),
      all.at_chance ? h("span", { class: "muted" }, ` χ_model is not significantly above the chance level of its items (p = ${fq(all.p_chance)})`) : null));
    if (d.themes && d.themes.length) add("theme", d.themes.map((t) => `${t.label || t.theme}`).join("; "));
    if (d.enrichment) add("where it fires", d.enrichment);
    const names = d.evidence_names || {};
    // the enrichment's columns are said in the line above; the others by their names in words
    const shown = Object.entries(d.evidence || {}).filter(([k]) => !(d.enrichment && k.startsWith("enrich_")));
    for (const [k, v] of shown) if (v !== null && v !== "" && !(Array.isArray(v) && !v.length)) add(names[k] || k, evidenceText(v));
    out.push(h("div", { class: "card", id: "evidence" }, h("h3", {}, "Evidence"), info));

    const benches = d.scopes.filter((s) => s.scope !== "ALL");
    const gapColour = (s) => (s.gap === "weak" ? "#c62828" : s.gap === "strong" ? (s.at_chance ? "#8a8a8a" : "#2e7d32") : "#3b6ea5");
    out.push(
      h(
        "div",
        { class: "cols", id: "bars" },
        h("div", { class: "card" }, h("h3", {}, "χ_model per benchmark (dot), 95% CI (bar), expected score (tick), chance level (dotted)"),
          C.ciRows(d.scopes.map((s) => ({ name: s.scope, value: s.chi_model, lo: s.ci_low, hi: s.ci_high, expected: s.expected, chance: s.chance, color: gapColour(s) })), { title: "chi_model per benchmark" })),
        h("div", { class: "card" }, h("h3", {}, "χ_bench per benchmark (coverage)"),
          C.bars(benches.map((s) => ({ name: s.scope, value: s.chi_bench, text: `${fmt(s.chi_bench, 4)} · ${s.support} items · ${s.status}`, color: s.status === "missing" ? "#c62828" : s.status === "under" ? "#e0a030" : s.status === "over" ? "#3b6ea5" : "#8fb3d9" })), { title: "chi_bench per benchmark", textWidth: 190 }))
      )
    );
    const ctx = h("ul", { class: "ctx" });
    for (const c of d.contexts) ctx.appendChild(h("li", {}, h("span", { class: "muted" }, `${c.item_id} (${fmt(c.value, 2)})  `), c.left || "", h("mark", {}, c.token || ""), c.right || ""));
    if (!d.contexts.length) ctx.appendChild(h("li", { class: "muted" }, "No contexts (contexts.parquet is written by `cgaps extract`)."));
    out.push(h("div", { class: "card", id: "contexts" }, h("h3", {}, "Top activating contexts where it is present (firing token marked)"), ctx));
    const side = (key, title) =>
      h("div", { class: `side ${key}` }, h("h3", {}, title),
        d.examples[key].length ? d.examples[key].map((e) => example(e, key)) : h("p", { class: "muted" }, "None."));
    out.push(h("div", { class: "card", id: "examples" }, h("h3", {}, `Example items${d.scope && d.scope !== "ALL" ? ` from ${d.scope}` : ""} where it is present, highest saliency first`),
      h("div", { class: "cols" }, side("high", "High score (≥ 0.5)"), side("low", "Low score (< 0.5)"))));
    const near = h("ol", { class: "lst", id: "nearest" });
    for (const n of d.nearest) near.appendChild(h("li", {}, link(`/concept/${n.concept}`, { run: d.run === state.runs[0].name ? "" : d.run }, `concept ${n.concept}`), " ", describe(n), h("span", { class: "muted" }, ` · cosine ${fmt(n.cosine, 2)}, ${n.shared} shared items`)));
    if (!d.nearest.length) near.appendChild(h("li", { class: "muted" }, "No concept fires on the same items."));
    out.push(h("div", { class: "card" }, h("h3", {}, "Nearest concepts (firing on the same items)"), near));
    if (compact) out.push(h("p", {}, link(`/concept/${d.concept}`, { run: d.run === state.runs[0].name ? "" : d.run, scope: d.scope === "ALL" ? "" : d.scope }, `open concept ${d.concept} on its own page ›`)));
    return out;
  }

  function evidenceText(v) {
    // lists of [token, figure, ...] (distinctive and output tokens) as "token (figure), …"
    if (Array.isArray(v) && v.every((x) => Array.isArray(x))) return v.slice(0, 15).map((x) => (x.length > 1 && typeof x[x.length > 2 ? 2 : 1] === "number" ? `${x[0]} (${fmt(x[x.length > 2 ? 2 : 1], 2)})` : String(x[0]))).join(", ");
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v !== 0 && Math.abs(v) < 1e-3 ? v.toExponential(1) : fmt(v, 4);
    return typeof v === "string" ? v : JSON.stringify(v);
  }

  function example(e, key) {
    const more = (n) => (n > 0 ? h("i", { class: "muted" }, ` … (${n} more characters)`) : null);
    return h(
      "div",
      { class: `ex ${key}`, dataset: { item: e.item_id } },
      h("div", { class: "exhead" }, `${e.item_id} · ${e.benchmark}${e.category ? ` · ${e.category}` : ""} · score ${fmt(e.score, 2)} · saliency ${fmt(e.saliency, 2)}`),
      h("div", { class: "fld" }, "prompt"), h("pre", { class: "prompt" }, e.prompt, more(e.prompt_cut)),
      h("div", { class: "fld" }, "response"), h("pre", { class: "response" }, e.response, more(e.response_cut)),
      h("div", { class: "fld" }, "reference"), h("pre", { class: "reference" }, e.reference, more(e.reference_cut))
    );
  }

  // ---------------------------------------------------------------- benchmarks

  function Benchmarks(params) {
    const run = runInfo(params.get("run"));
    const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    view.append(h("h1", {}, `Benchmarks — ${run.name}`), box);
    const seq = ++state.seq;
    const r = params.get("run") || "";
    api("/api/benchmarks", { run: r })
      .then((d) => {
        if (seq !== state.seq) return;
        const rows = d.benchmarks;
        const tbl = h("table", { id: "bench-table" },
          h("thead", {}, h("tr", {}, ["benchmark", "items", "accuracy", "missing share", "under", "normal", "over"].map((t, i) => h("th", { class: i ? "num" : "" }, t)))),
          h("tbody", {}, rows.map((b) => h("tr", {}, h("td", {}, b.benchmark === "ALL" ? "ALL (suite)" : link("/concepts", { run: r, scope: b.benchmark }, b.benchmark)), h("td", { class: "num" }, String(b.n_items)), h("td", { class: "num" }, pct(b.accuracy)), h("td", { class: "num" }, pct(b.missing_share)), ["under", "normal", "over"].map((s) => h("td", { class: "num" }, String(b.status[s] || 0)))))));
        const benches = rows.filter((b) => b.benchmark !== "ALL");
        const hist = h("div", { class: "grid", id: "histograms" }, rows.map((b) =>
          h("div", { class: "card" }, C.histogram(b.histogram, d.bin_edges, { title: `${b.benchmark}: χ_bench of present concepts`, xLabels: ["1e-5", "1"], binLabel: (a, z) => `χ_bench 1e${a.toFixed(1)}–1e${z.toFixed(1)}` }))));
        const mats = h("div", { class: "grid", id: "matrices" });
        const titles = { jaccard: "Jaccard overlap of present concepts", spearman_chi_model: "Spearman ρ of χ_model", spearman_chi_bench: "Spearman ρ of χ_bench" };
        for (const [k, m] of Object.entries(d.matrices)) mats.appendChild(h("div", { class: "card" }, h("h3", {}, titles[k] || k), C.heatmap(d.names, m, { lo: k === "jaccard" ? 0 : -1, hi: 1, title: titles[k] || k })));
        if (!Object.keys(d.matrices).length) mats.appendChild(h("p", { class: "muted" }, "No overlap.parquet (one benchmark)."));
        const lists = h("div", { class: "grid", id: "bench-lists" });
        for (const b of benches) {
          const card = h("div", { class: "card" }, h("h3", {}, b.benchmark));
          for (const [k, title] of [["missing", "most missing (present elsewhere)"], ["under", "most under-represented"], ["over", "most over-represented"], ["weak", "most significant gaps"]]) {
            const items = b.lists[k] || [];
            card.appendChild(h("div", { class: "fld" }, title));
            card.appendChild(items.length ? h("ol", { class: "lst" }, items.map((c) => h("li", {}, link(`/concept/${c.concept}`, { run: r, scope: b.benchmark }, `#${c.concept}`), " ", describe(c)))) : h("p", { class: "muted" }, "none"));
          }
          const th = (d.themes || {})[b.benchmark] || [];
          if (th.length) card.append(h("div", { class: "fld" }, "themes"), h("ol", { class: "lst" }, th.map((t) => h("li", {}, `${t.label || t.theme} `, t.gap ? callPill(t.gap, false) : pill(t.status)))));
          lists.appendChild(card);
        }
        box.replaceChildren(
          tbl,
          h("h2", {}, "Accuracy against chance, per benchmark and category"), groupTable(d.groups || [], run),
          h("div", { class: "card", id: "missing" }, h("h3", {}, "Share of concepts missing per benchmark"), C.bars(benches.map((b) => ({ name: b.benchmark, value: b.missing_share, text: pct(b.missing_share), color: "#c62828" })), { max: 1 })),
          h("h2", {}, "Coverage histograms"), hist,
          h("h2", {}, "Overlap and correlation"), mats,
          h("h2", {}, "One benchmark against another, concept by concept"), scatterCard(run, r),
          h("h2", {}, "Each benchmark's most missing, under- and over-represented concepts"), lists
        );
        if (window.CgFillConfirm) window.CgFillConfirm.benchmarks(box, r, { h, api }); // cgaps fill / confirm
        frame(() => (perf.benchmarks = (perf.benchmarks || 0) + 1));
      })
      .catch((e) => seq === state.seq && box.replaceChildren(errorBox(e)));
    return { name: "benchmarks" };
  }

  // Accuracy per benchmark and category beside what guessing would score (cgaps.chance).
  function groupTable(groups, run) {
    const rows = groups.filter((g) => g.group !== "ALL").concat(groups.filter((g) => g.group === "ALL"));
    const one = run.benchmarks.length === 1;
    return h("table", { id: "group-table" },
      h("thead", {}, h("tr", {}, ["benchmark / category", "items", "accuracy", "chance", "against chance"].map((t, i) => h("th", { class: i && i < 4 ? "num" : "" }, t)))),
      h("tbody", {}, rows.map((g) => h("tr", { class: g.category ? "category" : "bench", dataset: { group: g.group } },
        h("td", {}, g.category ? h("span", { class: "indent" }, one ? g.category : g.group) : g.group === "ALL" ? "ALL (suite)" : g.group),
        h("td", { class: "num" }, String(g.n)),
        h("td", { class: "num" }, pct(g.accuracy)),
        h("td", { class: "num" }, g.chance === null ? "–" : pct(g.chance)),
        h("td", { class: `verdict ${g.verdict.replace(" ", "-")}` }, g.verdict)))),
      h("caption", { class: "muted" }, "Chance: what guessing scores on these items, from each item's answer format (1/k for k options, ½ for yes/no decisions, ~0 for free-form answers); at chance = not significantly above or below it (one-sided binomial tests, docs/method.md §3)."));
  }

  // χ_model (or χ_bench) of every concept in one benchmark against another: the per-concept view
  // behind the Spearman matrices above (one point per concept present in both).
  function scatterCard(run, r) {
    const scopes = [...run.benchmarks, "ALL"];
    const pick = (v, label) => {
      const s = h("select", { "aria-label": label }, scopes.map((b) => h("option", { value: b }, b)));
      s.value = v;
      return s;
    };
    const x = pick(scopes[0], "x benchmark"), y = pick(scopes.length > 2 ? scopes[1] : "ALL", "y benchmark");
    const metric = h("select", { "aria-label": "metric" }, h("option", { value: "chi_model" }, "χ_model"), h("option", { value: "chi_bench" }, "χ_bench"));
    const plot = h("div", { id: "scatter" });
    const card = h("div", { class: "card" }, h("div", { class: "controls" }, "x ", x, " y ", y, " ", metric), plot);
    const draw = () => {
      api("/api/scatter", { run: r, x: x.value, y: y.value, metric: metric.value })
        .then((d) => {
          const name = (i) => `concept ${d.concepts[i]}: ${fmt(d.xs[i], metric.value === "chi_bench" ? 4 : 3)}, ${fmt(d.ys[i], metric.value === "chi_bench" ? 4 : 3)}${d.calls[i] ? ` (${d.calls[i]})` : ""}`;
          plot.replaceChildren(
            C.scatter(d.xs, d.ys, d.calls, {
              log: d.metric === "chi_bench", xLabel: `${d.metric === "chi_bench" ? "χ_bench" : "χ_model"} in ${d.x}`, yLabel: `in ${d.y}`,
              colours: { gap: "#c62828", strength: "#2e7d32", "strength at chance": "#8a8a8a" }, name,
              onPick: (i) => go(url(`/concept/${d.concepts[i]}`, { run: r })), title: `${d.metric} ${d.x} against ${d.y}`,
            }),
            h("p", { class: "muted", id: "scatter-note" }, `${d.n.toLocaleString()} concepts present in both; Spearman ρ ${d.rho === null ? "–" : d.rho.toFixed(3)} (the matrix's cell). Red: gaps, green: strengths, grey: strengths at chance (suite-wide calls). Click a point to open its concept.`)
          );
          frame(() => (perf.scatters = (perf.scatters || 0) + 1));
        })
        .catch((e) => plot.replaceChildren(errorBox(e)));
    };
    for (const s of [x, y, metric]) s.addEventListener("change", draw);
    draw();
    return card;
  }

  // ---------------------------------------------------------------- themes

  const THEME_COLUMNS = ["label", "n_members", "gap", "format", "status", "chi_model", "expected", "chance", "ci_low", "ci_high", "q_value", "support", "chi_bench", "enrich_group", "enrich_mass", "tokens"];

  function Themes(params) {
    const run = runInfo(params.get("run"));
    const r = params.get("run") || "";
    const scopeName = params.get("scope") || "";
    const scope = h("select", { "aria-label": "benchmark" }, h("option", { value: "" }, "ALL"), run.benchmarks.map((b) => h("option", { value: b }, b)));
    scope.value = scopeName;
    scope.addEventListener("change", () => go(url("/themes", { run: r, scope: scope.value })));
    const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    view.append(h("h1", {}, `Themes — ${run.name}`), h("div", { class: "controls" }, scope), box);
    const seq = ++state.seq;
    api("/api/themes", { run: r, scope: scopeName })
      .then((d) => {
        if (seq !== state.seq) return;
        if (!d.available) return box.replaceChildren(h("p", { class: "muted", id: "no-themes" }, "This run has no themes: `cgaps score RUN_DIR` tests them and `cgaps label RUN_DIR` describes them."));
        if (!d.themes.length) return box.replaceChildren(h("p", { class: "muted", id: "no-themes" }, `${d.source} has no theme in this scope (themes group concepts that fire on the same items).`));
        // theme_tests.parquet: tested by `cgaps score`, not described yet; a gap theme is a finding even when no member is called alone
        const note = d.source === "theme_tests.parquet" ? h("p", { class: "muted", id: "themes-unlabelled" }, "These themes are as `cgaps score` tested them, named by their members: `cgaps label RUN_DIR` describes them in words. A theme is called on its own test, even when no member is called alone.") : null;
        const preferred = THEME_COLUMNS.filter((c) => d.columns.includes(c));
        const cols = (preferred.length ? preferred : d.columns.filter((c) => !["theme", "theme_id", "id", "scope"].includes(c))).slice(0, 11);
        const cell = (v) => (v === null || v === undefined ? "" : evidenceText(v));
        const members = (t) => [
          ...t.members.slice(0, 6).map((m) => h("span", {}, link(`/concept/${m.concept}`, { run: r, scope: scopeName }, `#${m.concept}`), m.label ? ` ${m.label}; ` : "; ")),
          t.size > 6 ? h("span", { class: "muted" }, `… ${t.size - 6} more`) : null,
        ];
        const head = { label: "label", n_members: "concepts", gap: "call", chance: "chance", status: "status", chi_model: "χ_model", expected: "expected", ci_low: "CI low", ci_high: "CI high", q_value: "q", support: "support", chi_bench: "χ_bench", enrich_group: "group holding most weight", enrich_mass: "its share", tokens: "tokens", format: "format" };
        const rows = d.themes.map((t) => h("tr", {}, h("td", {}, String(t.theme)), cols.map((c) => h("td", { class: typeof t.fields[c] === "number" ? "num" : "" }, c === "gap" ? callPill(t.fields[c], t.fields.at_chance) : c === "status" ? pill(t.fields[c]) : cell(t.fields[c]))), h("td", {}, `${t.size}: `, members(t))));
        box.replaceChildren(...(note ? [note] : []), h("table", { id: "themes" }, h("thead", {}, h("tr", {}, h("th", {}, "theme"), cols.map((c) => h("th", {}, head[c] || c.replace(/_/g, " "))), h("th", {}, "members"))), h("tbody", {}, rows)));
      })
      .catch((e) => seq === state.seq && box.replaceChildren(errorBox(e)));
    return { name: "themes" };
  }

  // ---------------------------------------------------------------- compare two runs

  // The paired comparison `cgaps compare` computes (the same table and counts): Δ = B − A, a call
  // is "B better" or "A better"; a second call against the benchmarks' mean Δ.
  const COMPARE_CALLS = [["", "every concept"], ["significant", "called either way"], ["b_better", "B better"], ["a_better", "A better"], ["b_beyond", "B better than the mean Δ"], ["a_beyond", "A better than the mean Δ"]];
  const compareWords = (c) => ({ b_better: "B better", a_better: "A better" })[c] || "";

  function Compare(params) {
    const names = state.runs.map((r) => r.name);
    if (names.length < 2) {
      view.append(h("h1", {}, "Compare"), h("p", { class: "muted", id: "compare-one" }, "Compare needs two runs on the same items: `cgaps serve RUN_A RUN_B`."));
      return { name: "compare" };
    }
    const cur = {
      a: params.get("a") || names[0], b: params.get("b") || names[1], scope: params.get("scope") || "",
      q: params.get("q") || "", call: params.get("call") || (params.get("significant") === "true" ? "significant" : ""),
      sort: params.get("sort") || "q_value", order: params.get("order") || "asc", page: Number(params.get("page") || 1),
    };
    const push = (c, replace) => go(url("/compare", { ...cur, ...c, page: c.page || 1 }), replace);
    const sel = (key) => {
      const s = h("select", { "aria-label": `run ${key}` }, names.map((n) => h("option", { value: n }, n)));
      s.value = cur[key];
      s.addEventListener("change", () => push({ [key]: s.value }));
      return s;
    };
    const run = runInfo(cur.a);
    const scope = h("select", { "aria-label": "benchmark" }, h("option", { value: "" }, "ALL"), run.benchmarks.map((b) => h("option", { value: b }, b)));
    scope.value = cur.scope;
    scope.addEventListener("change", () => push({ scope: scope.value }));
    const search = h("input", { type: "search", placeholder: "search…", value: cur.q, "aria-label": "search" });
    search.addEventListener("change", () => push({ q: search.value }));
    const call = h("select", { "aria-label": "call" }, COMPARE_CALLS.map(([v, t]) => h("option", { value: v }, t)));
    call.value = cur.call;
    call.addEventListener("change", () => push({ call: call.value }));
    const box = h("div", {}, h("p", { class: "muted" }, "Loading… (the paired test is computed on the first visit)"));
    view.append(h("h1", {}, "Compare two runs: Δ = B − A"), h("div", { class: "controls" }, "A ", sel("a"), " B ", sel("b"), scope, search, call), box);
    const seq = ++state.seq;
    api("/api/compare", { ...cur, per_page: PAGE })
      .then((d) => {
        if (seq !== state.seq) return;
        const cols = [["concept", "concept"], [null, "label / tokens"], ["chi_model_a", `χ_model A (${d.a})`], ["chi_model_b", `χ_model B (${d.b})`], ["delta", "Δ = B − A"], ["q_value", "q"], [null, "call"], ["q_adjusted", "against the mean Δ"], ["support", "support (discordant)"]];
        const head = h("tr", {}, cols.map(([k, t]) => {
          if (!k) return h("th", {}, t);
          const th = h("th", { class: `sortable num ${cur.sort === k ? cur.order : ""}` }, t);
          th.addEventListener("click", () => push({ sort: k, order: cur.sort === k && cur.order === "asc" ? "desc" : "asc" }));
          return th;
        }));
        const body = h("tbody", {}, d.rows.map((x) => h("tr", { dataset: { concept: x.concept, call: x.call } },
          h("td", { class: "num" }, link(`/concept/${x.concept}`, { run: d.a === names[0] ? "" : d.a }, String(x.concept))),
          h("td", { class: "label" }, describe(x)),
          h("td", { class: "num" }, fmt(x.chi_model_a)),
          h("td", { class: "num" }, fmt(x.chi_model_b)),
          h("td", { class: `num ${x.delta === null ? "" : x.delta > 0 ? "pos" : x.delta < 0 ? "neg" : ""}` }, signed(x.delta)),
          h("td", { class: "num" }, fq(x.q_value)),
          h("td", {}, pill(compareWords(x.call), x.call)),
          h("td", { class: "num", title: `the benchmarks' mean Δ here: ${signed(x.delta_expected)}` }, fq(x.q_adjusted), " ", pill(compareWords(x.call_adjusted), x.call_adjusted)),
          h("td", { class: "num" }, `${x.support} (${x.discordant})`))));
        const s = d.summary;
        const pages = Math.max(Math.ceil(d.total / d.per_page), 1);
        const points = h("div", { id: "compare-scatter" });
        box.replaceChildren(
          h("p", { id: "compare-summary" },
            `${s.scope}: ${s.n_items.toLocaleString()} items, mean score A ${fmt(s.mean_a)}, B ${fmt(s.mean_b)} (Δ = B − A = ${signed(s.delta)}); of ${s.tested.toLocaleString()} concepts tested, `,
            h("b", { class: "pos", id: "n-b-better" }, `B better on ${s.b_better}`), ", ", h("b", { class: "neg", id: "n-a-better" }, `A better on ${s.a_better}`),
            `; against the benchmarks' mean Δ, B better on ${s.b_beyond}, A better on ${s.a_beyond}.`),
          h("p", { class: "muted" }, `The paired test of cgaps compare (the same counts as its page and its lines): per concept, Δ of χ_model on the items where it is present, tested by flipping which model got which score on the items where they differ; Benjamini–Hochberg per scope at FDR ${d.fdr}, concepts present on at least ${d.min_support} items. "Against the mean Δ" asks whether the concept's Δ differs from its benchmarks' own Δ.`),
          h("table", { id: "compare" }, h("thead", {}, head), body),
          h("div", { class: "pager" },
            cur.page > 1 ? link("/compare", { ...cur, page: cur.page - 1 }, "‹ previous") : "",
            h("span", {}, `page ${cur.page} of ${pages} (${d.total.toLocaleString()} concepts)`),
            cur.page < pages ? link("/compare", { ...cur, page: cur.page + 1 }, "next ›") : ""),
          h("h2", {}, "χ_model of A against B, concept by concept"), points
        );
        frame(() => (perf.compares = (perf.compares || 0) + 1));
        api("/api/compare/points", { a: cur.a, b: cur.b, scope: cur.scope }).then((p) => {
          if (seq !== state.seq) return;
          points.replaceChildren(C.scatter(p.xs, p.ys, p.calls, {
            xLabel: `χ_model A (${p.a})`, yLabel: `χ_model B (${p.b})`, max: 1,
            colours: { "B better": "#2e7d32", "A better": "#c62828" },
            name: (i) => `concept ${p.concepts[i]}: A ${fmt(p.xs[i])}, B ${fmt(p.ys[i])}${p.calls[i] ? ` (${p.calls[i]})` : ""}`,
            onPick: (i) => go(url(`/concept/${p.concepts[i]}`, { run: p.a === names[0] ? "" : p.a })),
          }), h("p", { class: "muted" }, "Above the diagonal B does better. Green: B better, red: A better (the paired test)."));
        });
      })
      .catch((e) => seq === state.seq && box.replaceChildren(errorBox(e)));
    return { name: "compare" };
  }

  // ---------------------------------------------------------------- start

  // the server writes /api/runs' answer into the page
  Promise.resolve()
    .then(() => dataBlock("cgaps-runs") || api("/api/runs"))
    .then((d) => {
      state.runs = d.runs;
      state.sorts = d.sorts;
      runSelect.replaceChildren(...d.runs.map((r) => h("option", { value: r.name }, r.name)));
      document.getElementById("runbox").hidden = d.runs.length < 2;
      route();
    })
    .catch((e) => view.replaceChildren(errorBox(e)));
})();
