/* Figure exports, only what needs the browser (Plotly draws the PNG and SVG): a panel's PNG / SVG buttons
 * (panelFigures, then downloadPanel with the names the server gave) and "Export all panels" (collectFigures;
 * the zip and its README are built on the server, app/exports.py). File names are the server's
 * (app.exports.figure_name of each figure's layout.meta). Merged into the namespace vitscope.js sets up
 * (this file loads after it). */
(function () {
  "use strict";

  var dc = (window.dash_clientside = window.dash_clientside || {});
  var ns = (dc.vitscope = dc.vitscope || {});

  // The drawn, visible figures under `root` (hidden columns and empty placeholders left out).
  function drawn(root) {
    return Array.prototype.slice.call((root || document).querySelectorAll(".js-plotly-plot")).filter(
      function (gd) { return gd.data && gd.data.length && gd.layout && gd.offsetParent !== null; }
    );
  }

  function holderId(gd) {
    var holder = gd.parentElement && gd.parentElement.closest("[id]");
    return (holder && holder.id) || "figure";
  }

  function size(gd) {
    var fl = gd._fullLayout || {};
    return { width: fl.width, height: fl.height };
  }

  function triggeredId() {
    var cc = dc.callback_context;
    var t = cc && cc.triggered && cc.triggered[0];
    return t && t.prop_id ? t.prop_id.split(".")[0] : "";
  }

  /* A panel's PNG / SVG button: which figures it holds (for the server to name), in page order. */
  ns.panelFigures = function (_png, _svg, panelId) {
    var panel = document.getElementById(panelId);
    if (!panel) return dc.no_update;
    return {
      panel: panelId,
      format: /svg$/.test(triggeredId()) ? "svg" : "png",
      figures: drawn(panel).map(function (gd) { return { holder: holderId(gd), meta: gd.layout.meta || {} }; }),
      at: Date.now(),
    };
  };

  /* Then download them under those names (the same figures, in the same order). */
  ns.downloadPanel = function (req) {
    var panel = req && document.getElementById(req.panel);
    if (!panel || !window.Plotly) return dc.no_update;
    var figures = drawn(panel);
    figures.forEach(function (gd, i) {
      window.Plotly.downloadImage(gd, Object.assign(size(gd), {
        format: req.format,
        filename: (req.names && req.names[i]) || "vitscope_" + holderId(gd),
        scale: req.format === "png" ? 2 : 1,
      }));
    });
    return { format: req.format, count: figures.length, at: Date.now() };
  };

  /* "Export all panels": every drawn figure as PNG and SVG data URLs with its meta, for the server's zip. */
  ns.collectFigures = function (clicks) {
    if (!clicks || !window.Plotly) return dc.no_update;
    return Promise.all(drawn(document).map(function (gd) {
      var opts = size(gd);
      return Promise.all([
        window.Plotly.toImage(gd, Object.assign({ format: "png", scale: 2 }, opts)),
        window.Plotly.toImage(gd, Object.assign({ format: "svg" }, opts)),
      ]).then(function (images) {
        var title = String((gd.layout.title && gd.layout.title.text) || "").split("<br>")[0];
        return { holder: holderId(gd), meta: gd.layout.meta || {}, title: title, png: images[0], svg: images[1] };
      });
    })).then(function (figures) { return { figures: figures, at: Date.now() }; });
  };
})();
