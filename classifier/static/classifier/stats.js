// The statistics page's quality charts, drawn with the vendored Chart.js from the numbers the page
// embeds: per day (classifier.quality.quality_over_time, the "quality-data" script element) and per N
// labelled drawings (classifier.quality.quality_by_drawings, "quality-drawings-data"). Either may be
// absent; each chart is drawn from its own data.
(() => {
  "use strict";

  if (!window.Chart) return;
  const readJson = (id) => {
    const element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : null;
  };
  const perDay = readJson("quality-data");
  const perDrawings = readJson("quality-drawings-data");
  if (!perDay && !perDrawings) return;

  // One colour per model version on every chart, in the order of the versions' ids.
  const COLORS = ["#2456d6", "#17803d", "#b42318", "#8a4fd3", "#c26a00", "#0f7c8c", "#5d6470", "#c2417a"];
  const versionIds = [...new Set([...(perDay?.versions || []), ...(perDrawings?.versions || [])].map((v) => v.id))]
    .sort((a, b) => a - b);
  const color = (version) => COLORS[versionIds.indexOf(version.id) % COLORS.length];
  const percent = (value) => (value == null ? "–" : `${(100 * value).toFixed(1)}%`);
  const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);
  // A share axis's tick labels, with as many decimals as the step between ticks needs to tell them apart
  // (mean confidence per day can span 99.95%-100%: one decimal would label every tick "100.0%").
  const percentTick = (value, index, ticks) => {
    const step = ticks.length > 1 ? Math.abs(ticks[1].value - ticks[0].value) : 1;
    const decimals = Math.min(4, Math.max(0, Math.ceil(-Math.log10(100 * step) - 1e-9)));
    return `${(100 * value).toFixed(decimals)}%`;
  };
  // ... and no narrower than a hundredth of a percentage point, so that two decimals always suffice.
  const MIN_SHARE_SPAN = 1e-4;
  const widenShareAxis = (scale) => {
    if (scale.max - scale.min < MIN_SHARE_SPAN) scale.min = Math.max(0, scale.max - MIN_SHARE_SPAN);
  };

  window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  window.Chart.defaults.color = "#5d6470";

  // Switches of the active version: a dashed vertical line at each x value, with its labels on top.
  // `markers` maps an x value of the chart's scale to the texts drawn there.
  function switchMarkers(markers) {
    return {
      id: "switchMarkers",
      afterDatasetsDraw(chart) {
        const { ctx, chartArea, scales } = chart;
        ctx.save();
        ctx.strokeStyle = "#1b1e24";
        ctx.fillStyle = "#1b1e24";
        ctx.setLineDash([5, 4]);
        ctx.font = `11px ${window.Chart.defaults.font.family}`;
        for (const [value, texts] of markers) {
          const x = scales.x.getPixelForValue(value);
          if (!(x >= chartArea.left && x <= chartArea.right)) continue;
          ctx.beginPath();
          ctx.moveTo(x, chartArea.top);
          ctx.lineTo(x, chartArea.bottom);
          ctx.stroke();
          // The label goes right of the line, or left of it where it would not fit.
          const text = texts.join(", ");
          const width = ctx.measureText(text).width;
          const fitsRight = x + 4 + width <= chartArea.right;
          ctx.textAlign = fitsRight ? "left" : "right";
          const at = fitsRight ? x + 4 : Math.max(x - 4, chartArea.left + width);
          ctx.fillText(text, at, chartArea.top + 12);
        }
        ctx.restore();
      },
    };
  }

  function groupSwitches(switches, valueOf) {
    const markers = new Map();
    for (const s of switches) {
      const value = valueOf(s);
      if (value == null) continue;
      markers.set(value, [...(markers.get(value) || []), `${s.version} ${s.action_display}`]);
    }
    return markers;
  }

  const baseOptions = (xScale, yTitle, max, tooltipCallbacks) => ({
    animation: false,
    responsive: true,
    maintainAspectRatio: false,
    interaction: { mode: "nearest", axis: "x", intersect: false },
    elements: { point: { radius: 3 }, line: { borderWidth: 2, tension: 0 } },
    scales: {
      x: xScale,
      y: { title: { display: true, text: yTitle }, suggestedMax: max, ticks: { callback: percentTick },
           afterDataLimits: widenShareAxis },
    },
    plugins: { legend: { labels: { boxWidth: 12 } }, tooltip: { callbacks: tooltipCallbacks } },
  });

  function drawPerDay(data) {
    const index = new Map(data.days.map((day, i) => [day, i]));
    const markers = switchMarkers(groupSwitches(data.switches, (s) => index.get(s.day)));

    function lineChart(canvas, { series, yTitle, max, tooltip }) {
      return new window.Chart(canvas, {
        type: "line",
        data: {
          labels: data.days,
          datasets: data.versions.map((v) => ({
            label: v.label, data: series(v), borderColor: color(v), backgroundColor: color(v), spanGaps: true,
          })),
        },
        options: baseOptions({ title: { display: true, text: "day" } }, yTitle, max, { label: tooltip }),
        plugins: [markers],
      });
    }

    lineChart(byTestId("quality-accuracy-chart"), {
      series: (v) => v.accuracy,
      yTitle: "accuracy",
      max: 1,
      tooltip: (ctx) => {
        const v = data.versions[ctx.datasetIndex];
        const i = ctx.dataIndex;
        return `${v.label}: ${percent(v.accuracy[i])} (${v.correct[i]} of ${v.labelled[i]} labelled)`;
      },
    });
    lineChart(byTestId("quality-confidence-chart"), {
      series: (v) => v.mean_confidence,
      yTitle: "mean confidence",
      max: 1,
      tooltip: (ctx) => {
        const v = data.versions[ctx.datasetIndex];
        const i = ctx.dataIndex;
        return `${v.label}: ${percent(v.mean_confidence[i])} (${v.predictions[i]} answers)`;
      },
    });

    // Share of each version's answers per confidence band, so versions with more traffic compare fairly.
    const bands = data.bins.slice(0, -1).map((low, i) => `${Math.round(100 * low)}–${Math.round(100 * data.bins[i + 1])}%`);
    new window.Chart(byTestId("quality-histogram-chart"), {
      type: "bar",
      data: {
        labels: bands,
        datasets: data.versions.map((v) => {
          const total = v.confidence_histogram.reduce((a, b) => a + b, 0) || 1;
          return { label: v.label, data: v.confidence_histogram.map((n) => n / total), backgroundColor: color(v) };
        }),
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: {
          x: { title: { display: true, text: "confidence" } },
          y: { title: { display: true, text: "share of answers" }, ticks: { callback: percentTick } },
        },
        plugins: {
          legend: { labels: { boxWidth: 12 } },
          tooltip: {
            callbacks: {
              label: (ctx) => {
                const v = data.versions[ctx.datasetIndex];
                return `${v.label}: ${percent(ctx.parsed.y)} (${v.confidence_histogram[ctx.dataIndex]} answers)`;
              },
            },
          },
        },
      },
    });
  }

  // Accuracy per N labelled drawings: x is the position on the axis of every labelled drawing (1 = the
  // oldest), a point sits at its bucket's last drawing; a switch at position p lies between drawings p
  // and p + 1. A version's last, partly filled bucket is drawn hollow. The x axis reaches a little past the
  // last drawing, so that the point there is drawn whole rather than cut in half by the chart's edge.
  function drawPerDrawings(data) {
    const point = (ctx) => data.versions[ctx.datasetIndex].points[ctx.dataIndex];
    const last = Math.max(data.total, ...data.switches.map((s) => s.position + 0.5));
    const xMax = last + Math.max(1, Math.ceil(0.03 * last));
    new window.Chart(byTestId("quality-drawings-chart"), {
      type: "line",
      data: {
        datasets: data.versions.map((v) => ({
          label: v.label,
          data: v.points.map((p) => ({ x: p.last, y: p.accuracy })),
          borderColor: color(v),
          backgroundColor: color(v),
          pointBackgroundColor: v.points.map((p) => (p.full ? color(v) : "#fff")),
        })),
      },
      options: baseOptions(
        { type: "linear", min: 0, suggestedMax: xMax, title: { display: true, text: "labelled drawings, in the order drawn" },
          ticks: { precision: 0 } },
        "accuracy",
        1,
        {
          title: (items) => (items.length ? `drawings ${point(items[0]).first}–${point(items[0]).last}` : ""),
          label: (ctx) => {
            const p = point(ctx);
            const v = data.versions[ctx.datasetIndex];
            return `${v.label}: ${percent(p.accuracy)} (${p.correct} of ${p.labelled}), mean confidence ${percent(p.mean_confidence)}`;
          },
        },
      ),
      plugins: [switchMarkers(groupSwitches(data.switches, (s) => s.position + 0.5))],
    });
  }

  if (perDay) drawPerDay(perDay);
  if (perDrawings) drawPerDrawings(perDrawings);
})();
