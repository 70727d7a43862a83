// The statistics page's quality-over-time charts, drawn with the vendored Chart.js from the numbers
// the page embeds (classifier.quality.quality_over_time, in the "quality-data" script element).
(() => {
  "use strict";

  const source = document.getElementById("quality-data");
  if (!source || !window.Chart) return;
  const data = JSON.parse(source.textContent);
  const COLORS = ["#2456d6", "#17803d", "#b42318", "#8a4fd3", "#c26a00", "#0f7c8c", "#5d6470", "#c2417a"];
  const color = (i) => COLORS[i % COLORS.length];
  const percent = (value) => (value == null ? "–" : `${(100 * value).toFixed(1)}%`);
  const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

  window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  window.Chart.defaults.color = "#5d6470";

  // Switches of the active version, grouped by day: a dashed vertical line with its label on top.
  const switchesByDay = new Map();
  for (const s of data.switches) {
    const text = `${s.version} ${s.action_display}`;
    switchesByDay.set(s.day, [...(switchesByDay.get(s.day) || []), text]);
  }
  const switchMarkers = {
    id: "switchMarkers",
    afterDatasetsDraw(chart) {
      const { ctx, chartArea, scales } = chart;
      ctx.save();
      ctx.strokeStyle = "#1b1e24";
      ctx.fillStyle = "#1b1e24";
      ctx.setLineDash([5, 4]);
      ctx.font = `11px ${window.Chart.defaults.font.family}`;
      for (const [day, texts] of switchesByDay) {
        const index = data.days.indexOf(day);
        if (index < 0) continue;
        const x = scales.x.getPixelForValue(index);
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

  function lineChart(canvas, { series, yTitle, max, tooltip }) {
    return new window.Chart(canvas, {
      type: "line",
      data: {
        labels: data.days,
        datasets: data.versions.map((v, i) => ({
          label: v.label, data: series(v), borderColor: color(i), backgroundColor: color(i), spanGaps: true,
        })),
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        elements: { point: { radius: 3 }, line: { borderWidth: 2, tension: 0 } },
        scales: {
          x: { title: { display: true, text: "day" } },
          y: { title: { display: true, text: yTitle }, suggestedMax: max, ticks: { callback: (value) => percent(value) } },
        },
        plugins: { legend: { labels: { boxWidth: 12 } }, tooltip: { callbacks: { label: tooltip } } },
      },
      plugins: [switchMarkers],
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
      datasets: data.versions.map((v, i) => {
        const total = v.confidence_histogram.reduce((a, b) => a + b, 0) || 1;
        return { label: v.label, data: v.confidence_histogram.map((n) => n / total), backgroundColor: color(i) };
      }),
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      scales: {
        x: { title: { display: true, text: "confidence" } },
        y: { title: { display: true, text: "share of answers" }, ticks: { callback: (value) => percent(value) } },
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
})();
