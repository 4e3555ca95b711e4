/* Draws every <figure class="chart" data-chart-src="…"> with the vendored Chart.js, from
   the JSON its data-chart-src names (the portal's JSON API). Without JavaScript, or if
   this fails, the figure's table holds the same figures. After drawing, the figure gets
   data-chart-state="rendered" and data-chart-total (the sum of every value drawn). */
(function () {
  "use strict";

  var PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
                 "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

  function brandColour() {
    var value = getComputedStyle(document.documentElement).getPropertyValue("--brand").trim();
    return value || PALETTE[0];
  }

  function draw(figure) {
    if (figure.dataset.chartState) { return; }
    figure.dataset.chartState = "loading";
    fetch(figure.dataset.chartSrc, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        var canvas = figure.querySelector("canvas");
        var total = 0;
        var datasets = data.series.map(function (series, index) {
          var values = series.values.map(Number);
          values.forEach(function (v) { total += v; });
          var colour = index === 0 ? brandColour() : PALETTE[index % PALETTE.length];
          return { label: series.label, data: values, backgroundColor: colour, borderColor: colour };
        });
        new window.Chart(canvas, {
          type: "bar",
          data: { labels: data.days, datasets: datasets },
          options: {
            responsive: true,
            maintainAspectRatio: false,
            animation: false,
            interaction: { mode: "index", intersect: false },
            scales: { x: { stacked: false }, y: { beginAtZero: true } },
            plugins: { legend: { position: "bottom" } }
          }
        });
        figure.dataset.chartTotal = String(total);
        figure.dataset.chartState = "rendered";
      })
      .catch(function (error) {
        figure.dataset.chartState = "failed";
        var details = figure.querySelector("details");
        if (details) { details.open = true; }
        if (window.console) { window.console.warn("chart not drawn:", error); }
      });
  }

  function drawAll() {
    document.querySelectorAll("figure.chart[data-chart-src]").forEach(draw);
  }

  document.addEventListener("DOMContentLoaded", drawAll);
  // htmx swaps the usage section in place when the period changes.
  document.addEventListener("htmx:afterSettle", drawAll);
})();
