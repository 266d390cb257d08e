// The mine-the-gap run report: map, charts, thumbnails and tables drawn from the JSON block #mtg-data.
// Plain JavaScript with no libraries and no network access.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("mtg-data").textContent);
  const NS = "http://www.w3.org/2000/svg"; // the SVG namespace name, not a resource
  const SITES = {};
  D.sites.forEach(function (s) { SITES[s.site_id] = s; });

  // ---- small helpers ---------------------------------------------------------------------------------------
  function html(tag, attrs, parent, text) {
    const e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function svg(tag, attrs, parent, text) {
    const e = document.createElementNS(NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function missing(v) { return v === null || v === undefined || (typeof v === "number" && isNaN(v)); }
  function num(v, digits, scale) {
    return (v * (scale || 1)).toLocaleString("en-GB", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  function fmt(v, field) {
    if (Array.isArray(v)) return v.length ? v.join(", ") : "–";
    if (missing(v)) return "–";
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v === "number") return num(v, field ? field.digits : 3, field ? field.scale : 1);
    return String(v);
  }
  function withSigma(row, field) {
    let text = fmt(row[field.key], field);
    if (field.sigma && !missing(row[field.sigma]) && !missing(row[field.key])) text += " ± " + fmt(row[field.sigma], field);
    return text;
  }
  function heading(field) { return field.unit ? field.label + " (" + field.unit + ")" : field.label; }
  function note(parent, key, prefix) {
    if (D.notes[key]) html("p", { class: "note" }, parent, (prefix ? prefix + ": " : "") + D.notes[key]);
  }
  function niceStep(span, ticks) {
    const raw = span / Math.max(ticks, 1);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const m = [1, 2, 2.5, 5, 10].find(function (f) { return f * power >= raw; });
    return m * power;
  }
  // decimals that tell ticks spaced by step apart: exact for nice steps (2.5 -> 1, 0.25 -> 2), else 3 significant
  function stepDigits(step) {
    if (!(step > 0) || !isFinite(step)) return 0;
    const most = Math.max(0, 2 - Math.floor(Math.log10(step)));
    for (let d = 0; d < most; d++) {
      const scaled = step * Math.pow(10, d);
      if (Math.abs(scaled - Math.round(scaled)) < 1e-6 * scaled) return d;
    }
    return most;
  }
  function colour(name) { return D.colours[name] || "#777777"; }
  function siteLabel(id) { return "Site " + id; }
  function commodityWords(site) {
    return site.commodities.length ? site.commodities.join(", ") : D.no_commodity;
  }
  // Enter and Space act as a click on an element that is not a native button
  function onActivate(element, action) {
    element.addEventListener("click", action);
    element.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); action(ev); }
    });
  }

  // ---- headline cards --------------------------------------------------------------------------------------
  (function cards() {
    const S = D.summary, box = document.getElementById("cards");
    function card(value, label) {
      const c = html("div", { class: "card" }, box);
      html("div", { class: "value" }, c, value);
      html("div", { class: "label" }, c, label);
      return c;
    }
    // a stage the run did not compute says so, rather than showing zero
    function measured(value, text, label) {
      const c = card(missing(value) ? "not computed" : text(value), label);
      if (missing(value)) c.classList.add("not-computed");
    }
    const footprints = S.n_polygon_sites + " with a mapped footprint, " + (missing(S.n_imagery_sites)
      ? "segmentation not computed" : S.n_imagery_sites + " of them mapped from imagery");
    card(String(S.n_sites), "mining sites (" + footprints + ")");
    measured(S.area_km2, function (v) { return num(v, 2) + " km²"; }, "mining land in the sites" +
      (S.n_uncertain ? " (" + num(S.area_km2_uncertain, 2) + " km² of it in " + S.n_uncertain +
        " uncertain site" + (S.n_uncertain > 1 ? "s" : "") + ": low probability, no elevation change)" : ""));
    if (S.landuse && !missing(S.landuse.linked_share))
      card(num(S.landuse.linked_share, 0, 100) + " %", "of mining land linked to a commodity");
    measured(S.excavated_m3, function (v) { return num(v, 1, 1e-6) + " million m³"; }, "excavated between the surveys");
    measured(S.deposited_m3, function (v) { return num(v, 1, 1e-6) + " million m³"; }, "deposited between the surveys");
    measured(S.waste_deposit_count, String, "extractive-waste deposits");
  })();

  // ---- map ---------------------------------------------------------------------------------------------------
  const mapSvg = document.getElementById("map");
  const M = D.map;
  const layers = { graticule: svg("g", { class: "graticule", "aria-hidden": "true" }, mapSvg),
                   sites: svg("g", {}, mapSvg), change: svg("g", {}, mapSvg), deposits: svg("g", {}, mapSvg),
                   bubbles: svg("g", {}, mapSvg),
                   labels: svg("g", { class: "labels" }, mapSvg) };
  const shapes = {}; // site id -> the SVG elements that draw it
  let view = M.view.slice(), dragged = false;

  function unitsPerPixel() {
    const box = mapSvg.getBoundingClientRect();
    return Math.max(view[2] / Math.max(box.width, 1), view[3] / Math.max(box.height, 1));
  }
  function applyView() {
    mapSvg.setAttribute("viewBox", view.join(" "));
    const k = unitsPerPixel();
    graticule(k);
    // a region seen from far away shows its name instead of its sites' labels (which would pile up)
    const far = M.regions.map(function (r) { return view[2] > 4 * r.view[2]; });
    M.features.forEach(function (f) {
      shapes[f.id].circle.setAttribute("r", f.r * k);
      shapes[f.id].label.setAttribute("x", f.cx + (f.r + 3) * k);
      shapes[f.id].label.setAttribute("y", f.cy + 4 * k);
      shapes[f.id].label.setAttribute("font-size", 12 * k);
      shapes[f.id].label.setAttribute("visibility", far[f.region] ? "hidden" : "visible");
    });
    // region names are HTML over the map (browsers do not draw SVG text at world-scale font sizes)
    const box = mapSvg.getBoundingClientRect();
    const left = (box.width - view[2] / k) / 2, top = (box.height - view[3] / k) / 2;
    M.regions.forEach(function (r, i) {
      regionLabels[i].style.left = (left + (r.cx - view[0]) / k + 26) + "px";
      regionLabels[i].style.top = (top + (r.cy - view[1]) / k - 9) + "px";
      regionLabels[i].hidden = !far[i];
    });
    // scale bar: Web Mercator metres shrink by cos(latitude) on the ground, at the latitude of the view's centre
    const centreLat = M.regions.length ? Math.atan(Math.sinh(-(view[1] + view[3] / 2) / 6378137)) * 180 / Math.PI
                                       : M.lat0;
    const metresPerPixel = k * Math.cos(centreLat * Math.PI / 180);
    let length = niceStep(metresPerPixel * 120, 1);
    if (length / metresPerPixel > 120) length /= 2;
    const bar = document.querySelector("#scalebar .bar");
    bar.style.width = (length / metresPerPixel) + "px";
    document.querySelector("#scalebar span").textContent = length >= 1000 ? (length / 1000) + " km" : length + " m";
  }
  // Graticule: lines of constant longitude and latitude (straight in Web Mercator), a step that keeps about 4-8
  // lines across the view, and their degrees in HTML at the map's top and left edges.
  const R = 6378137, DEG = Math.PI / 180, MAX_LAT = 85;
  const STEPS = [90, 60, 30, 20, 10]; // degrees, then 5, 2, 1, 0.5, ... down to 1e-6 (about 0.1 m)
  for (let p = 0; p <= 6; p++) [5, 2, 1].forEach(function (m) { STEPS.push(+(m * Math.pow(10, -p)).toPrecision(1)); });
  const gratLabels = html("div", { class: "graticule-labels", "aria-hidden": "true" }, mapSvg.parentNode);
  function mercY(lat) { return -R * Math.log(Math.tan(Math.PI / 4 + lat * DEG / 2)); } // SVG y (down)
  function latOf(y) { return Math.atan(Math.sinh(-y / R)) / DEG; }
  function degrees(v, digits, pos, neg) {
    const text = num(Math.abs(v), digits).replace(/,/g, "") + "°";
    return Math.abs(v) < 1e-9 || Math.abs(Math.abs(v) - 180) < 1e-9 ? text : text + (v > 0 ? pos : neg);
  }
  function graticule(k) {
    const box = mapSvg.getBoundingClientRect();
    // the part of the map on screen (the view box is centred in the svg: preserveAspectRatio meet)
    const x0 = view[0] + view[2] / 2 - box.width / 2 * k, x1 = x0 + box.width * k;
    const y0 = view[1] + view[3] / 2 - box.height / 2 * k, y1 = y0 + box.height * k;
    const lon0 = Math.max(x0 / R / DEG, -180), lon1 = Math.min(x1 / R / DEG, 180);
    const lat0 = Math.max(latOf(y1), -MAX_LAT), lat1 = Math.min(latOf(y0), MAX_LAT);
    const span = Math.max(lon1 - lon0, lat1 - lat0, 0);
    const step = STEPS.slice().reverse().find(function (s) { return span / s <= 7; }) || STEPS[0];
    const digits = stepDigits(step);
    layers.graticule.textContent = "";
    gratLabels.textContent = "";
    if (!(span > 0)) return;
    const top = Math.max(y0, mercY(MAX_LAT)), bottom = Math.min(y1, mercY(-MAX_LAT));
    function ticks(lo, hi) {
      const out = [];
      for (let i = Math.ceil(lo / step - 1e-9); i <= Math.floor(hi / step + 1e-9); i++) out.push(+(i * step).toFixed(9));
      return out;
    }
    ticks(lon0, lon1).forEach(function (lon) {
      const x = lon * DEG * R, px = (x - x0) / k;
      svg("line", { x1: x, x2: x, y1: top, y2: bottom, "data-lon": lon }, layers.graticule);
      if (px > 48 && px < box.width - 30)
        html("span", { class: "graticule-label lon", style: "left:" + px + "px", "data-lon": lon }, gratLabels,
             degrees(lon, digits, "E", "W"));
    });
    ticks(lat0, lat1).forEach(function (lat) {
      const y = mercY(lat), py = (y - y0) / k;
      svg("line", { x1: Math.max(x0, -Math.PI * R), x2: Math.min(x1, Math.PI * R), y1: y, y2: y, "data-lat": lat },
          layers.graticule);
      if (py > 26 && py < box.height - 44)
        html("span", { class: "graticule-label lat", style: "top:" + py + "px", "data-lat": lat }, gratLabels,
             degrees(lat, digits, "N", "S"));
    });
  }
  // Each site is one keyboard stop: its circle (a button); its outline takes clicks only.
  M.features.forEach(function (f) {
    const site = SITES[f.id], fill = colour(site.primary);
    const tip = siteLabel(f.id) + " – " + commodityWords(site);
    const entry = { circle: svg("circle", { cx: f.cx, cy: f.cy, r: f.r, fill: fill, stroke: fill, class: "bubble",
                                             "data-site": f.id, tabindex: 0, role: "button",
                                             "aria-label": tip + ": show its indicators" }, layers.bubbles) };
    svg("title", {}, entry.circle, tip);
    entry.label = svg("text", { x: f.cx, y: f.cy }, layers.labels, siteLabel(f.id));
    if (f.path) {
      entry.path = svg("path", { d: f.path, fill: fill, class: "site", "data-site": f.id }, layers.sites);
      svg("title", {}, entry.path, tip);
      entry.path.addEventListener("click", function () { if (!dragged) select(f.id); });
    }
    shapes[f.id] = entry;
    onActivate(entry.circle, function (ev) { if (ev.type !== "click" || !dragged) select(f.id); });
  });
  M.deposits.forEach(function (d) {
    if (d.path) svg("path", { d: d.path, class: "deposit" }, layers.deposits);
  });
  // "change this year": land that became mining (red) or stopped being mining (green) in the last period
  (D.timeline ? D.timeline.change : []).forEach(function (c) {
    if (!c.path) return;
    const p = svg("path", { d: c.path, class: "change-" + c.change }, layers.change);
    svg("title", {}, p, siteLabel(c.site) + ": " + (c.change === "new" ? "new mining" : "revegetated") + " in " +
        D.timeline.last);
  });
  // regions (mining districts far apart): a name on the map when zoomed out, and a button that zooms to each
  const regionLabels = M.regions.map(function (r) {
    return html("span", { class: "region-label", "aria-hidden": "true" }, mapSvg.parentNode,
                r.name + " (" + r.n_sites + (r.n_sites === 1 ? " site)" : " sites)"));
  });
  (function regionButtons() {
    const box = document.getElementById("regions");
    if (!M.regions.length) { box.hidden = true; return; }
    html("strong", {}, box, "Zoom to:");
    const all = html("button", { type: "button" }, box, "all " + M.regions.length + " regions");
    all.addEventListener("click", function () { view = M.view.slice(); applyView(); });
    M.regions.forEach(function (r) {
      const b = html("button", { type: "button", "data-region": r.name }, box,
                     r.name + " (" + r.n_sites + ")");
      b.addEventListener("click", function () { view = r.view.slice(); applyView(); });
    });
  })();
  mapSvg.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    const box = mapSvg.getBoundingClientRect(), k = unitsPerPixel();
    // the map point under the cursor stays put (the view is centred in the box: preserveAspectRatio meet)
    const px = view[0] + view[2] / 2 + (ev.clientX - box.left - box.width / 2) * k;
    const py = view[1] + view[3] / 2 + (ev.clientY - box.top - box.height / 2) * k;
    const factor = Math.exp(Math.max(-1, Math.min(1, ev.deltaY / 300)));
    view = [px - (px - view[0]) * factor, py - (py - view[1]) * factor, view[2] * factor, view[3] * factor];
    applyView();
  }, { passive: false });
  let drag = null;
  mapSvg.addEventListener("pointerdown", function (ev) {
    drag = { x: ev.clientX, y: ev.clientY, view: view.slice(), k: unitsPerPixel() };
    dragged = false;
  });
  window.addEventListener("pointermove", function (ev) {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) { dragged = true; mapSvg.classList.add("dragging"); }
    if (dragged) {
      view = [drag.view[0] - dx * drag.k, drag.view[1] - dy * drag.k, drag.view[2], drag.view[3]];
      applyView();
    }
  });
  window.addEventListener("pointerup", function () { drag = null; mapSvg.classList.remove("dragging"); });
  document.getElementById("reset-view").addEventListener("click", function () { view = M.view.slice(); applyView(); });
  window.addEventListener("resize", applyView);
  applyView();

  (function legend() {
    const box = document.getElementById("legend");
    note(box, "map", "Map");
    html("strong", {}, box, "Primary commodity:");
    // the long tail of commodities is one class, "other commodities", listed in its item
    const counts = {}, last = [D.other.name, D.several, D.no_commodity];
    const grouped = {};
    D.other.members.forEach(function (n) { grouped[n] = true; });
    D.sites.forEach(function (s) {
      const name = grouped[s.primary] ? D.other.name : s.primary;
      counts[name] = (counts[name] || 0) + 1;
    });
    const names = Object.keys(counts).filter(function (n) { return last.indexOf(n) < 0; }).sort()
      .concat(last.filter(function (n) { return counts[n]; }));
    names.forEach(function (name) {
      const item = html("span", { class: "legend-item", "data-class": name }, box);
      html("span", { class: "swatch", style: "background:" + colour(name) }, item);
      item.appendChild(document.createTextNode(name + " (" + counts[name] + ")"));
      if (name === D.other.name) {
        const listed = D.other.members.filter(function (n) { return D.sites.some(function (s) { return s.primary === n; }); });
        item.title = listed.join(", ");
        html("span", { class: "other-list" }, item, ": " + listed.join(", "));
      }
    });
    html("span", {}, box, "· circle area ∝ mining area · dashed: waste deposits");
  })();

  // ---- selected-site panel -----------------------------------------------------------------------------------
  function select(id) {
    Object.keys(shapes).forEach(function (k) {
      [shapes[k].circle, shapes[k].path].forEach(function (e) { if (e) e.classList.toggle("selected", k === id); });
    });
    document.querySelectorAll("tr[data-site]").forEach(function (tr) {
      tr.classList.toggle("selected", tr.getAttribute("data-site") === id);
    });
    const site = SITES[id], panel = document.getElementById("panel");
    panel.textContent = "";
    html("h3", {}, panel, siteLabel(id));
    const line = html("p", {}, panel);
    html("span", { class: "swatch", style: "background:" + colour(site.primary) }, line);
    line.appendChild(document.createTextNode(site.primary === D.several
      ? "Primary commodities: " + (site.primary_commodities || site.commodities).join(", ")
      : "Primary commodity: " + site.primary));
    const dl = html("dl", {}, panel);
    D.fields.forEach(function (f) {
      if (f.key === "site_id") return;
      html("dt", {}, dl, heading(f));
      html("dd", { "data-key": f.key }, dl, withSigma(site, f));
    });
  }

  // ---- charts ------------------------------------------------------------------------------------------------
  // how far apart the footprints and points of a site may lie: one cut, or a cut chosen for each site
  function cutWords(S) {
    if (S.chosen_cut_counts && S.choose_cut) {
      const counts = Object.keys(S.chosen_cut_counts).sort(function (a, b) { return a - b; }).map(function (m) {
        const n = S.chosen_cut_counts[m];
        return num(Number(m), 0) + " m for " + n + (n === 1 ? " site" : " sites");
      });
      return " Each site joins mapped footprints and inventory points within a distance chosen for it (at most " +
        num(S.choose_cut.h_max_m, 0) + " m, the one that leaves least land without a commodity or split between " +
        "several): " + counts.join(", ") + ".";
    }
    return missing(S.cut_m) ? "" :
      " Sites join mapped footprints and inventory points within " + num(S.cut_m, 0) + " m.";
  }
  (function landuse() {
    const box = document.getElementById("landuse-chart"), split = document.getElementById("landuse-split");
    if (!D.landuse) { note(box, "landuse", "Land use"); return; }
    const S = D.landuse.summary;
    if (S) {
      const bar = html("div", { class: "split", role: "img", "aria-label": "linked and unlinked mining land" }, split);
      [["linked to a commodity", S.linked_km2, S.linked_share, "#0b5394"],
       ["not linked", S.unlinked_km2, S.unlinked_share, "#8a8a8a"]].forEach(function (p) {
        if (!missing(p[2]) && p[2] > 0)
          html("div", { style: "width:" + (100 * p[2]) + "%;background:" + p[3], title: p[0] }, bar,
               p[0] + ": " + num(p[1], 2) + " km² (" + num(p[2], 0, 100) + " %)");
      });
      if (!missing(S.multi_commodity_km2))
        html("p", { class: "explain" }, split, "Mining land at sites linked to more than one commodity: " +
             num(S.multi_commodity_km2, 2) + " km² (" + num(S.multi_commodity_share || 0, 0, 100) + " %)." +
             cutWords(S));
    }
    const rows = D.landuse.rows.slice().sort(function (a, b) { return (b.area_km2 || 0) - (a.area_km2 || 0); });
    const W = 760, left = 150, right = 150, rowH = 26, top = 8, H = top + rows.length * rowH + 30;
    const maxV = Math.max.apply(null, rows.map(function (r) { return r.area_km2 || 0; }).concat([1e-9]));
    const step = niceStep(maxV, 4), axisMax = Math.ceil(maxV / step) * step, plotW = W - left - right;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "Land use by commodity" }, box);
    const x = function (v) { return left + plotW * v / axisMax; };
    for (let t = 0; t <= axisMax + 1e-9; t += step) {
      const g = svg("g", { class: "grid" }, chart);
      svg("line", { x1: x(t), x2: x(t), y1: top, y2: H - 24 }, g);
      svg("text", { class: "tick", x: x(t), y: H - 8, "text-anchor": "middle" }, chart, num(t, stepDigits(step)));
    }
    rows.forEach(function (r, i) {
      const y = top + i * rowH;
      svg("text", { x: left - 8, y: y + rowH / 2 + 4, "text-anchor": "end" }, chart, r.commodity);
      const rect = svg("rect", { class: "bar", x: left, y: y + 4, width: Math.max(x(r.area_km2 || 0) - left, 0.5),
                                 height: rowH - 8, fill: colour(r.commodity) }, chart);
      svg("title", {}, rect, r.commodity + ": " + num(r.area_km2 || 0, 3) + " km²");
      svg("text", { x: x(r.area_km2 || 0) + 6, y: y + rowH / 2 + 4 }, chart,
          num(r.area_km2 || 0, 2) + " km²" + (missing(r.share) ? "" : " (" + num(r.share, 0, 100) + " %)"));
    });
    svg("text", { x: x(axisMax) + 16, y: H - 8 }, chart, "km²");
  })();

  // one line per site: mining area by period with a ±1 sigma band; the 12 sites largest in the last period
  (function timeline() {
    const box = document.getElementById("timeline-chart"), most = 12;
    if (!D.timeline || !D.timeline.rows.length) { note(box, "timeline", "Mining area over time"); return; }
    const T = D.timeline, bySite = {};
    T.rows.forEach(function (r) { (bySite[r.site_id] = bySite[r.site_id] || {})[r.period] = r; });
    const last = function (id) { const r = bySite[id][T.last]; return r && !missing(r.area_m2) ? r.area_m2 : 0; };
    const ids = Object.keys(bySite).sort(function (a, b) { return last(b) - last(a); }).slice(0, most);
    if (Object.keys(bySite).length > most)
      html("p", { class: "explain" }, box, "The " + most + " sites with the largest area in " + T.last + ", of " +
           Object.keys(bySite).length + " (all are in timeline/site_series.parquet).");
    let maxA = 1e-9;
    T.rows.forEach(function (r) { if (!missing(r.area_m2)) maxA = Math.max(maxA, (r.area_m2 + (r.area_sigma_m2 || 0)) / 1e6); });
    const W = 760, H = 320, left = 64, right = 150, top = 16, bottom = 40, plotW = W - left - right, plotH = H - top - bottom;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "Mining area over time per site" }, box);
    const step = niceStep(maxA, 5), axisMax = Math.ceil(maxA / step) * step;
    const x = function (i) { return left + (T.periods.length > 1 ? plotW * i / (T.periods.length - 1) : plotW / 2); };
    const y = function (v) { return top + plotH * (1 - v / axisMax); };
    for (let t = 0; t <= axisMax + 1e-12; t += step) {
      const g = svg("g", { class: "grid" }, chart);
      svg("line", { x1: left, x2: left + plotW, y1: y(t), y2: y(t) }, g);
      svg("text", { class: "tick", x: left - 6, y: y(t) + 4, "text-anchor": "end" }, chart, num(t, stepDigits(step)));
    }
    T.periods.forEach(function (p, i) {
      svg("text", { class: "tick", x: x(i), y: H - bottom + 18, "text-anchor": "middle" }, chart, p);
    });
    svg("text", { x: 12, y: top + plotH / 2, transform: "rotate(-90 12 " + (top + plotH / 2) + ")", "text-anchor": "middle" },
        chart, "km²");
    const palette = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
                     "#1f78b4", "#b2df8a", "#fb9a99", "#cab2d6"];
    ids.forEach(function (id, k) {
      const colour = palette[k % palette.length];
      let segment = [], upper = [], lower = [];
      const flush = function () {
        if (segment.length > 1) {
          svg("path", { d: "M" + upper.concat(lower.reverse()).join("L") + "Z", fill: colour, "fill-opacity": 0.15 }, chart);
          svg("path", { d: "M" + segment.join("L"), fill: "none", stroke: colour, "stroke-width": 2 }, chart);
        }
        segment = []; upper = []; lower = [];
      };
      T.periods.forEach(function (p, i) {
        const r = bySite[id][p];
        if (!r || missing(r.area_m2)) { flush(); return; }  // a period hidden by clouds: a gap, not zero
        const a = r.area_m2 / 1e6, s = (r.area_sigma_m2 || 0) / 1e6;
        segment.push(x(i) + "," + y(a)); upper.push(x(i) + "," + y(a + s)); lower.push(x(i) + "," + y(Math.max(a - s, 0)));
        const dot = svg("circle", { cx: x(i), cy: y(a), r: 3.5, fill: colour }, chart);
        svg("title", {}, dot, siteLabel(id) + " in " + p + ": " + num(a, 3) + " ± " + num(s, 3) + " km²" +
            (r.missing_share > 0 ? " (" + num(r.missing_share, 0, 100) + " % not seen)" : ""));
      });
      flush();
      svg("text", { x: left + plotW + 12, y: top + 14 + k * 18, fill: colour }, chart, siteLabel(id));
    });
  })();

  // one row per site, two horizontal bars (excavated, deposited) with their ±1 sigma; the largest 30 by excavation
  (function volumes() {
    const box = document.getElementById("volume-chart"), most = 30;
    if (!D.volumes) { note(box, "volumes", "Volumes"); return; }
    const scale = 1e-6, series = [["excavated", "Excavated", "#8c510a"], ["deposited", "Deposited", "#35978f"]];
    const rows = D.volumes.rows.slice().sort(function (a, b) { return (b.excavated_m3 || 0) - (a.excavated_m3 || 0); })
      .slice(0, most);
    if (D.volumes.rows.length > most)
      html("p", { class: "explain" }, box, "The " + most + " sites with the largest excavated volume, of " +
           D.volumes.rows.length + " with volumes (all are in the site table below).");
    let maxV = 1e-9;
    rows.forEach(function (r) {
      series.forEach(function (s) { maxV = Math.max(maxV, ((r[s[0] + "_m3"] || 0) + (r[s[0] + "_sigma_m3"] || 0)) * scale); });
    });
    const W = 760, right = 24, top = 30, rowH = 30, bottom = 40, H = top + rows.length * rowH + bottom;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "Volumes per site" }, box);
    const labels = rows.map(function (r, i) {
      return svg("text", { class: "site-label", y: top + i * rowH + rowH / 2 + 4, "text-anchor": "end" }, chart,
                 siteLabel(r.site_id) + " · " + r.primary);
    });
    const widest = Math.max.apply(null, labels.map(function (t) { return t.getComputedTextLength(); }).concat([0]));
    const left = Math.min(Math.ceil(widest) + 14, W / 2), plotW = W - left - right;
    labels.forEach(function (t) { t.setAttribute("x", left - 8); });
    const step = niceStep(maxV, 5), axisMax = Math.ceil(maxV / step) * step;
    const x = function (v) { return left + plotW * Math.max(v, 0) / axisMax; };
    for (let t = 0; t <= axisMax + 1e-9; t += step) {
      const g = svg("g", { class: "grid" }, chart);
      svg("line", { x1: x(t), x2: x(t), y1: top, y2: H - bottom + 4 }, g);
      svg("text", { class: "tick", x: x(t), y: H - bottom + 18, "text-anchor": "middle" }, chart,
          num(t, stepDigits(step)));
    }
    svg("text", { x: left + plotW / 2, y: H - 6, "text-anchor": "middle" }, chart, "million m³");
    const barH = (rowH - 8) / 2;
    rows.forEach(function (r, i) {
      series.forEach(function (s, j) {
        const v = (r[s[0] + "_m3"] || 0) * scale, e = (r[s[0] + "_sigma_m3"] || 0) * scale;
        const by = top + i * rowH + 4 + j * barH, cy = by + barH / 2;
        const rect = svg("rect", { class: "bar", x: left, y: by, width: Math.max(x(v) - left, 0.5), height: barH - 1,
                                   fill: s[2] }, chart);
        svg("title", {}, rect, siteLabel(r.site_id) + " " + s[1].toLowerCase() + ": " + num(v, 2) + " ± " + num(e, 2) + " million m³");
        if (e > 0) {
          const g = svg("g", { class: "err" }, chart);
          svg("line", { x1: x(v - e), x2: x(v + e), y1: cy, y2: cy }, g);
          svg("line", { x1: x(v + e), x2: x(v + e), y1: cy - 3, y2: cy + 3 }, g);
          svg("line", { x1: x(v - e), x2: x(v - e), y1: cy - 3, y2: cy + 3 }, g);
        }
      });
    });
    series.forEach(function (s, j) {
      svg("rect", { x: left + j * 120, y: 8, width: 12, height: 12, fill: s[2] }, chart);
      svg("text", { x: left + 17 + j * 120, y: 18 }, chart, s[1]);
    });
    svg("text", { x: left + 240, y: 18 }, chart, "error bars: ±1 sigma");
  })();

  // ---- raster thumbnails -------------------------------------------------------------------------------------
  (function thumbnails() {
    const box = document.getElementById("thumbs");
    D.thumbnails.forEach(function (t) {
      const fig = html("figure", { "data-key": t.key }, box);
      html("figcaption", {}, fig, t.title);
      const frame = html("div", { class: "thumb" }, fig);
      html("img", { src: t.uri, width: t.width, height: t.height, alt: t.title }, frame);
      const overlay = svg("svg", { viewBox: "0 0 " + t.width + " " + t.height, preserveAspectRatio: "none" }, frame);
      t.outlines.forEach(function (d) { svg("path", { d: d }, overlay); });
      html("div", { class: "colorbar", style: "background:linear-gradient(to right," + t.stops.join(",") + ")" }, fig);
      const ticks = html("div", { class: "ticks" }, fig), u = t.units ? " " + t.units : "";
      const digits = stepDigits((t.vmax - t.vmin) / 2);
      [t.vmin, (t.vmin + t.vmax) / 2, t.vmax].forEach(function (v) { html("span", {}, ticks, num(v, digits) + u); });
      html("div", { class: "source" }, fig, "from " + t.source + ", " + t.width + " × " + t.height + " pixels shown");
    });
    note(box, "dh", "Elevation change");
    note(box, "probability", "Mining probability");
  })();

  // ---- sortable tables ---------------------------------------------------------------------------------------
  // A table cell: the value, and its "± sigma" in a smaller type (the text reads "value ± sigma")
  function cell(tr, row, c, footer) {
    const td = html("td", c.numeric ? { class: "num", "data-key": c.key } : { "data-key": c.key }, tr,
                    fmt(row[c.key], c));
    if (!footer && c.sigma && !missing(row[c.sigma]) && !missing(row[c.key]))
      html("span", { class: "sigma" }, td, " ± " + fmt(row[c.sigma], c));
    return td;
  }
  // Sortable table; a table of many columns shows those marked shown (all when none is marked) and has a chooser
  // of the others, so that it fits the page without a horizontal scrollbar.
  function table(parent, title, source, columns, rows, footer, onRow) {
    html("h3", {}, parent, title);
    if (source) html("div", { class: "source" }, parent, "from " + source);
    const shown = {};
    columns.forEach(function (c, i) { shown[c.key] = i === 0 || c.shown !== false; });
    const chooser = columns.length > 6 ? html("details", { class: "columns" }, parent) : null;
    const wrap = html("div", { class: "table-wrap" }, parent);
    const t = html("table", {}, wrap), head = html("tr", {}, html("thead", {}, t)), body = html("tbody", {}, t);
    let state = { key: null, dir: 1 };
    function showColumns() {
      t.querySelectorAll("th[data-key], td[data-key]").forEach(function (e) {
        e.hidden = !shown[e.getAttribute("data-key")];
      });
      if (chooser) chooser.querySelector("summary").textContent = "Columns: " +
        columns.filter(function (c) { return shown[c.key]; }).length + " of " + columns.length + " shown";
    }
    function fill() {
      body.textContent = "";
      rows.forEach(function (r) {
        const tr = html("tr", onRow ? { "data-site": r.site_id, class: "selectable", tabindex: 0 } : {}, body);
        columns.forEach(function (c) { cell(tr, r, c, false); });
        if (onRow) onActivate(tr, function () { onRow(r.site_id); });
      });
      showColumns();
    }
    columns.forEach(function (c) {
      const th = html("th", { scope: "col", "data-key": c.key, "aria-sort": "none" }, head);
      const button = html("button", { type: "button", title: "Sort by " + c.label }, th, c.label);
      if (c.unit) html("span", { class: "unit" }, button, " (" + c.unit + ")");
      button.addEventListener("click", function () {
        state = { key: c.key, dir: state.key === c.key ? -state.dir : 1 };
        rows.sort(function (a, b) {
          const x = a[c.key], y = b[c.key];
          if (missing(x) || (Array.isArray(x) && !x.length)) return missing(y) ? 0 : 1;
          if (missing(y) || (Array.isArray(y) && !y.length)) return -1;
          if (typeof x === "number" && typeof y === "number") return state.dir * (x - y);
          return state.dir * String(x).localeCompare(String(y), "en", { numeric: true });
        });
        head.querySelectorAll("th").forEach(function (h) { h.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
        fill();
      });
    });
    if (footer && footer.length) {
      const tf = html("tfoot", {}, t);
      footer.forEach(function (r) {
        const tr = html("tr", {}, tf);
        columns.forEach(function (c) { cell(tr, r, c, true); });
      });
    }
    if (chooser) {
      html("summary", {}, chooser);
      const list = html("fieldset", {}, chooser);
      html("legend", {}, list, "Columns of " + title.toLowerCase() + " to show");
      columns.forEach(function (c, i) {
        const label = html("label", {}, list);
        const box = html("input", { type: "checkbox", value: c.key }, label);
        box.checked = shown[c.key];
        if (i === 0) box.disabled = true; // the column that names the row stays
        label.appendChild(document.createTextNode(" " + heading(c)));
        box.addEventListener("change", function () { shown[c.key] = box.checked; showColumns(); });
      });
    }
    fill();
  }
  (function tables() {
    const box = document.getElementById("tables");
    const siteBox = html("div", { id: "site-table" }, box);
    table(siteBox, "Site indicators", D.site_source, D.fields, D.sites.slice(), null, function (id) {
            select(id);
            document.getElementById("map-section").scrollIntoView({ behavior: "smooth" });
          });
    note(siteBox, "indicators", "Site indicators");
    D.tables.forEach(function (t) {
      table(html("div", { id: "table-" + t.key }, box), t.title, t.source, t.columns, t.rows, t.footer, null);
    });
    [["landuse_by_commodity", "Land use by commodity"], ["deposits", "Extractive-waste deposits"],
     ["verification", "Verification flags"]].forEach(function (k) { note(box, k[0], k[1]); });
  })();

  // ---- provenance --------------------------------------------------------------------------------------------
  (function provenance() {
    const P = D.provenance, box = document.getElementById("provenance"), dl = html("dl", {}, box);
    function item(label, value) { if (!missing(value) && value !== "") { html("dt", {}, dl, label); html("dd", {}, dl, value); } }
    item("Run folder", P.run_dir);
    item("Report written", P.created);
    item("Software", P.software);
    item("Input catalog", P.catalog);
    if (P.sample) item("Sample region", "synthetic sample, seed " + P.sample.seed + ", " + P.sample.size_km + " km × " + P.sample.size_km + " km, " + P.sample.n_dates + " Sentinel-2 dates");
    if (!missing(P.reflectance_items)) item("Sentinel-2 scenes", String(P.reflectance_items));
    if (P.dem_items) item("Elevation models", P.dem_items.join(", "));
    item("Map projection of the rasters", P.crs);
    const G = P.segmentation;
    if (G) item("Segmentation", "model " + G.model + ", probability threshold " + num(G.threshold, 2) + ": " +
                G.n_polygons + " mine polygons, " + num((G.mining_area_m2 || 0) / 1e6, 2) + " km² (run on " + G.device + ")");
    const C = P.coregistration;
    if (C) {
      item("Elevation survey dates", (C.before_date || "?") + " → " + (C.after_date || "?"));
      const R = C.coregistration || {};
      item("Co-registration", R.applied ? "later survey shifted " + num(R.shift_x_m, 2) + " m east, " + num(R.shift_y_m, 2) +
           " m north, " + num(R.bias_m, 2) + " m vertical bias removed; stable-terrain NMAD " + num(R.nmad_before_m, 2) +
           " m before, " + num(R.nmad_after_m, 2) + " m after" : "not applied");
      item("Change threshold", num(C.threshold_m, 2) + " m (" + C.threshold_rule + "); correlation range " + num(C.range_m || 0, 0) + " m; voids: " + C.void_policy);
    } else {
      item("Co-registration", "not recorded in this run (volumes/coregistration.json is missing)");
    }
    item("Files behind this report", P.files.join(", "));
    html("h3", {}, box, "Reproduce this run");
    html("p", { class: "explain" }, box, "With mine-the-gap installed (pip install -e . in its source folder), these commands " +
         "make the run folder, this report and the STAC catalog of the results again (add --config FILE if the run used a run-config file):");
    html("pre", {}, box).appendChild(html("code", {}, null, P.commands.join("\n")));
  })();
})();
