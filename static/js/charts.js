/* Modelbay console: a service's charts (#charts), drawn with the vendored uPlot from
   GET /api/v1/services/{slug}/metrics/series (controlplane/series.py), refreshed every
   10 s. Each line has a dash pattern and marker of its own besides its colour, and the
   legends name every line, so the charts read without colour. */
(function () {
  "use strict";

  var REFRESH_MS = 10000;
  var HEIGHT = 180;
  var COLOURS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2"];
  var DASHES = [[], [8, 4], [2, 3], [10, 3, 2, 3], [4, 4], [1, 5]];

  function style(index, label) {
    return {
      label: label,
      stroke: COLOURS[index % COLOURS.length],
      dash: DASHES[index % DASHES.length],
      width: 2,
      spanGaps: false,
      points: { show: true, size: 5, fill: index % 2 ? "#fff" : COLOURS[index % COLOURS.length] },
    };
  }

  /* What each chart plots: [label, column] pairs from the series answer. */
  var CHARTS = {
    calls: function (series) {
      var lines = [];
      Object.keys(series.versions).forEach(function (version) {
        var columns = series.versions[version];
        lines.push(["v" + version + " calls/s", columns.calls_per_s]);
        lines.push(["v" + version + " errors/s", columns.errors_per_s]);
      });
      return lines;
    },
    latency: function (series) {
      var lines = [];
      Object.keys(series.versions).forEach(function (version) {
        var columns = series.versions[version];
        lines.push(["v" + version + " p50 ms", columns.p50_ms]);
        lines.push(["v" + version + " p99 ms", columns.p99_ms]);
      });
      return lines;
    },
    in_flight: function (series) { return [["calls in flight", series.in_flight]]; },
    replicas: function (series) {
      return [["desired", series.replicas_desired], ["ready", series.replicas_ready]];
    },
  };

  function draw(card, series) {
    card.charts = card.charts || {};
    card.querySelectorAll("[data-chart]").forEach(function (element) {
      var name = element.dataset.chart;
      var lines = CHARTS[name](series);
      var labels = lines.map(function (line) { return line[0]; }).join("|");
      var data = [series.times].concat(lines.map(function (line) { return line[1]; }));
      // How many points have a value: what the page shows at a glance (and tests read).
      element.dataset.values = String(lines.reduce(function (sum, line) {
        return sum + line[1].filter(function (value) { return value !== null; }).length;
      }, 0));
      var chart = card.charts[name];
      if (chart && chart.labels === labels) {
        chart.plot.setData(data);
        return;
      }
      if (chart) chart.plot.destroy();
      var options = {
        width: Math.max(element.clientWidth, 240),
        height: HEIGHT,
        series: [{ label: "time" }].concat(lines.map(function (line, index) { return style(index, line[0]); })),
        axes: [{}, { size: 48 }],
        scales: { x: { time: true } },
      };
      card.charts[name] = { labels: labels, plot: new window.uPlot(options, data, element) };
    });
    card.dataset.drawn = String(Date.now());
  }

  function load(card) {
    var url = card.dataset.seriesUrl + "?window=" + encodeURIComponent(card.dataset.window || "1h");
    var error = card.querySelector("[data-charts-error]");
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) throw new Error(body.detail || "HTTP " + response.status);
          return body;
        });
      })
      .then(function (series) {
        error.hidden = true;
        draw(card, series);
      })
      .catch(function (problem) {
        error.textContent = "The charts could not be loaded: " + problem.message;
        error.hidden = false;
      });
  }

  function resize(card) {
    Object.keys(card.charts || {}).forEach(function (name) {
      var element = card.querySelector('[data-chart="' + name + '"]');
      card.charts[name].plot.setSize({ width: Math.max(element.clientWidth, 240), height: HEIGHT });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var card = document.getElementById("charts");
    if (!card || !window.uPlot) return;
    card.querySelectorAll("[data-window]").forEach(function (button) {
      button.addEventListener("click", function () {
        card.dataset.window = button.dataset.window;
        card.querySelectorAll("[data-window]").forEach(function (other) {
          other.setAttribute("aria-pressed", String(other === button));
        });
        load(card);
      });
    });
    load(card);
    window.setInterval(function () { if (!document.hidden) load(card); }, REFRESH_MS);
    window.addEventListener("resize", function () { resize(card); });
  });
})();
