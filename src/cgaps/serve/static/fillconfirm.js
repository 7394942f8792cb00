// The explorer's fill and confirm panels (cgaps fill, cgaps confirm), drawn where the run has
// results: on the Benchmarks page (every filled benchmark, the replication rates) and on a
// concept's page (its confirmation). app.js hands over its helpers (h sets text only, never
// markup), so this file builds no HTML from data either.
"use strict";
(function () {
  const share = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
  const num = (x) => (x === null || x === undefined ? "–" : x.toFixed(3));
  const RATES = { concepts: "called concepts", controls: "random concepts, matched support", themes: "themes" };

  function rates(h, c) {
    return h("table", { class: "confirm-rates" },
      h("thead", {}, h("tr", {}, ["re-tested", "calls", "tested", "replicated", "rate"].map((t, i) => h("th", { class: i ? "num" : "" }, t)))),
      h("tbody", {}, Object.entries(c.rates || {}).filter(([, r]) => r.calls).map(([k, r]) =>
        h("tr", {}, h("td", {}, RATES[k] || k), h("td", { class: "num" }, String(r.calls)), h("td", { class: "num" }, String(r.tested)),
          h("td", { class: "num" }, String(r.replicated)), h("td", { class: "num" }, r.rate === null ? "–" : `${(100 * r.rate).toFixed(r.rate >= 0.1 ? 0 : 1)}%`)))));
  }

  function benchmarks(box, run, u) {
    const { h, api } = u;
    const card = h("div", { id: "fill-confirm" });
    box.appendChild(card);
    Promise.all([api("/api/confirm", { run }), api("/api/fill", { run })]).then(([c, f]) => {
      const conf = c.confirm;
      if (conf) {
        card.append(h("h2", {}, `Confirmed on ${conf.fresh_items} fresh items`),
          conf.stale ? h("p", { class: "error" }, "made from an earlier concepts.parquet: rerun cgaps confirm") : "",
          h("p", { class: "muted" }, `calls of ${conf.scope} tested again on pool ${conf.pool} (answered by ${conf.answered_by}), one-sided, BH at q ≤ ${conf.fdr} per family`),
          rates(h, conf));
      }
      if (f.fills && f.fills.length) {
        card.append(h("h2", {}, "Filling what the benchmarks miss"),
          h("table", { id: "fill-table" },
            h("thead", {}, h("tr", {}, ["benchmark", "chosen", "missing before", "+ fill", "+ random", "+ by group"].map((t, i) => h("th", { class: i ? "num" : "" }, t)))),
            h("tbody", {}, f.fills.map((x) => x.error ? h("tr", {}, h("td", { colspan: "6" }, x.error)) :
              h("tr", {}, h("td", {}, x.benchmark), h("td", { class: "num" }, `${x.selected} of ${x.pool_items}`), h("td", { class: "num" }, share(x.before.missing)),
                ["fill", "random", "group"].map((a) => h("td", { class: "num" }, x.arms[a] ? share(x.arms[a].missing) + (x.arms[a].measured ? "" : " (predicted)") : "–")))))));
      }
    }).catch((e) => card.appendChild(h("p", { class: "error" }, `fill / confirm: ${e.message || e}`)));
  }

  function concept(box, run, n, u) {
    const { h, api } = u;
    api("/api/confirm", { run, concept: n }).then((c) => {
      const conf = c.confirm;
      if (!conf || !conf.rows.length) return;
      box.appendChild(h("div", { class: "card", id: "concept-confirm" }, h("h3", {}, `Confirmed on ${conf.fresh_items} fresh items`),
        conf.rows.map((r) => h("p", {}, `${r.role === "called" ? "called " + r.call : "control (tested " + r.call + ")"}: `,
          r.replicated ? h("b", {}, "replicated") : r.tested ? "not replicated" : `not tested (present on ${r.support_fresh} fresh items)`,
          ` · χ_model ${num(r.chi_model_fresh)} vs expected ${num(r.expected_fresh)} on the fresh items (run: ${num(r.chi_model_run)} vs ${num(r.expected_run)}), q ${num(r.q_fresh)}`))));
    }).catch(() => {});
  }

  window.CgFillConfirm = { benchmarks, concept };
})();
