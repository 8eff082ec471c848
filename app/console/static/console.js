// Tollgate console: progressive enhancement only (every page works without it).
// No inline script anywhere (the Content-Security-Policy forbids it): behaviour hangs on
// data- attributes.
(function () {
  "use strict";
  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : null;
  }
  // htmx requests carry the session's CSRF token as a header.
  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrfToken();
    if (token) { event.detail.headers["X-CSRF-Token"] = token; }
  });
  // <button data-copy="#id">: copy the target's text (a new key's secret).
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) { return; }
    var target = document.querySelector(button.getAttribute("data-copy"));
    if (target && navigator.clipboard) {
      navigator.clipboard.writeText(target.textContent.trim()).then(function () {
        button.textContent = "Copied";
      });
    }
  });
  // <canvas data-chart='{"type": "bar", "labels": [...], "datasets": [{"label": ..., "data": [...]}]}'>
  function drawCharts(root) {
    if (typeof Chart === "undefined") { return; }
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (canvas.dataset.drawn) { return; }
      var spec = JSON.parse(canvas.getAttribute("data-chart"));
      canvas.dataset.drawn = "1";
      // Bars stay bars when there are few of them (one month, one model).
      spec.datasets.forEach(function (d) { if (!d.maxBarThickness) { d.maxBarThickness = 64; } });
      new Chart(canvas, {
        type: spec.type || "bar",
        data: { labels: spec.labels, datasets: spec.datasets },
        options: {
          responsive: true, maintainAspectRatio: false, animation: false,
          scales: spec.stacked ? { x: { stacked: true }, y: { stacked: true, beginAtZero: true } }
                               : { y: { beginAtZero: true } }
        }
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () { drawCharts(document); });
  document.addEventListener("htmx:afterSwap", function (event) { drawCharts(event.target); });
})();
