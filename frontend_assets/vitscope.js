/* vitscope UI scripts: clientside callbacks (query picking, permalink writing, figure export).
 * Loaded by Dash from frontend_assets/; the Python side calls them as window.vitscope.<name>(...). */
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

  function gridOf(meta, model) {
    var s = meta && meta.models && model && meta.models[model];
    return s ? { grid: s.grid, patch: s.patch_size } : null;
  }

  function firstGrid(meta, models) {
    var list = models || [];
    for (var i = 0; i < list.length; i++) {
      var g = gridOf(meta, list[i]);
      if (g) return g;
    }
    return { grid: [14, 14], patch: 16 };
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

  // One number for the permalink, like Python's f"{v:.4g}".
  function fmt(v) {
    return String(Number(Number(v).toPrecision(4)));
  }

  window.vitscope = {
    /* (clickData x4, cls clicks, row, col, query, meta, models) -> [query, row, col] */
    queryControl: function (c0, c1, c2, c3, clsClicks, row, col, query, meta, models) {
      var nu = noUpdate();
      var trig = triggeredId();
      var first = firstGrid(meta, models);
      if (typeof trig === "string" && trig.indexOf("att-graph-") === 0) {
        var i = parseInt(trig.slice("att-graph-".length), 10);
        var cd = [c0, c1, c2, c3][i];
        if (!cd || !cd.points || !cd.points.length) return [nu, nu, nu];
        var g = gridOf(meta, (models || [])[i]) || first;
        var p = cd.points[0];
        var r = clamp(Math.floor(p.y / g.patch), 0, g.grid[0] - 1);
        var c = clamp(Math.floor(p.x / g.patch), 0, g.grid[1] - 1);
        var q = centreOf(r, c, g);
        var rc = rowCol(q, first);
        return [q, rc[0], rc[1]];
      }
      if (trig === "ctl-cls") return ["cls", null, null];
      if (trig === "ctl-row" || trig === "ctl-col") {
        var hasRow = row !== null && row !== undefined && row !== "";
        var hasCol = col !== null && col !== undefined && col !== "";
        if (!hasRow && !hasCol) return ["cls", nu, nu];
        var rr = clamp(hasRow ? Math.floor(Number(row)) : Math.floor(first.grid[0] / 2), 0, first.grid[0] - 1);
        var ccol = clamp(hasCol ? Math.floor(Number(col)) : Math.floor(first.grid[1] / 2), 0, first.grid[1] - 1);
        return [centreOf(rr, ccol, first), rr, ccol];
      }
      if (trig === "ctl-query") {
        var rc2 = rowCol(query, first);
        return [nu, rc2[0], rc2[1]];
      }
      return [nu, nu, nu];
    },

    /* (images store, models, layer, head, query, ready) -> the permalink; rewrites the address bar in place. */
    writeUrl: function (img, models, layer, head, query, ready) {
      if (!ready) return noUpdate();
      var parts = [];
      var ids = (img && img.ids) || [];
      if (ids.length) {
        parts.push("images=" + ids.join(","));
        var a = ids.indexOf(img.active);
        if (a > 0) parts.push("active=" + a);
      }
      if (models && models.length) parts.push("models=" + models.map(encodeURIComponent).join(","));
      if (layer !== null && layer !== undefined) parts.push("layer=" + layer);
      parts.push("head=" + encodeURIComponent(head === null || head === undefined ? "mean" : head));
      parts.push(
        "query=" + (query && typeof query === "object" ? fmt(query.y) + "," + fmt(query.x) : "cls")
      );
      var search = "?" + parts.join("&");
      if (window.location.search !== search) {
        window.history.replaceState(window.history.state, "", window.location.pathname + search);
      }
      return window.location.href;
    },

    /* Save every drawn figure of a panel as PNG or SVG (the button that fired says which). */
    exportImages: function (panelId) {
      var trig = String(triggeredId() || "");
      var format = /svg$/.test(trig) ? "svg" : "png";
      var panel = document.getElementById(panelId);
      if (!panel || !window.Plotly) return noUpdate();
      var count = 0;
      panel.querySelectorAll(".js-plotly-plot").forEach(function (gd) {
        if (!gd.data || !gd.data.length || gd.offsetParent === null) return;
        var holder = gd.closest("[id]");
        var name = (holder && holder.id) || panelId + "-" + count;
        window.Plotly.downloadImage(gd, {
          format: format,
          filename: "vitscope-" + name,
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
