/* vitscope UI scripts: clientside callbacks (query picking, permalink history, figure export, downloads).
 * Loaded by Dash from frontend_assets/; the Python side calls them through
 * ClientsideFunction("vitscope", name), i.e. window.dash_clientside.vitscope.<name>(...).
 * Geometry (grid, patch, what a map shows) is read from each attention figure's layout.meta, which the server
 * writes (app/figures/attention.py); nothing here knows a model's shape on its own. */
(function () {
  "use strict";

  function noUpdate() {
    return window.dash_clientside.no_update;
  }

  function triggeredId() {
    var cc = window.dash_clientside && window.dash_clientside.callback_context;
    if (!cc) return null;
    if (cc.triggered_id !== undefined && cc.triggered_id !== null) return cc.triggered_id;
    var t = cc.triggered && cc.triggered[0];
    if (!t || !t.prop_id) return null;
    return t.prop_id.split(".")[0];
  }

  function round4(v) {
    return Math.round(v * 10000) / 10000;
  }

  function clamp(v, lo, hi) {
    return Math.min(hi, Math.max(lo, v));
  }

  function rowCol(query, g) {
    if (!query || typeof query !== "object") return [null, null];
    return [
      clamp(Math.floor(query.y * g.grid[0]), 0, g.grid[0] - 1),
      clamp(Math.floor(query.x * g.grid[1]), 0, g.grid[1] - 1),
    ];
  }

  function centreOf(r, c, g) {
    return { y: round4((r + 0.5) / g.grid[0]), x: round4((c + 0.5) / g.grid[1]) };
  }

  // --- the click-to-maps fast path ------------------------------------------------------------------------
  var fast = { seq: 0, shift: false, refused: {} };

  function prefix() {
    if (fast.prefix !== undefined) return fast.prefix;
    var p = "/";
    try {
      var cfg = JSON.parse(document.getElementById("_dash-config").textContent);
      p = cfg.requests_pathname_prefix || "/";
    } catch (e) {
      p = "/";
    }
    fast.prefix = p.charAt(p.length - 1) === "/" ? p : p + "/";
    return fast.prefix;
  }

  /* The drawn attention maps of the first query, in column order (column i holds {"type": "att-graph",
   * "index": i}); the second query's row (#att-grid2) is drawn by the server. */
  function attentionGraphs() {
    var out = [];
    document.querySelectorAll("#att-grid > .att-col").forEach(function (col, i) {
      var gd = col.querySelector(".js-plotly-plot");
      if (!gd || !gd.data || !gd.data.length || !gd.layout || !gd.layout.meta || !gd.layout.meta.image) return;
      out.push({ slot: i, gd: gd });
    });
    return out;
  }

  /* The patch under a click on a drawn map, in that map's grid (its layout.meta). */
  function cellAt(meta, x, y) {
    return [clamp(Math.floor(y / meta.patch), 0, meta.grid[0] - 1),
            clamp(Math.floor(x / meta.patch), 0, meta.grid[1] - 1)];
  }

  function queryIndex(query, grid) {
    if (!query || typeof query !== "object") return "cls";
    var rc = rowCol(query, { grid: grid });
    return rc[0] * grid[1] + rc[1];
  }

  function describe(meta, index) {
    var head = meta.rollout ? null : meta.head === "mean" ? "mean of heads" : "head " + meta.head;
    var q = "CLS query";
    if (index !== "cls") {
      var r = Math.floor(index / meta.grid[1]);
      var c = index % meta.grid[1];
      q = "query patch (" + r + ", " + c + ") = #" + index;
    }
    var what = meta.rollout ? "rollout to block " + meta.layer : "block " + meta.layer + " · " + head;
    return what + " · " + q;
  }

  function queryShape(meta, index) {
    if (index === "cls") return [];
    var P = meta.patch;
    var r = Math.floor(index / meta.grid[1]);
    var c = index % meta.grid[1];
    return [{
      type: "rect", xref: "x", yref: "y", x0: c * P, x1: (c + 1) * P, y0: r * P, y1: (r + 1) * P,
      line: { color: "#22d3ee", width: 2.5 }, fillcolor: "rgba(0,0,0,0)", layer: "above",
    }];
  }

  function setMessage(slot, text) {
    var sp = window.dash_clientside && window.dash_clientside.set_props;
    if (sp) sp({ type: "att-msg", index: slot }, { children: text });
  }

  /* Fetch the maps of a new query for every drawn column at once and redraw them in place. The layer, head,
   * model and image come from each figure's layout.meta; a newer query or a redraw in between wins. */
  function showQuery(query) {
    var graphs = attentionGraphs().filter(function (g) {
      return g.gd.layout.meta.query !== queryIndex(query, g.gd.layout.meta.grid); // not already shown
    });
    if (!graphs.length) return fast.pending ? fast.pending.promise : Promise.resolve(null);
    var key = JSON.stringify([query, graphs.map(function (g) { return g.gd.layout.meta; })]);
    if (fast.pending && fast.pending.key === key) return fast.pending.promise; // already on its way
    var seq = ++fast.seq;
    var base = prefix() + "_vitscope/attention?";
    var promise = Promise.all(graphs.map(function (g) {
      var m = g.gd.layout.meta;
      var index = queryIndex(query, m.grid);
      var url = base + "image=" + encodeURIComponent(m.image) + "&model=" + encodeURIComponent(m.model) +
        "&layer=" + m.layer + "&head=" + encodeURIComponent(m.head) + "&query=" + index +
        (m.rollout ? "&rollout=true" : "");
      return fetch(url, { credentials: "same-origin" })
        .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
        .catch(function (e) { return { ok: false, body: { error: { message: "the UI server did not answer: " + e } } }; })
        .then(function (res) { return { g: g, meta: m, index: index, res: res }; });
    })).then(function (results) {
      if (seq !== fast.seq) return; // a newer query is on its way
      results.forEach(function (x) {
        var now = x.g.gd.layout && x.g.gd.layout.meta;
        if (!now || now.model !== x.meta.model || now.layer !== x.meta.layer || now.head !== x.meta.head ||
            now.image !== x.meta.image || now.rollout !== x.meta.rollout) return; // redrawn meanwhile
        var title = String((x.g.gd.layout.title && x.g.gd.layout.title.text) || "").split("<br>")[0];
        if (!x.res.ok || !x.res.body || !x.res.body.map) {
          // Refused (a CLS query of a model without CLS): the API's message, and no map of another query.
          var err = x.res.body && x.res.body.error;
          setMessage(x.g.slot, (err && err.message) || "no map for this query");
          fast.refused[x.g.slot] = true;
          var none = Object.assign({}, x.meta, { query: x.index });
          window.Plotly.update(x.g.gd, { z: [[]] }, {
            shapes: [], "title.text": title + "<br><sup>" + describe(none, x.index) + ": no map</sup>", meta: none,
          });
          return;
        }
        if (fast.refused[x.g.slot]) { // the refusal's message goes with the map it stood for
          setMessage(x.g.slot, null);
          delete fast.refused[x.g.slot];
        }
        var meta = Object.assign({}, x.meta, { query: x.index, filename: x.res.body.filename });
        window.Plotly.update(x.g.gd, { z: [x.res.body.map] }, {
          shapes: queryShape(meta, x.index),
          "title.text": title + "<br><sup>" + describe(meta, x.index) + "</sup>",
          meta: meta,
        });
      });
    }).finally(function () {
      if (fast.pending && fast.pending.promise === promise) fast.pending = null;
    });
    fast.pending = { key: key, promise: promise };
    return promise;
  }

  /* Resolve a clientside callback's outputs only once the maps are drawn: Dash's own work for the new state
   * (stores, inputs, address bar) then waits instead of competing with the drawing. */
  function after(promise, outputs) {
    return promise.then(function () { return outputs; }, function () { return outputs; });
  }

  /* Whether the last press on the page held Shift: a Shift+click on a map sets the second query instead (read
   * in the capture phase, before Plotly and Dash see the click). */
  document.addEventListener("mousedown", function (ev) { fast.shift = !!ev.shiftKey; }, true);

  /* Start fetching on Plotly's own click event, before Dash has turned it into clickData (the Dash callback
   * that follows finds the same query on its way and only waits for it). */
  function hookClicks() {
    attentionGraphs().forEach(function (g) {
      var gd = g.gd;
      if (gd.__vitscopeHooked || typeof gd.on !== "function") return;
      gd.__vitscopeHooked = true;
      gd.on("plotly_click", function (ev) {
        var p = ev && ev.points && ev.points[0];
        var meta = p && p.fullData && this.layout && this.layout.meta;
        if (!meta || !meta.grid || fast.shift) return;
        var rc = cellAt(meta, p.x, p.y);
        showQuery(centreOf(rc[0], rc[1], { grid: meta.grid }));
      }.bind(gd));
    });
  }

  /* Hovering a token in the 2D view outlines its patch on the attention map of that model, when that map shows
   * the token's image. The tokens figure's points carry [token, row, col, image id, model] (customdata). */
  function markPatch(cd) {
    attentionGraphs().forEach(function (g) {
      var meta = g.gd.layout.meta;
      var keep = (g.gd.layout.shapes || []).filter(function (sh) { return sh.name !== "token-hover"; });
      if (cd && meta.model === cd[4] && meta.image === cd[3]) {
        var P = meta.patch;
        keep = keep.concat([{
          name: "token-hover", type: "rect", xref: "x", yref: "y", x0: cd[2] * P, x1: (cd[2] + 1) * P,
          y0: cd[1] * P, y1: (cd[1] + 1) * P, line: { color: "#ffffff", width: 2, dash: "dot" },
          fillcolor: "rgba(255,255,255,0.15)", layer: "above",
        }]);
      }
      window.Plotly.relayout(g.gd, { shapes: keep });
    });
  }

  function hookTokens() {
    var gd = document.querySelector("#tok-graph .js-plotly-plot");
    if (!gd || gd.__vitscopeHover || typeof gd.on !== "function") return;
    gd.__vitscopeHover = true;
    gd.on("plotly_hover", function (ev) {
      var p = ev && ev.points && ev.points[0];
      if (p && p.customdata && p.customdata.length >= 5) markPatch(p.customdata);
    });
    gd.on("plotly_unhover", function () { markPatch(null); });
  }

  /* The layer box (the slider's number input) takes Enter, not only a blur. */
  function hookLayerBox() {
    var box = document.querySelector("#ctl-layer input");
    if (!box || box.__vitscopeEnter) return;
    box.__vitscopeEnter = true;
    box.addEventListener("keydown", function (ev) {
      if (ev.key !== "Enter") return;
      ev.preventDefault();
      box.blur();
      box.focus();
    });
  }

  /* Keyboard reach for the parts Dash renders as plain divs (the drop zone, the copy button) and names for the
   * slider handles. */
  var KEYBOARD = [
    [".ctl-link-row .clip", "Copy the permalink"],
  ];
  var NAMES = [
    ["#ctl-layer [role=slider]", "Layer (block)"],
    ["#ctl-opacity [role=slider]", "Overlay opacity"],
    ["#ctl-layer input", "Layer (block) number"],
    ["#ctl-opacity input", "Overlay opacity value"],
  ];

  function hookKeyboard() {
    KEYBOARD.forEach(function (pair) {
      var el = document.querySelector(pair[0]);
      if (!el || el.__vitscopeKeys) return;
      el.__vitscopeKeys = true;
      el.setAttribute("tabindex", "0");
      el.setAttribute("role", "button");
      el.setAttribute("aria-label", pair[1]);
      el.addEventListener("keydown", function (ev) {
        if (ev.key !== "Enter" && ev.key !== " ") return;
        ev.preventDefault();
        var target = el.querySelector("input[type=file]") || el.querySelector("svg, span") || el;
        target.click();
      });
    });
    NAMES.forEach(function (pair) {
      var el = document.querySelector(pair[0]);
      if (el && !el.getAttribute("aria-label")) el.setAttribute("aria-label", pair[1]);
    });
  }

  // --- uploads: straight to the API where the page can reach it, else through the UI server ----------------
  function setProps(id, props) {
    var sp = window.dash_clientside && window.dash_clientside.set_props;
    if (sp) sp(id, props);
  }

  function postFile(url, file) {
    var form = new FormData();
    form.append("file", file, file.name);
    return fetch(url, { method: "POST", body: form, credentials: "same-origin" }).then(function (r) {
      var type = r.headers.get("content-type") || "";
      if (type.indexOf("json") < 0) return { json: false, status: r.status };
      return r.json().then(
        function (body) { return { json: true, status: r.status, body: body }; },
        function () { return { json: false, status: r.status }; }
      );
    }, function (e) {
      return { json: false, status: 0, message: "the server did not answer (" + e + ")" };
    });
  }

  function uploadOne(file) {
    // The API's own route keeps its own size limit; a 401/403/404/405 or a non-JSON answer means it is not
    // reachable from here (token, UI on its own, a proxy): then the UI server passes the file on.
    return postFile("/api/v1/images", file).then(function (res) {
      if (res.json && [401, 403, 404, 405].indexOf(res.status) < 0) return res;
      return postFile(prefix() + "_vitscope/upload", file);
    }).then(function (res) {
      var ok = (res.status === 200 || res.status === 201) && res.body && res.body.id;
      return { name: file.name, ok: !!ok, status: res.status, body: res.body || null, message: res.message || null };
    });
  }

  function uploadFiles(fileList) {
    var files = Array.prototype.slice.call(fileList || []);
    if (!files.length) return;
    setProps("img-upload-status", { children: "Uploading " + files.length + " file(s)…" });
    Promise.all(files.map(uploadOne)).then(function (results) {
      setProps("img-upload-status", { children: null });
      setProps("img-uploaded", { data: { results: results, at: Date.now() } });
    });
  }

  function hookUpload() {
    var zone = document.getElementById("img-upload");
    if (!zone || zone.__vitscopeUpload) return;
    zone.__vitscopeUpload = true;
    var input = document.getElementById("img-upload-input");
    if (!input) {
      input = document.createElement("input");
      input.type = "file";
      input.multiple = true;
      input.id = "img-upload-input";
      input.className = "visually-hidden";
      input.tabIndex = -1;
      input.setAttribute("aria-hidden", "true");
      document.body.appendChild(input);
      input.addEventListener("change", function () {
        var files = Array.prototype.slice.call(input.files || []);
        input.value = "";
        uploadFiles(files);
      });
    }
    zone.setAttribute("tabindex", "0");
    zone.setAttribute("role", "button");
    zone.setAttribute("aria-label", "Choose image files to upload, or drop them here");
    zone.addEventListener("click", function () { input.click(); });
    zone.addEventListener("keydown", function (ev) {
      if (ev.key !== "Enter" && ev.key !== " ") return;
      ev.preventDefault();
      input.click();
    });
    zone.addEventListener("dragover", function (ev) {
      ev.preventDefault();
      zone.classList.add("dropzone-active");
    });
    zone.addEventListener("dragleave", function () { zone.classList.remove("dropzone-active"); });
    zone.addEventListener("drop", function (ev) {
      ev.preventDefault();
      zone.classList.remove("dropzone-active");
      uploadFiles(ev.dataTransfer && ev.dataTransfer.files);
    });
  }

  // --- set work: "metrics of set … with m: 7 of 14 images" while a panel computes ---------------------------
  var work = { busy: false };

  function describeWork(list) {
    return list.map(function (j) {
      var count = j.kind === "set-metrics" ? ": " + j.done + " of " + j.total + " images"
        : j.kind === "set-cka" || j.kind === "set-pca" ? ": " + j.done + " of " + j.total + " steps" : "";
      return j.description + count;
    }).join(" · ");
  }

  function pollWork() {
    var el = document.getElementById("work-status");
    var loading = document.querySelector("[data-dash-is-loading='true']");
    if (!el || work.busy || (!loading && !el.textContent)) return;
    work.busy = true;
    fetch(prefix() + "_vitscope/work", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : { work: [] }; })
      .then(function (body) {
        var text = describeWork(body.work || []);
        el.textContent = text ? "Working on the set: " + text : "";
      }, function () { el.textContent = ""; })
      .finally(function () { work.busy = false; });
  }
  window.setInterval(pollWork, 700);

  var hookQueued = false;
  new MutationObserver(function () {
    if (hookQueued) return;
    hookQueued = true;
    window.requestAnimationFrame(function () {
      hookQueued = false;
      hookClicks();
      hookKeyboard();
      hookUpload();
      hookLayerBox();
      hookTokens();
    });
  }).observe(document.documentElement, { childList: true, subtree: true });

  // --- history: one entry per view change; Back and Forward go through the views --------------------------
  var nav = { replaceNext: true }; // the first write after opening or after Back/Forward replaces
  window.addEventListener("popstate", function () { nav.replaceNext = true; });

  // --- model downloads: follow each job and move its bar ---------------------------------------------------
  var pulls = {};

  function followJob(model, job) {
    if (pulls[model]) return pulls[model];
    var id = { type: "mdl-progress", id: model };
    var msg = { type: "mdl-pull-msg", id: model };
    setProps(id, { style: {}, value: "0" });
    pulls[model] = new Promise(function (resolve) {
      function tick() {
        fetch(prefix() + "_vitscope/jobs/" + encodeURIComponent(job), { credentials: "same-origin" })
          .then(function (r) { return r.json(); })
          .then(function (j) {
            if (j.error && !j.status) { setProps(msg, { children: j.error.message }); resolve(false); return; }
            setProps(id, { value: String(j.progress) });
            setProps(msg, { children: Math.round(100 * j.progress) + " %" });
            if (j.status === "succeeded") { setProps(msg, { children: "downloaded" }); resolve(true); return; }
            if (j.status === "failed") {
              setProps(msg, { children: (j.error && j.error.message) || "the download failed" });
              resolve(false);
              return;
            }
            window.setTimeout(tick, 300);
          }, function (e) { setProps(msg, { children: "the UI server did not answer: " + e }); resolve(false); });
      }
      tick();
    });
    return pulls[model];
  }

  window.dash_clientside = window.dash_clientside || {};
  window.dash_clientside.vitscope = {
    /* The small multiples ask the server only while their panel is open. */
    headsRequest: function (isOpen, meta, layer, query) {
      if (!isOpen) return noUpdate();
      return { meta: meta, layer: layer, query: query, at: Date.now() };
    },

    /* Overlay opacity, in the browser only: a restyle of the drawn maps while the handle moves. */
    setOpacity: function (opacity) {
      if (opacity === null || opacity === undefined) return noUpdate();
      document.querySelectorAll(".att-grid > .att-col .js-plotly-plot").forEach(function (gd) {
        if (gd.data && gd.data.length) window.Plotly.restyle(gd, { opacity: opacity }, [0]);
      });
      return opacity;
    },

    /* (clickData of every column, CLS clicks, row, col, query) -> [query, row, col]. The boxes name a patch
     * of the first column's grid. A Shift+click sets the second query (att-query2) instead. */
    queryControl: function (clicks, clsClicks, row, col, query) {
      var nu = noUpdate();
      var trig = triggeredId();
      var graphs = attentionGraphs();
      var first = graphs.length ? graphs[0].gd.layout.meta : null;
      if (trig && typeof trig === "object" && trig.type === "att-graph") {
        var cd = (clicks || [])[trig.index];
        var g = graphs.filter(function (x) { return x.slot === trig.index; })[0];
        if (!cd || !cd.points || !cd.points.length || !g) return [nu, nu, nu];
        var rc = cellAt(g.gd.layout.meta, cd.points[0].x, cd.points[0].y);
        var q = centreOf(rc[0], rc[1], g.gd.layout.meta);
        if (fast.shift) { // Shift+click: this place becomes the second query (its row is drawn by the server)
          setProps("att-query2", { data: q });
          return [nu, nu, nu];
        }
        var box = rowCol(q, first);
        return after(showQuery(q), [q, box[0], box[1]]);
      }
      if (trig === "ctl-cls") return after(showQuery("cls"), ["cls", null, null]);
      if (trig === "ctl-row" || trig === "ctl-col") {
        if (!first) return [nu, nu, nu];
        var hasRow = row !== null && row !== undefined && row !== "";
        var hasCol = col !== null && col !== undefined && col !== "";
        if (!hasRow && !hasCol) return after(showQuery("cls"), ["cls", nu, nu]);
        var rr = clamp(hasRow ? Math.floor(Number(row)) : Math.floor(first.grid[0] / 2), 0, first.grid[0] - 1);
        var cc = clamp(hasCol ? Math.floor(Number(col)) : Math.floor(first.grid[1] / 2), 0, first.grid[1] - 1);
        var now = rowCol(query, first);
        if (now[0] === rr && now[1] === cc) return [nu, nu, nu]; // the boxes only caught up with the query
        var q2 = centreOf(rr, cc, first);
        return after(showQuery(q2), [q2, rr, cc]);
      }
      if (trig === "ctl-query") {
        // Set from outside (a permalink, Back/Forward): redraw the drawn maps for it.
        showQuery(query);
        if (!first) return [nu, nu, nu];
        var rc2 = rowCol(query, first);
        return [nu, rc2[0], rc2[1]];
      }
      return [nu, nu, nu];
    },

    /* The maps were (re)drawn by the server: the boxes follow the first column's grid. */
    syncBoxes: function (figures, query) {
      var meta = null;
      (figures || []).some(function (f) {
        meta = f && f.layout && f.layout.meta && f.layout.meta.grid ? f.layout.meta : null;
        return meta !== null;
      });
      if (!meta) return [noUpdate(), noUpdate(), "or click a patch on a map"];
      var rc = rowCol(query, meta);
      var hint = "row and col of the " + meta.grid[0] + "x" + meta.grid[1] + " grid of " + meta.model +
        "; or click a patch on a map";
      return [rc[0], rc[1], hint];
    },

    /* The server's query string of the view -> the address bar: a new history entry per view change. */
    writeUrl: function (search) {
      if (typeof search !== "string" || search.charAt(0) !== "?") return noUpdate();
      if (window.location.search !== search) {
        var url = window.location.pathname + search;
        if (nav.replaceNext) window.history.replaceState(window.history.state, "", url);
        else window.history.pushState(null, "", url);
      }
      nav.replaceNext = false;
      // dcc.Location compares the address with what it last knew: tell it, so Back to any entry is heard (the
      // server's restore sees the view unchanged and does nothing). All of it: a Location that has not yet
      // reported its first href would otherwise push that older address (the bare page) over this one.
      var loc = window.location;
      setProps("url-in", { search: search, pathname: loc.pathname, href: loc.href, hash: loc.hash });
      return window.location.href;
    },

    /* Open or close a disclosure (app.components.common.disclosure). */
    disclose: function (n, label) {
      var open = (n || 0) % 2 === 1;
      return [open ? {} : { display: "none" }, open ? "true" : "false", open, [open ? "▾ " : "▸ ", label]];
    },

    /* Follow the download jobs the server started; once one finishes, the model list is read again. */
    followPulls: function (started) {
      var waits = Object.keys(started || {}).map(function (model) {
        var s = started[model];
        if (s.error) {
          setProps({ type: "mdl-pull-msg", id: model }, { children: s.error });
          return Promise.resolve(false);
        }
        if (s.done) return Promise.resolve(true);
        return followJob(model, s.job);
      });
      return Promise.all(waits).then(function (done) {
        return done.some(Boolean) ? { at: Date.now() } : noUpdate();
      });
    },

    /* Save every drawn figure of a panel as PNG or SVG (the button that fired says which). */
    exportImages: function (_png, _svg, panelId) {
      var trig = String(triggeredId() || "");
      var format = /svg$/.test(trig) ? "svg" : "png";
      var panel = document.getElementById(panelId);
      if (!panel || !window.Plotly) return noUpdate();
      var count = 0;
      panel.querySelectorAll(".js-plotly-plot").forEach(function (gd) {
        if (!gd.data || !gd.data.length || gd.offsetParent === null) return;
        var holder = gd.closest("[id]");
        var name = (gd.layout.meta && gd.layout.meta.filename) ||
          "vitscope-" + ((holder && holder.id) || panelId + "-" + count).replace(/[^A-Za-z0-9]+/g, "-");
        window.Plotly.downloadImage(gd, {
          format: format,
          filename: name,
          scale: format === "png" ? 2 : 1,
          width: gd._fullLayout ? gd._fullLayout.width : undefined,
          height: gd._fullLayout ? gd._fullLayout.height : undefined,
        });
        count += 1;
      });
      return { format: format, count: count, at: Date.now() };
    },
  };
})();
