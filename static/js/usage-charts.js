/* Modelbay console: an app's usage charts, drawn with the vendored uPlot from the figures
   their block carries ([data-usage-chart] with a JSON script, console/views/usage_charts.py):
   a publisher's billed calls and revenue per day over the last 30 days, a subscriber's calls
   this period day by day against the plan's quota. Drawn when the page loads and again
   whenever live.js reloads their block (the "live:reloaded" event: the app's calls were
   stored). Each line has its own dash and markers besides its colour, and the legend names
   it, so the charts read without colour. Days are UTC days, as the figures are. */
(function () {
  "use strict";

  var HEIGHT = 170;
  var MIN_WIDTH = 240;
  var COUNTS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7];
  var MONEY = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5].concat(COUNTS); // never finer than a cent
  var plots = []; // the charts drawn, to let go of those whose block was replaced

  function day(u, ts) {
    return ts == null ? "–" : new Date(ts * 1000).toISOString().slice(0, 10);
  }

  function whole(u, value) { return value == null ? "–" : Math.round(value).toLocaleString("en"); }
  function cents(u, value) { return value == null ? "–" : value.toFixed(2); }

  /* Per kind of chart: [label, values, style, legend format] of each line, and the y axis's
     labels, steps and least top. */
  var KINDS = {
    calls: function (figures) {
      return {
        lines: [["billed calls", figures.calls, { stroke: "#2563eb", dash: [], fill: "#2563eb" }, whole]],
        ticks: whole,
        incrs: COUNTS,
        least: 1,
      };
    },
    revenue: function (figures) {
      return {
        lines: [["revenue", figures.revenue, { stroke: "#059669", dash: [8, 4], fill: "#fff" }, cents]],
        ticks: cents,
        incrs: MONEY,
        least: 0.05,
      };
    },
    quota: function (figures) {
      var quota = figures.days.map(function () { return figures.quota; });
      return {
        lines: [
          ["calls so far", figures.used, { stroke: "#2563eb", dash: [], fill: "#2563eb" }, whole],
          ["quota", quota, { stroke: "#b91c1c", dash: [6, 4], fill: null }, whole],
        ],
        ticks: whole,
        incrs: COUNTS,
        least: 1,
      };
    },
  };

  function series(line) {
    var style = line[2];
    return {
      label: line[0],
      stroke: style.stroke,
      dash: style.dash,
      width: 2,
      value: line[3],
      points: style.fill ? { show: true, size: 6, fill: style.fill, stroke: style.stroke } : { show: false },
    };
  }

  function width(element) { return Math.max(element.clientWidth, MIN_WIDTH); }

  function draw(chart) {
    var target = chart.querySelector("[data-plot]");
    var source = chart.querySelector('script[type="application/json"]');
    if (!target || !source || target.dataset.drawn) return;
    var figures = JSON.parse(source.textContent);
    var kind = KINDS[chart.dataset.usageChart](figures);
    var options = {
      width: width(target),
      height: HEIGHT,
      tzDate: function (ts) { return window.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      series: [{ label: "day (UTC)", value: day }].concat(kind.lines.map(series)),
      scales: {
        x: { time: true },
        y: { range: function (u, min, max) { return [0, Math.max(max || 0, kind.least) * 1.1]; } },
      },
      axes: [
        {},
        {
          size: 56,
          incrs: kind.incrs,
          values: function (u, ticks) { return ticks.map(function (tick) { return kind.ticks(u, tick); }); },
        },
      ],
    };
    // The legend names the latest day's values whenever the pointer is not on another day;
    // the figure also says them (and tests read them): the last value of its first line.
    var values = kind.lines[0][1].filter(function (value) { return value !== null; });
    var latest = function (u) { if (u.cursor.idx == null) u.setLegend({ idx: Math.max(values.length - 1, 0) }); };
    options.hooks = { ready: [latest], setCursor: [latest], setSize: [latest] };
    var data = [figures.days].concat(kind.lines.map(function (line) { return line[1]; }));
    plots.push({ element: target, plot: new window.uPlot(options, data, target) });
    chart.dataset.last = String(values.length ? values[values.length - 1] : 0);
    target.dataset.drawn = "yes";
  }

  function drawIn(root) {
    plots = plots.filter(function (entry) {
      if (entry.element.isConnected) return true;
      entry.plot.destroy(); // its block was replaced
      return false;
    });
    root.querySelectorAll("[data-usage-chart]").forEach(draw);
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!window.uPlot) return;
    drawIn(document);
    document.addEventListener("live:reloaded", function (event) { drawIn(event.target); });
    window.addEventListener("resize", function () {
      plots.forEach(function (entry) { entry.plot.setSize({ width: width(entry.element), height: HEIGHT }); });
    });
  });
})();
