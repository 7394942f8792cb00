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

  async function api(path, params, signal) {
    const r = await fetch(url(path, params), { signal, headers: { Accept: "application/json" } });
    const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    return body;
  }

  function frame(fn) {
    // after the DOM change: the next frame, then the task after it (the rows have been laid out)
    requestAnimationFrame(() => setTimeout(fn, 0));
  }

  const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
  const fq = (q) => (q === null || q === undefined ? "–" : q < 1e-3 ? q.toExponential(1) : q.toFixed(3));
  const delta = (a, b) => (a === null || b === null || a === undefined || b === undefined ? null : a - b);
  const signed = (x, d = 3) => (x === null ? "–" : (x >= 0 ? "+" : "") + x.toFixed(d));
  const pill = (text, cls) => (text ? h("span", { class: `pill ${cls || text}` }, text) : "");

  function runInfo(name) {
    return state.runs.find((r) => r.name === name) || state.runs[0];
  }

  function describe(r) {
    // a concept's name: its label, else its contexts' tokens, else its number
    if (r.label) return h("span", { class: "lbl" }, r.label);
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
    const u = new URL(location.href);
    const p = u.searchParams;
    const m = u.pathname.match(/^\/concept\/(\d+)$/);
    const name = m ? "detail" : { "/": "concepts", "/concepts": "concepts", "/benchmarks": "benchmarks", "/themes": "themes", "/compare": "compare" }[u.pathname];
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === (name === "detail" ? "concepts" : name));
    const run = runInfo(p.get("run"));
    runSelect.value = run ? run.name : "";
    perf.views += 1;
    if (name === "concepts" && state.current && state.current.name === "concepts") return state.current.update(p);
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
    ["gap", "gap", ""],
    ["q_value", "q", "num"],
  ];

  function Concepts(params) {
    const self = { name: "concepts" };
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
    const gap = h("select", { "aria-label": "gap" }, h("option", { value: "" }, "any call"), h("option", { value: "weak" }, "gaps (weak)"), h("option", { value: "strong" }, "strengths"), h("option", { value: "none" }, "no call"));
    const status = h("select", { "aria-label": "status" }, h("option", { value: "" }, "any status"), ["missing", "under", "normal", "over"].map((s) => h("option", { value: s }, s)));
    const minSupport = h("input", { type: "number", min: 0, "aria-label": "minimum support", placeholder: "0" });
    const info = h("span", { class: "muted", id: "count" });
    const table = h("table", { id: "concepts" });
    const pager = h("div", { class: "pager" });
    const push = (changes, replace) => go(url("/concepts", { ...cur, ...changes, page: changes.page || 1 }), replace);
    search.addEventListener("input", () => push({ q: search.value }, true));
    scope.addEventListener("change", () => push({ scope: scope.value }));
    gap.addEventListener("change", () => push({ gap: gap.value }));
    status.addEventListener("change", () => push({ status: status.value }));
    minSupport.addEventListener("change", () => push({ min_support: minSupport.value }));
    view.append(
      h("h1", {}, `Concepts — ${run.name}`, h("span", { class: "muted" }, ` · ${run.n_concepts.toLocaleString()} concepts · ${run.benchmarks.length} benchmarks`)),
      h("div", { class: "controls" }, search, scope, gap, status, h("label", {}, "min support ", minSupport), info),
      table,
      pager,
      h("p", { class: "muted" }, "Per benchmark: one bar per benchmark (", run.benchmarks.join(", "), "), χ_model on [0, 1] above, χ_bench scaled to the row's largest below; grey = the concept never fires there. Click a column to sort, ▸ to expand a concept in place, its number to open it.")
    );
    search.focus();

    async function load() {
      const seq = ++state.seq;
      if (ctrl) ctrl.abort();
      ctrl = new AbortController();
      if (document.activeElement !== search) search.value = cur.q;
      scope.value = cur.scope;
      gap.value = cur.gap;
      status.value = cur.status;
      minSupport.value = cur.min_support;
      let data;
      try {
        data = await api("/api/concepts", { ...cur, per_page: PAGE }, ctrl.signal);
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
          h("td", { class: "num" }, C.forest(r.chi_model, r.ci_low, r.ci_high, r.expected), ` ${fmt(r.chi_model)} vs ${fmt(r.expected)}`),
          h("td", { class: `num ${d === null ? "" : d < 0 ? "neg" : "pos"}` }, signed(d)),
          h("td", {}, pill(r.status)),
          h("td", {}, pill(r.gap)),
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
    add("suite-wide", `support ${all.support}, χ_bench ${fmt(all.chi_bench, 4)}, χ_model ${fmt(all.chi_model)} [${fmt(all.ci_low)}, ${fmt(all.ci_high)}] vs expected ${fmt(all.expected)}, q ${fq(all.q_value)}`);
    add("calls", h("span", {}, pill(all.status), " ", pill(all.gap || "no gap call", all.gap || "")));
    if (d.themes && d.themes.length) add("theme", d.themes.map((t) => `${t.label || t.theme}`).join("; "));
    for (const [k, v] of Object.entries(d.evidence || {})) if (v !== null && v !== "" && !(Array.isArray(v) && !v.length)) add(k, evidenceText(v));
    out.push(h("div", { class: "card", id: "evidence" }, h("h3", {}, "Evidence"), info));

    const benches = d.scopes.filter((s) => s.scope !== "ALL");
    const gapColour = (s) => (s.gap === "weak" ? "#c62828" : s.gap === "strong" ? "#2e7d32" : "#3b6ea5");
    out.push(
      h(
        "div",
        { class: "cols", id: "bars" },
        h("div", { class: "card" }, h("h3", {}, "χ_model per benchmark (dot), 95% CI (bar), expected score (tick)"),
          C.ciRows(d.scopes.map((s) => ({ name: s.scope, value: s.chi_model, lo: s.ci_low, hi: s.ci_high, expected: s.expected, color: gapColour(s) })), { title: "chi_model per benchmark" })),
        h("div", { class: "card" }, h("h3", {}, "χ_bench per benchmark (coverage)"),
          C.bars(benches.map((s) => ({ name: s.scope, value: s.chi_bench, text: `${fmt(s.chi_bench, 4)} · ${s.support} items · ${s.status}`, color: s.status === "missing" ? "#c62828" : s.status === "under" ? "#e0a030" : s.status === "over" ? "#3b6ea5" : "#8fb3d9" })), { title: "chi_bench per benchmark" }))
      )
    );
    const ctx = h("ul", { class: "ctx" });
    for (const c of d.contexts) ctx.appendChild(h("li", {}, h("span", { class: "muted" }, `${c.item_id} (${fmt(c.value, 2)})  `), c.left || "", h("mark", {}, c.token || ""), c.right || ""));
    if (!d.contexts.length) ctx.appendChild(h("li", { class: "muted" }, "No contexts (contexts.parquet is written by `cgaps extract`)."));
    out.push(h("div", { class: "card", id: "contexts" }, h("h3", {}, "Top activating contexts (firing token marked)"), ctx));
    const side = (key, title) =>
      h("div", { class: `side ${key}` }, h("h3", {}, title),
        d.examples[key].length ? d.examples[key].map((e) => example(e, key)) : h("p", { class: "muted" }, "None."));
    out.push(h("div", { class: "card", id: "examples" }, h("h3", {}, `Example items${d.scope && d.scope !== "ALL" ? ` from ${d.scope}` : ""}, highest saliency first`),
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
          for (const [k, title] of [["missing", "most missing (present elsewhere)"], ["under", "most under-represented"], ["over", "most over-represented"], ["weak", "strongest model gaps"]]) {
            const items = b.lists[k] || [];
            card.appendChild(h("div", { class: "fld" }, title));
            card.appendChild(items.length ? h("ol", { class: "lst" }, items.map((c) => h("li", {}, link(`/concept/${c.concept}`, { run: r, scope: b.benchmark }, `#${c.concept}`), " ", describe(c)))) : h("p", { class: "muted" }, "none"));
          }
          const th = (d.themes || {})[b.benchmark] || [];
          if (th.length) card.append(h("div", { class: "fld" }, "themes"), h("ol", { class: "lst" }, th.map((t) => h("li", {}, `${t.label || t.theme} `, pill(t.gap || t.status)))));
          lists.appendChild(card);
        }
        box.replaceChildren(
          tbl,
          h("div", { class: "card", id: "missing" }, h("h3", {}, "Share of concepts missing per benchmark"), C.bars(benches.map((b) => ({ name: b.benchmark, value: b.missing_share, text: pct(b.missing_share), color: "#c62828" })), { max: 1 })),
          h("h2", {}, "Coverage histograms"), hist,
          h("h2", {}, "Overlap and correlation"), mats,
          h("h2", {}, "Each benchmark's most missing, under- and over-represented concepts"), lists
        );
        if (window.CgFillConfirm) window.CgFillConfirm.benchmarks(box, r, { h, api }); // cgaps fill / confirm
        frame(() => (perf.benchmarks = (perf.benchmarks || 0) + 1));
      })
      .catch((e) => seq === state.seq && box.replaceChildren(errorBox(e)));
    return { name: "benchmarks" };
  }

  // ---------------------------------------------------------------- themes

  const THEME_COLUMNS = ["label", "n_members", "gap", "status", "chi_model", "expected", "ci_low", "ci_high", "q_value", "support", "chi_bench", "enrich_group", "enrich_mass", "tokens"];

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
        if (!d.available) return box.replaceChildren(h("p", { class: "muted", id: "no-themes" }, "This run has no themes.parquet: `cgaps label RUN_DIR` writes it."));
        if (!d.themes.length) return box.replaceChildren(h("p", { class: "muted", id: "no-themes" }, "themes.parquet has no theme in this scope (themes group the concepts called a gap or a strength)."));
        const preferred = THEME_COLUMNS.filter((c) => d.columns.includes(c));
        const cols = (preferred.length ? preferred : d.columns.filter((c) => !["theme", "theme_id", "id", "scope"].includes(c))).slice(0, 9);
        const cell = (v) => (v === null || v === undefined ? "" : evidenceText(v));
        const members = (t) => [
          ...t.members.slice(0, 6).map((m) => h("span", {}, link(`/concept/${m.concept}`, { run: r, scope: scopeName }, `#${m.concept}`), m.label ? ` ${m.label}; ` : "; ")),
          t.size > 6 ? h("span", { class: "muted" }, `… ${t.size - 6} more`) : null,
        ];
        const rows = d.themes.map((t) => h("tr", {}, h("td", {}, String(t.theme)), cols.map((c) => h("td", { class: typeof t.fields[c] === "number" ? "num" : "" }, c === "gap" || c === "status" ? pill(t.fields[c]) : cell(t.fields[c]))), h("td", {}, `${t.size}: `, members(t))));
        box.replaceChildren(h("table", { id: "themes" }, h("thead", {}, h("tr", {}, h("th", {}, "theme"), cols.map((c) => h("th", {}, c)), h("th", {}, "members"))), h("tbody", {}, rows)));
      })
      .catch((e) => seq === state.seq && box.replaceChildren(errorBox(e)));
    return { name: "themes" };
  }

  // ---------------------------------------------------------------- compare two runs

  function Compare(params) {
    const names = state.runs.map((r) => r.name);
    if (names.length < 2) {
      view.append(h("h1", {}, "Compare"), h("p", { class: "muted", id: "compare-one" }, "Compare needs two runs on the same items: `cgaps serve RUN_A RUN_B`."));
      return { name: "compare" };
    }
    const cur = {
      a: params.get("a") || names[0], b: params.get("b") || names[1], scope: params.get("scope") || "",
      q: params.get("q") || "", significant: params.get("significant") === "true", sort: params.get("sort") || "q_value",
      order: params.get("order") || "asc", page: Number(params.get("page") || 1),
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
    const sig = h("input", { type: "checkbox" });
    sig.checked = cur.significant;
    sig.addEventListener("change", () => push({ significant: sig.checked }));
    const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    view.append(h("h1", {}, "Compare χ_model of two runs"), h("div", { class: "controls" }, "A ", sel("a"), " B ", sel("b"), scope, search, h("label", {}, sig, " significant only")), box);
    const seq = ++state.seq;
    api("/api/compare", { ...cur, per_page: PAGE })
      .then((d) => {
        if (seq !== state.seq) return;
        const cols = [["concept", "concept"], [null, "label / tokens"], ["chi_a", `χ_model A (${d.a})`], ["chi_b", `χ_model B (${d.b})`], ["diff", "A − B"], ["abs_z", "|z|"], ["q_value", "q"]];
        const head = h("tr", {}, cols.map(([k, t]) => {
          if (!k) return h("th", {}, t);
          const th = h("th", { class: `sortable num ${cur.sort === k ? cur.order : ""}` }, t);
          th.addEventListener("click", () => push({ sort: k, order: cur.sort === k && cur.order === "asc" ? "desc" : "asc" }));
          return th;
        }));
        const body = h("tbody", {}, d.rows.map((x) => h("tr", { dataset: { concept: x.concept } },
          h("td", { class: "num" }, link(`/concept/${x.concept}`, { run: d.a === names[0] ? "" : d.a }, String(x.concept))),
          h("td", { class: "label" }, describe(x)),
          h("td", { class: "num" }, `${fmt(x.chi_a)} (${x.support_a})`),
          h("td", { class: "num" }, `${fmt(x.chi_b)} (${x.support_b})`),
          h("td", { class: `num ${x.diff === null ? "" : x.diff < 0 ? "neg" : "pos"}` }, signed(x.diff)),
          h("td", { class: "num" }, fmt(x.abs_z, 2)),
          h("td", { class: "num" }, fq(x.q_value), x.q_value !== null && x.q_value <= d.fdr ? h("span", { class: "pill weak" }, "significant") : null))));
        const pages = Math.max(Math.ceil(d.total / d.per_page), 1);
        box.replaceChildren(
          ...[h("p", { id: "compare-summary" }, `${d.items.shared.toLocaleString()} shared items (A ${d.items.a.toLocaleString()}, B ${d.items.b.toLocaleString()}); ${d.n_significant} concepts differ at FDR ${d.fdr}. z from the standard errors the two Wilson intervals imply (support in brackets); for the paired test of two models use “cgaps compare”.`),
          d.items.shared < Math.max(d.items.a, d.items.b) ? h("p", { class: "error" }, "The two runs do not hold the same items: differences mix items and models.") : null,
          h("table", { id: "compare" }, h("thead", {}, head), body),
          h("div", { class: "pager" },
            cur.page > 1 ? link("/compare", { ...cur, page: cur.page - 1 }, "‹ previous") : "",
            h("span", {}, `page ${cur.page} of ${pages} (${d.total.toLocaleString()} concepts)`),
            cur.page < pages ? link("/compare", { ...cur, page: cur.page + 1 }, "next ›") : "")].filter(Boolean)
        );
        frame(() => (perf.compares = (perf.compares || 0) + 1));
      })
      .catch((e) => seq === state.seq && box.replaceChildren(errorBox(e)));
    return { name: "compare" };
  }

  // ---------------------------------------------------------------- start

  api("/api/runs")
    .then((d) => {
      state.runs = d.runs;
      state.sorts = d.sorts;
      runSelect.replaceChildren(...d.runs.map((r) => h("option", { value: r.name }, r.name)));
      document.getElementById("runbox").hidden = d.runs.length < 2;
      route();
    })
    .catch((e) => view.replaceChildren(errorBox(e)));
})();
