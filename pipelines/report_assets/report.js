/* metaextract report: renders the packed catalog data with Chart.js and Tabulator. */
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const fatal = (msg) => { const el = $("fatal"); el.hidden = false; el.textContent = "Report error: " + msg; };
  window.addEventListener("error", (e) => fatal(e.message));

  async function unpack(id) {
    const text = $(id).textContent.trim();
    const bin = atob(text);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return JSON.parse(await new Response(stream).text());
  }

  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  function bytes(n) {
    if (n === null || n === undefined) return "";
    let u = 0;
    while (Math.abs(n) >= 1024 && u < UNITS.length - 1) { n /= 1024; u++; }
    return u === 0 ? n + " B" : n.toFixed(1) + " " + UNITS[u];
  }
  const num = (n) => (n === null || n === undefined) ? "–" : Number(n).toLocaleString("en-US");
  function when(epoch) {
    if (epoch === null || epoch === undefined) return "";
    return new Date(epoch * 1000).toISOString().slice(0, 16).replace("T", " ");
  }
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }
  const PALETTE = ["#2f6fb3", "#e07b39", "#3a9c5b", "#b3261e", "#7d58b6", "#8c6d3f", "#d45fa6", "#6b7280", "#1fa2a8", "#c2a000"];
  const STATUS_COLORS = { ok: "#3a9c5b", error: "#b3261e", unsupported: "#9aa3b2" };

  // --- Run ------------------------------------------------------------------------------
  function renderRun(page) {
    const r = page.run;
    const facts = [
      ["files", num(r.files_total)], ["bytes", bytes(r.bytes_total)],
      ["duration", r.duration_s === null || r.duration_s === undefined ? "–" : r.duration_s.toFixed(1) + " s"],
      ["files/s", num(r.files_per_s)], ["GB/s", r.gb_per_s === null || r.gb_per_s === undefined ? "–" : r.gb_per_s.toFixed(3)],
      ["catalog size (Parquet)", bytes(r.catalog_bytes)],
    ];
    if (r.bytes_read !== undefined) {
      facts.push(["bytes read", bytes(r.bytes_read) + (r.bytes_total ? " (" + (100 * r.bytes_read / r.bytes_total).toFixed(2) + "% of stored)" : "")]);
    } else {
      facts.push(["bytes read vs stored", "not recorded"]);
    }
    if (r.changes) for (const k of ["new", "changed", "unchanged", "deleted"]) facts.push(["change: " + k, num(r.changes[k] || 0)]);
    if (r.files_extracted !== undefined) facts.push(["files read", num(r.files_extracted)]);
    if (r.files_carried_forward !== undefined) facts.push(["carried forward", num(r.files_carried_forward)]);
    if (r.memory) {
      for (const [k, v] of Object.entries(r.memory)) facts.push([k.replace(/_/g, " "), typeof v === "number" ? (/bytes/.test(k) ? bytes(v) : num(v)) : JSON.stringify(v)]);
    } else {
      facts.push(["peak memory / pressure events", "not recorded"]);
    }
    const time = (t) => t ? t.slice(0, 19).replace("T", " ") + " UTC" : "–";
    facts.push(["started", time(r.started_at)], ["finished", time(r.finished_at)], ["run", r.run_id || "–"], ["version", r.extractor_version || "–"]);
    if (r.alert) facts.push(["alert", r.alert]);
    const box = $("run-facts");
    for (const [label, value] of facts) box.append(el("div", { class: "fact" }, el("b", {}, value), el("span", {}, label)));

    const table = el("table", { class: "plain", id: "counts-table" });
    table.append(el("tr", {}, el("th", {}, "format"), el("th", {}, "status"), el("th", { class: "num" }, "files"), el("th", { class: "num" }, "bytes")));
    for (const [f, s, n, b] of page.status_counts) {
      table.append(el("tr", {}, el("td", {}, f), el("td", {}, s), el("td", { class: "num" }, num(n)), el("td", { class: "num" }, bytes(b))));
    }
    $("run-counts").append(table);
    const formats = [...new Set(page.status_counts.map((r) => r[0]))];
    const statuses = [...new Set(page.status_counts.map((r) => r[1]))];
    const datasets = statuses.map((s, i) => ({
      label: s, backgroundColor: STATUS_COLORS[s] || PALETTE[i % PALETTE.length],
      data: formats.map((f) => { const row = page.status_counts.find((r) => r[0] === f && r[1] === s); return row ? row[2] : 0; }),
    }));
    barChart($("chart-status"), formats, datasets, { stacked: true, title: "files per format and status" });
    $("run-manifest").textContent = JSON.stringify(page.manifest, null, 2);
  }

  // --- Plots ----------------------------------------------------------------------------
  function barChart(canvas, labels, datasets, opts) {
    opts = opts || {};
    const horizontal = !!opts.horizontal;
    const valueAxis = { stacked: !!opts.stacked, beginAtZero: true, ticks: { precision: 0 }, title: { display: !!opts.valueTitle, text: opts.valueTitle || "" } };
    const labelAxis = { stacked: !!opts.stacked, title: { display: !!opts.labelTitle, text: opts.labelTitle || "" } };
    return new Chart(canvas, {
      type: "bar",
      data: { labels, datasets },
      options: {
        indexAxis: horizontal ? "y" : "x", responsive: true, maintainAspectRatio: false, animation: false,
        plugins: { legend: { display: datasets.length > 1 }, title: { display: !!opts.title && !canvas.closest(".plot"), text: opts.title || "" } },
        scales: horizontal ? { x: valueAxis, y: labelAxis } : { x: labelAxis, y: valueAxis },
      },
    });
  }
  function plotBox(id, title) {
    const canvas = el("canvas", { id: "chart-" + id });
    const box = el("div", { class: "plot", id: "plot-" + id }, el("h3", {}, title), el("div", { class: "canvas-box" }, canvas));
    $("plot-grid").append(box);
    return canvas;
  }
  function pairs(id, title, data, color, valueTitle) {
    if (!data || !data.length) return;
    barChart(plotBox(id, title), data.map((d) => d[0]), [{ label: valueTitle, data: data.map((d) => d[1]), backgroundColor: color }],
      { horizontal: true, valueTitle });
  }
  function series(id, title, data, opts) {
    if (!data || !data.labels.length) return;
    const datasets = Object.entries(data.series).map(([name, values], i) => ({ label: name, data: values, backgroundColor: PALETTE[i % PALETTE.length] }));
    barChart(plotBox(id, title), data.labels, datasets, Object.assign({ stacked: true }, opts));
  }
  function renderPlots(page) {
    const p = page.plots;
    series("sizes", "File sizes per format (log scale: bins of 2×)", p.sizes, { labelTitle: "size from", valueTitle: "files" });
    series("months", "Files by modification month", p.modified_months, { valueTitle: "files" });
    pairs("errors", "Error types", p.error_types, "#b3261e", "files");
    pairs("modalities", "DICOM modalities", p.dicom_modalities, PALETTE[0], "instances");
    if (p.dicom_studies_per_month) {
      barChart(plotBox("studies", "DICOM studies per month (study date)"), p.dicom_studies_per_month.map((d) => d[0]),
        [{ label: "studies", data: p.dicom_studies_per_month.map((d) => d[1]), backgroundColor: PALETTE[4] }], { valueTitle: "studies" });
    }
    pairs("fits", "FITS telescopes / instruments", p.fits_instruments, PALETTE[1], "files");
    pairs("netcdf", "NetCDF variables by standard_name", p.netcdf_standard_names, PALETTE[2], "files");
    pairs("dtypes", "HDF5 dataset dtypes", p.hdf5_dtypes, PALETTE[5], "datasets");
    pairs("compression", "HDF5 dataset compression", p.hdf5_compression, PALETTE[8], "datasets");
    if (!$("plot-grid").children.length) $("plot-grid").append(el("p", { class: "muted" }, "Nothing to plot: the catalog is empty."));
  }

  // --- Files table ----------------------------------------------------------------------
  let detailsData = null;
  async function showDetails(row) {
    const box = $("details");
    box.hidden = false;
    $("details-title").textContent = row.path;
    $("details-body").textContent = "Loading…";
    if (detailsData === null) detailsData = await unpack("details-data");
    const entry = detailsData[String(row.i)];
    let text;
    if (entry) {
      text = JSON.stringify(entry, null, 2);
    } else {
      const fields = { path: row.path, format: row.format, format_version: row.version, status: row.status, change: row.change,
        size_bytes: row.size, modified: when(row.modified), key_fields: row.key, error: row.error };
      text = "The full metadata of this file is not embedded in the report (size budget). Query it from the catalog:\n" +
        "  duckdb -c \"select * from '" + CATALOG + "/files/*.parquet' where path = '" + row.path.replace(/'/g, "''") + "'\"\n\n" +
        JSON.stringify(fields, null, 2);
    }
    $("details-body").textContent = text;
    box.dataset.path = row.path;
    box.scrollIntoView({ block: "nearest" });
  }
  let CATALOG = "";
  function renderFiles(page) {
    const f = page.files;
    const n = f.n.length;
    const rows = new Array(n);
    for (let i = 0; i < n; i++) {
      rows[i] = { i, path: f.dirs[f.d[i]] + f.n[i], format: f.formats[f.f[i]], version: f.versions[f.v[i]], size: f.s[i],
        modified: f.m[i], status: f.statuses[f.t[i]], change: f.changes[f.c[i]], key: f.k[i], error: f.e[i] };
    }
    const hasChange = f.changes.some((c) => c !== null);
    const count = $("files-count");
    const table = new Tabulator("#files-table", {
      data: rows, index: "i", layout: "fitColumns", pagination: true, paginationSize: 50,
      paginationSizeSelector: [25, 50, 100, 500], paginationCounter: "rows", placeholder: "No matching files",
      columns: [
        { title: "path", field: "path", widthGrow: 4, headerFilter: "input", tooltip: true },
        { title: "format", field: "format", width: 100, headerFilter: "list", headerFilterParams: { valuesLookup: true, clearable: true } },
        { title: "status", field: "status", width: 110, headerFilter: "list", headerFilterParams: { valuesLookup: true, clearable: true },
          formatter: (c) => { const v = c.getValue(); return v === "ok" ? v : "<b style='color:" + (STATUS_COLORS[v] || "#000") + "'>" + v + "</b>"; } },
        ...(hasChange ? [{ title: "change", field: "change", width: 105, headerFilter: "list", headerFilterParams: { valuesLookup: true, clearable: true } }] : []),
        { title: "size", field: "size", sorter: "number", hozAlign: "right", width: 100, formatter: (c) => bytes(c.getValue()) },
        { title: "modified (UTC)", field: "modified", sorter: "number", width: 140, formatter: (c) => when(c.getValue()) },
        { title: "key fields", field: "key", widthGrow: 3, headerFilter: "input", tooltip: true },
      ],
    });
    table.on("dataFiltered", (filters, shown) => { count.textContent = num(shown.length) + " of " + num(n) + " files"; });
    table.on("tableBuilt", () => { count.textContent = num(n) + " files"; });
    table.on("rowClick", (e, row) => { showDetails(row.getData()).catch((err) => fatal(err.message)); });
    let timer = null;
    $("files-search").addEventListener("input", (e) => {
      clearTimeout(timer);
      const q = e.target.value.trim().toLowerCase();
      timer = setTimeout(() => {
        if (!q) { table.clearFilter(); return; }
        table.setFilter((d) => {
          if (d._h === undefined) d._h = [d.path, d.format, d.status, d.change, d.version, d.key, d.error].join(" ").toLowerCase();
          return d._h.includes(q);
        });
      }, 150);
    });
    $("details-close").addEventListener("click", () => { $("details").hidden = true; });
    window.metaextractFilesTable = table;
  }

  // --- Roll-ups -------------------------------------------------------------------------
  const ROLLUP_TITLES = { dicom_studies: "DICOM studies", dicom_series: "DICOM series", variables: "Variables (NetCDF and HDF5)" };
  function renderRollups(page) {
    const box = $("rollup-tables");
    for (const [name, data] of Object.entries(page.rollups)) {
      const shown = data.rows.length < data.total ? " (first " + num(data.rows.length) + " of " + num(data.total) + ")" : "";
      box.append(el("h3", {}, ROLLUP_TITLES[name] + ": " + num(data.total) + " rows" + shown));
      const holder = el("div", { id: "rollup-" + name });
      box.append(holder);
      if (!data.rows.length) { holder.append(el("p", { class: "muted" }, "none")); continue; }
      const rows = data.rows.map((r) => { const o = {}; for (const [k, v] of Object.entries(r)) o[k] = Array.isArray(v) ? v.join(", ") : v; return o; });
      new Tabulator(holder, {
        data: rows, layout: "fitDataStretch", pagination: true, paginationSize: 10, autoColumns: true,
        autoColumnsDefinitions: (defs) => defs.map((d) => Object.assign(d, {
          headerFilter: "input", tooltip: true, maxWidth: 420,
          ...(/bytes/.test(d.field) ? { formatter: (c) => bytes(c.getValue()), sorter: "number", headerFilter: false } : {}),
          ...(/count$/.test(d.field) ? { sorter: "number", headerFilter: false } : {}),
        })),
      });
    }
    if (!Object.keys(page.rollups).length) box.append(el("p", { class: "muted" }, "This catalog has no roll-up tables."));
  }

  // --- Errors ---------------------------------------------------------------------------
  function renderErrors(page) {
    const box = $("error-groups");
    if (!page.errors.length) { box.append(el("p", { class: "muted" }, "No file failed.")); return; }
    for (const g of page.errors) {
      const group = el("div", { class: "error-group" }, el("h3", {}, g.type + ": " + num(g.count) + " file" + (g.count > 1 ? "s" : "")));
      for (const ex of g.examples) group.append(el("code", {}, ex.path + "\n  " + ex.message));
      box.append(group);
    }
  }

  async function main() {
    const page = await unpack("page-data");
    CATALOG = page.catalog_url;
    $("generated").textContent = page.generated_at;
    renderRun(page);
    renderPlots(page);
    renderFiles(page);
    renderRollups(page);
    renderErrors(page);
    document.body.dataset.ready = "true";
  }
  main().catch((err) => { fatal(err && err.message ? err.message : String(err)); throw err; });
})();
