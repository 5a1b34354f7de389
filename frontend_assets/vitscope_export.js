/* "Export all panels": only what needs the browser (Plotly draws the PNG and SVG of every figure); the zip
 * and its README are built on the server (app/exports.py), which names the files from each figure's
 * layout.meta. Called through ClientsideFunction("vitscope", "collectFigures"); merged into the namespace
 * vitscope.js sets up (this file loads after it). */
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
