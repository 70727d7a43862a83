/* The live training dashboard.
 *
 * Two WebSockets, nothing polled: /ws/training/ keeps the run list fresh (lifecycle events), and
 * /ws/training/<id>/ drives the selected run's charts, progress and results. On every (re)connect a
 * socket's first message is the full state, which replaces what the page had: that is the catch-up
 * after a dropped connection. A third socket follows the run picked for comparison.
 * Staff start runs with POST /api/retrain/ and cancel them with POST /api/runs/<id>/cancel/ (through
 * window.mnistApi, static/site/api.js). The start form's fields come from the run spec; each says how
 * to read it in its data-kind. A finished run's confusion matrix arrives rendered, as the site's one table.
 */
(() => {
  "use strict";

  const initial = JSON.parse(document.getElementById("dashboard-data").textContent);
  const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
  const NO_RETRY_CODES = new Set([4403, 4404]);
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 10000;
  const COLORS = {
    raw: "rgba(36, 86, 214, 0.22)",
    loss: "#2456d6",
    train: "#17803d",
    val: "#2456d6",
    lr: "#b26b00",
    compare: "#9b3fb5",
  };

  const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);
  const el = (tag, props = {}, children = []) => {
    const node = Object.assign(document.createElement(tag), props);
    for (const child of [].concat(children)) node.append(child);
    return node;
  };

  // ------------------------------------------------------------------ formatting

  const percent = (x, digits = 2) => (x == null ? "–" : `${(100 * x).toFixed(digits)}%`);
  const integer = (x) => (x == null ? "–" : Math.round(x).toLocaleString("en-US"));
  // "1 drawing", "2 drawings", "? epochs": the count and the noun in the number the count calls for.
  const count = (n, singular, plural = `${singular}s`) =>
    `${n == null ? "?" : integer(n)} ${Number(n) === 1 ? singular : plural}`;

  function duration(seconds) {
    if (seconds == null || !Number.isFinite(seconds)) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function runSeconds(run) {
    if (!run.started_at) return null;
    const start = Date.parse(run.started_at);
    if (run.finished_at) return (Date.parse(run.finished_at) - start) / 1000;
    return FINISHED.has(run.status) ? null : (Date.now() - start) / 1000;
  }

  const versionLabel = (version) => (version ? `${version.name} v${version.version}` : "–");

  function urlFor(template, id) {
    return template.replace("{id}", encodeURIComponent(id));
  }

  // ------------------------------------------------------------------ a socket that comes back

  class LiveSocket {
    /** A WebSocket to `path` that reconnects with backoff until closed; `onMessage` gets parsed JSON. */
    constructor(path, { onMessage, onStatus = () => {} }) {
      this.path = path;
      this.onMessage = onMessage;
      this.onStatus = onStatus;
      this.attempt = 0;
      this.reconnects = 0;
      this.stopped = false;
      this.timer = null;
      this.connect();
    }

    connect() {
      const url = new URL(this.path, window.location.href);
      url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
      const ws = new WebSocket(url);
      this.ws = ws;
      this.onStatus(this.attempt ? "reconnecting" : "connecting");
      ws.addEventListener("open", () => this.onStatus("open"));
      ws.addEventListener("message", (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        this.attempt = 0;
        this.onMessage(message);
      });
      ws.addEventListener("close", (event) => {
        if (this.ws !== ws) return;
        if (this.stopped) return;
        if (NO_RETRY_CODES.has(event.code)) {
          this.onStatus("closed", event.code);
          return;
        }
        const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** this.attempt) * (0.75 + Math.random() / 2);
        this.attempt += 1;
        this.reconnects += 1;
        this.onStatus("reconnecting");
        this.timer = window.setTimeout(() => this.connect(), delay);
      });
    }

    send(message) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
    }

    close() {
      this.stopped = true;
      window.clearTimeout(this.timer);
      if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    }
  }

  // ------------------------------------------------------------------ one run's data

  class RunData {
    /** What the page knows about one run: the state from the server plus the live events since. */
    constructor(id) {
      this.id = id;
      this.state = null;
      this.batches = [];
      this.epochs = [];
      this.etaAt = performance.now();
    }

    get lastStep() {
      return this.batches.length ? this.batches[this.batches.length - 1].step : 0;
    }

    applyState(state) {
      this.state = state;
      this.batches = (state.history?.batches || []).filter((point) => point.loss != null);
      this.epochs = [...(state.history?.epochs || [])];
      this.etaAt = performance.now();
    }

    applyProgress(data) {
      const progress = this.state.progress;
      switch (data.kind) {
        case "start":
          progress.total_steps = data.total_steps;
          progress.total_epochs = data.epochs;
          this.state.device = data.device;
          break;
        case "batch":
          if (data.step > this.lastStep && data.loss != null) {
            this.batches.push({ step: data.step, epoch: data.epoch, loss: data.loss, lr: data.lr, samples_per_s: data.samples_per_s });
          }
          Object.assign(progress, {
            epoch: data.epoch, step: data.step, total_steps: data.total_steps, fraction: data.progress,
            eta_s: data.eta_s, samples_per_s: data.samples_per_s,
          });
          this.etaAt = performance.now();
          break;
        case "epoch": {
          const at = this.epochs.findIndex((record) => record.epoch === data.epoch);
          const record = { ...data };
          delete record.kind;
          delete record.run;
          if (at >= 0) this.epochs[at] = record;
          else this.epochs.push(record);
          this.epochs.sort((a, b) => a.epoch - b.epoch);
          progress.epoch = data.epoch;
          if (data.total_epochs) progress.total_epochs = data.total_epochs;
          break;
        }
        case "evaluate":
          this.state.metrics = {
            ...(this.state.metrics || {}),
            test_accuracy: data.test_accuracy, field_accuracy: data.field_accuracy, field_n: data.field_n,
          };
          break;
        default:
          break;
      }
    }

    applyLifecycle(data) {
      this.state.status = data.status;
      const summary = data.summary;
      if (!summary) return;
      for (const key of ["status", "started_at", "finished_at", "error", "result_version", "promoted", "cancel_requested"]) {
        if (key in summary) this.state[key] = summary[key];
      }
    }
  }

  // ------------------------------------------------------------------ charts

  function lineChart(canvas, { xTitle, yTitle, percentAxis = false, points = false }) {
    return new window.Chart(canvas, {
      type: "line",
      data: { datasets: [] },
      options: {
        animation: false,
        parsing: false,
        normalized: true,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        elements: { point: { radius: points ? 3 : 0 }, line: { borderWidth: 2, tension: 0 } },
        scales: {
          x: { type: "linear", title: { display: true, text: xTitle }, ticks: { precision: 0 } },
          y: {
            title: { display: true, text: yTitle },
            ticks: percentAxis ? { callback: (value) => `${(100 * value).toFixed(1)}%` } : {},
          },
        },
        plugins: {
          legend: {
            labels: { boxWidth: 12, filter: (item, data) => data.datasets[item.datasetIndex].data.length > 0 },
          },
          tooltip: percentAxis ? { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${percent(ctx.parsed.y)}` } } : {},
        },
      },
    });
  }

  function dataset(label, color, extra = {}) {
    return { label, data: [], borderColor: color, backgroundColor: color, ...extra };
  }

  function smooth(points, weight) {
    // Exponential moving average with TensorBoard's debiasing, so the start is not pulled to zero.
    let last = 0;
    return points.map((point, i) => {
      last = last * weight + (1 - weight) * point.y;
      return { x: point.x, y: weight > 0 ? last / (1 - weight ** (i + 1)) : point.y };
    });
  }

  class Charts {
    constructor() {
      this.lossCanvas = byTestId("loss-chart");
      this.accuracyCanvas = byTestId("accuracy-chart");
      this.lrCanvas = byTestId("lr-chart");
      this.smoothing = document.getElementById("smoothing");
      if (!window.Chart) {
        this.loss = this.accuracy = this.lr = null;
        return;
      }
      window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
      window.Chart.defaults.color = "#5d6470";
      this.loss = lineChart(this.lossCanvas, { xTitle: "step", yTitle: "loss" });
      this.loss.data.datasets = [
        dataset("batch loss", COLORS.raw, { borderWidth: 1 }),
        dataset("smoothed", COLORS.loss),
        dataset("compared run (smoothed)", COLORS.compare, { borderDash: [6, 4] }),
      ];
      this.accuracy = lineChart(this.accuracyCanvas, { xTitle: "epoch", yTitle: "accuracy", percentAxis: true, points: true });
      this.accuracy.data.datasets = [
        dataset("train", COLORS.train),
        dataset("validation", COLORS.val),
        dataset("compared: train", COLORS.compare, { borderDash: [2, 3] }),
        dataset("compared: validation", COLORS.compare, { borderDash: [6, 4] }),
      ];
      this.lr = lineChart(this.lrCanvas, { xTitle: "step", yTitle: "learning rate" });
      this.lr.data.datasets = [
        dataset("learning rate", COLORS.lr),
        dataset("compared run", COLORS.compare, { borderDash: [6, 4] }),
      ];
      this.smoothing.addEventListener("input", () => this.update(this.primary, this.compared));
    }

    update(primary, compared) {
      this.primary = primary;
      this.compared = compared;
      const weight = Number(this.smoothing.value);
      document.getElementById("smoothing-value").textContent = weight.toFixed(2);
      const series = (run, key) => (run ? run.batches.filter((p) => p[key] != null).map((p) => ({ x: p.step, y: p[key] })) : []);
      const epochs = (run, key) => (run ? run.epochs.filter((r) => r[key] != null).map((r) => ({ x: r.epoch, y: r[key] })) : []);
      const loss = series(primary, "loss");
      const compareLabel = compared ? `run #${compared.id}` : "compared run";
      const compareLoss = series(compared, "loss");
      this.lossCanvas.dataset.points = String(loss.length);
      this.lossCanvas.dataset.comparePoints = String(compareLoss.length);
      this.accuracyCanvas.dataset.epochs = String(primary ? primary.epochs.length : 0);
      this.lrCanvas.dataset.points = String(series(primary, "lr").length);
      if (!this.loss) return;
      const [raw, smoothed, other] = this.loss.data.datasets;
      raw.data = loss;
      smoothed.data = smooth(loss, weight);
      other.data = smooth(compareLoss, weight);
      other.label = `${compareLabel} (smoothed)`;
      const [train, val, otherTrain, otherVal] = this.accuracy.data.datasets;
      train.data = epochs(primary, "train_accuracy");
      val.data = epochs(primary, "val_accuracy");
      otherTrain.data = epochs(compared, "train_accuracy");
      otherVal.data = epochs(compared, "val_accuracy");
      otherTrain.label = `${compareLabel}: train`;
      otherVal.label = `${compareLabel}: validation`;
      const [lr, otherLr] = this.lr.data.datasets;
      lr.data = series(primary, "lr");
      otherLr.data = series(compared, "lr");
      otherLr.label = compareLabel;
      for (const chart of [this.loss, this.accuracy, this.lr]) chart.update("none");
    }
  }

  // ------------------------------------------------------------------ the page

  const runs = new Map(initial.runs.map((run) => [run.id, run]));
  const charts = new Charts();
  const connection = byTestId("connection");
  let selected = null; // RunData of the run shown
  let runSocket = null;
  let compared = null; // RunData of the run compared with it
  let compareSocket = null;
  let follow = Boolean(initial.follow); // show newer runs as they start, until someone picks one
  let listSocket = null;

  const socketStates = {};
  const CONNECTION_TEXT = { open: "live", connecting: "connecting…", reconnecting: "reconnecting…" };

  function connectionReporter(name) {
    // One indicator for the list's and the selected run's sockets: "live" only when both are open.
    // A socket closed for good (an unknown run) no longer counts.
    return (state) => {
      if (state === "closed") delete socketStates[name];
      else socketStates[name] = state;
      const states = Object.values(socketStates);
      const shown = ["reconnecting", "connecting"].find((s) => states.includes(s)) || "open";
      connection.dataset.state = shown;
      connection.dataset.reconnects = String((listSocket?.reconnects || 0) + (runSocket?.reconnects || 0));
      connection.textContent = CONNECTION_TEXT[shown];
    };
  }

  // ---- the run list

  function renderRunList() {
    const body = byTestId("run-list").querySelector("tbody");
    const rows = [...runs.values()].sort((a, b) => b.id - a.id);
    byTestId("no-runs").hidden = rows.length > 0;
    body.replaceChildren(...rows.map((run) => {
      const version = run.result_version;
      const select = el("button", { type: "button", className: "link-button", textContent: `#${run.id}` });
      select.addEventListener("click", () => {
        follow = false;
        selectRun(run.id, { pin: true });
      });
      const row = el("tr", {}, [
        el("th", { scope: "row" }, [select, el("span", { className: "run-arch", textContent: run.arch })]),
        el("td", {}, el("span", { className: `status status-${run.status}`, textContent: run.status })),
        el("td", { className: "num duration", textContent: duration(runSeconds(run)) }),
        el("td", { className: "num", title: "MNIST test / field set" }, [
          percent(version?.test_accuracy),
          el("span", { className: "run-field", textContent: percent(version?.field_accuracy) }),
        ]),
        el("td", { textContent: version ? `${versionLabel(version)}${run.promoted ? " ★" : ""}` : "–" }),
      ]);
      row.dataset.testid = `run-row-${run.id}`;
      row.dataset.status = run.status;
      if (selected && selected.id === run.id) row.setAttribute("aria-selected", "true");
      if (run.promoted) row.title = "promoted to the active version";
      return row;
    }));
    renderCompareOptions();
    renderStartStatus();
  }

  // The start form's status line, about the run it started, follows that run to its end.
  let startedRun = null; // {id, status} as the start request answered
  const START_STATUS = {
    queued: (id) => `Run #${id} queued.`,
    running: (id) => `Run #${id} is running.`,
    succeeded: (id) => `Run #${id} succeeded.`,
    failed: (id) => `Run #${id} failed.`,
    cancelled: (id) => `Run #${id} was cancelled.`,
  };

  function renderStartStatus() {
    const status = byTestId("start-status");
    if (!status || !startedRun) return;
    const { id } = startedRun;
    const state = selected && selected.id === id && selected.state ? selected.state.status : null;
    const current = state || runs.get(id)?.status || startedRun.status;
    if (!START_STATUS[current]) return;
    status.className = current === "failed" ? "form-status error" : "form-status";
    status.textContent = START_STATUS[current](id);
  }

  function tickDurations() {
    for (const run of runs.values()) {
      if (run.status !== "running") continue;
      const cell = document.querySelector(`[data-testid="run-row-${run.id}"] .duration`);
      if (cell) cell.textContent = duration(runSeconds(run));
    }
  }

  function currentRunId() {
    const newest = [...runs.values()].sort((a, b) => b.id - a.id);
    const pick = newest.find((run) => run.status === "running") || newest.find((run) => run.status === "queued") || newest[0];
    return pick ? pick.id : null;
  }

  function renderCompareOptions() {
    const choice = byTestId("compare-select");
    const current = choice.value;
    const options = [el("option", { value: "", textContent: "no other run" })];
    for (const run of [...runs.values()].sort((a, b) => b.id - a.id)) {
      if (selected && run.id === selected.id) continue;
      options.push(el("option", { value: String(run.id), textContent: `#${run.id} ${run.arch} (${run.status})` }));
    }
    choice.replaceChildren(...options);
    choice.value = options.some((option) => option.value === current) ? current : "";
  }

  function onListMessage(message) {
    if (message.type === "runs") {
      runs.clear();
      for (const run of message.data) runs.set(run.id, run);
      if (!selected && runs.size) selectRun(currentRunId());
    } else if (message.type === "lifecycle") {
      const { run: id, summary, event } = message.data;
      if (summary) runs.set(id, summary);
      else if (runs.has(id)) runs.get(id).status = message.data.status;
      const idle = !selected || !selected.state || FINISHED.has(selected.state.status);
      if (follow && ((event === "queued" && idle) || (event === "started" && selected?.id !== id))) selectRun(id);
    }
    renderRunList();
  }

  // ---- the selected run

  function selectRun(id, { pin = false } = {}) {
    if (pin) {
      // Someone chose this run: the address says so (a reload shows it again).
      const url = new URL(window.location.href);
      url.searchParams.delete("version");
      url.searchParams.set("run", String(id));
      window.history.replaceState(null, "", url);
    }
    if (selected && selected.id === id) return;
    runSocket?.close();
    selected = new RunData(id);
    runSocket = new LiveSocket(urlFor(initial.ws.run, id), {
      onMessage: (message) => onRunMessage(selected, id, message),
      onStatus: connectionReporter("run"),
    });
    document.getElementById("run-empty").hidden = true;
    document.getElementById("run-body").hidden = false;
    document.getElementById("run-title").textContent = `Run #${id}`;
    if (compared && compared.id === id) setCompared(null);
    renderRunList();
    render();
  }

  function setCompared(id) {
    compareSocket?.close();
    compareSocket = null;
    compared = id ? new RunData(id) : null;
    if (id) {
      const data = compared;
      compareSocket = new LiveSocket(urlFor(initial.ws.run, id), {
        onMessage: (message) => onRunMessage(data, id, message),
      });
    }
    charts.update(selected, compared);
  }

  function onRunMessage(run, id, message) {
    if (run.id !== id) return;
    switch (message.type) {
      case "state":
        run.applyState(message.data);
        break;
      case "progress":
        if (!run.state) return;
        run.applyProgress(message.data);
        break;
      case "lifecycle":
        if (!run.state) return;
        run.applyLifecycle(message.data);
        break;
      case "error":
        if (run === selected) showRunError(message);
        return;
      default:
        return;
    }
    if (run === selected || run === compared) {
      if (run === selected) render();
      else charts.update(selected, compared);
    }
  }

  function showRunError(message) {
    const notice = byTestId("run-error");
    notice.textContent = message.code === "unknown_run" ? `There is no run #${selected.id}.` : message.message || message.code;
    notice.hidden = false;
  }

  function render() {
    const run = selected;
    const state = run?.state;
    charts.update(run, compared);
    if (!state) return;
    byTestId("run-error").hidden = !state.error;
    if (state.error) byTestId("run-error").textContent = `Failed: ${state.error}`;
    document.getElementById("run-title").textContent = `Run #${state.id} · ${state.arch}`;
    const status = byTestId("run-status");
    status.textContent = state.status;
    status.className = `status status-${state.status}`;
    const config = state.config || {};
    const train = config.train || {};
    const data = state.data || {};
    byTestId("run-meta").textContent = [
      state.base ? `fine-tuning ${versionLabel(state.base)}` : "from scratch",
      count(config.epochs, "epoch"),
      `batch ${train.batch_size ?? config.batch_size ?? "?"}`,
      `peak lr ${config.lr ?? "?"}`,
      data.mnist_train_images ? count(data.mnist_train_images, "MNIST image") : null,
      data.drawings ? count(data.drawings, "drawing") : config.use_drawings === false ? "no drawings" : null,
      state.device ? `on ${state.device}` : null,
      state.promote ? "promote if better" : null,
    ].filter(Boolean).join(" · ");
    renderProgress(run);
    renderResults(state);
    renderStartStatus();
    const cancel = byTestId("cancel-run");
    if (cancel) {
      cancel.hidden = FINISHED.has(state.status);
      cancel.disabled = Boolean(state.cancel_requested);
      cancel.textContent = state.cancel_requested ? "Cancelling…" : "Cancel run";
    }
    const log = byTestId("run-log");
    if (log && typeof state.log === "string") log.textContent = state.log;
    const row = runs.get(state.id);
    if (row && row.status !== state.status) {
      row.status = state.status;
      renderRunList();
    }
  }

  function renderProgress(run) {
    const state = run.state;
    const progress = state.progress || {};
    const fraction = state.status === "succeeded" ? 1 : Math.min(1, Math.max(0, progress.fraction || 0));
    const bar = byTestId("progress-bar");
    const value = Math.round(100 * fraction);
    bar.setAttribute("aria-valuenow", String(value));
    bar.setAttribute("aria-valuetext", `${value}%`);
    bar.dataset.status = state.status;
    bar.querySelector(".progress-fill").style.width = `${100 * fraction}%`;
    document.getElementById("progress-epoch").textContent = `${progress.epoch || 0} / ${progress.total_epochs || state.config?.epochs || "?"}`;
    document.getElementById("progress-step").textContent = `${integer(progress.step || 0)} / ${progress.total_steps ? integer(progress.total_steps) : "?"}`;
    document.getElementById("progress-rate").textContent = progress.samples_per_s ? integer(progress.samples_per_s) : "–";
    document.getElementById("progress-time").textContent = duration(runSeconds(state));
    byTestId("eta").textContent = etaText(run);
  }

  function etaText(run) {
    const state = run.state;
    const progress = state.progress || {};
    if (state.status === "queued") return "waiting for a worker";
    if (state.status === "succeeded") return "done";
    if (FINISHED.has(state.status)) return "–";
    if (progress.total_steps && progress.step >= progress.total_steps) return "evaluating the kept weights…";
    if (progress.eta_s == null) return "estimating…";
    const left = progress.eta_s - (performance.now() - run.etaAt) / 1000;
    return `about ${duration(Math.max(left, 0))} of training left`;
  }

  function renderResults(state) {
    const metrics = state.metrics || {};
    const panel = document.getElementById("results");
    const done = metrics.test_accuracy != null;
    panel.hidden = !done;
    if (!done) return;
    document.getElementById("result-test").textContent = percent(metrics.test_accuracy);
    document.getElementById("result-field").textContent =
      metrics.field_accuracy == null ? "no field set" : `${percent(metrics.field_accuracy)} (n=${integer(metrics.field_n)})`;
    document.getElementById("result-val").textContent = percent(metrics.val_accuracy);
    document.getElementById("result-epoch").textContent = metrics.best_epoch ?? "–";
    const version = byTestId("result-version");
    const promotion = state.promotion || {};
    if (state.result_version) {
      const name = versionLabel(state.result_version);
      const link = initial.admin_version
        ? el("a", { href: urlFor(initial.admin_version, state.result_version.id), textContent: name })
        : el("strong", { textContent: name });
      version.replaceChildren("Produced ", link, ` (${state.result_version.status}).`);
    } else {
      version.textContent = state.status === "succeeded" ? "" : "No version is registered until the run succeeds.";
    }
    const decision = byTestId("promotion");
    decision.textContent = promotion.reason
      ? `${promotion.promoted ? "Promoted to the active version" : "Not promoted"}: ${promotion.reason}`
      : "";
    decision.className = promotion.promoted ? "promotion promoted" : "promotion";
    renderConfusion(state.confusion_html || "");
    renderPerClass(metrics.per_class_accuracy || []);
  }

  let confusionShown = null;

  function renderConfusion(html) {
    // Rendered by the server from the template the admin and the statistics page use, escaped there.
    if (html === confusionShown) return;
    confusionShown = html;
    document.getElementById("confusion-holder").innerHTML =
      html || '<table class="confusion" data-testid="confusion-matrix" data-rows="0"></table>';
  }

  function renderPerClass(perClass) {
    const bars = byTestId("per-class-accuracy");
    bars.replaceChildren(...perClass.map((accuracy, digit) => {
      const item = el("li", { className: "class-bar" }, [
        el("span", { className: "class-digit", textContent: String(digit) }),
        el("span", { className: "class-track" }, el("span", { className: "class-fill" })),
        el("span", { className: "class-value", textContent: percent(accuracy, 1) }),
      ]);
      item.style.setProperty("--p", String(accuracy ?? 0));
      return item;
    }));
  }

  // ---- staff: start and cancel

  const READ_FIELD = {
    int: (input) => Number.parseInt(input.value, 10),
    version: (input) => Number.parseInt(input.value, 10),
    float: (input) => Number.parseFloat(input.value),
    bool: (input) => (input.type === "checkbox" ? input.checked : input.value === "true"),
    choice: (input) => input.value,
    text: (input) => input.value,
    object: (input) => JSON.parse(input.value),
  };

  // The request body: every field by its data-kind; an empty one is left out (the recipe decides).
  function formValues(form) {
    const body = {};
    for (const input of form.querySelectorAll("[data-kind]")) {
      if (input.type !== "checkbox" && input.value.trim() === "") continue;
      const read = READ_FIELD[input.dataset.kind];
      if (read) body[input.name] = read(input);
    }
    return body;
  }

  function setupStartForm() {
    const form = byTestId("start-form");
    if (!form) return;
    const arches = new Map((initial.architectures || []).map((arch) => [arch.name, arch]));
    const status = byTestId("start-status");
    const showRecipe = () => {
      // An empty field takes the architecture's recipe: show its values as placeholders.
      const arch = arches.get(form.elements.arch.value);
      for (const [name, value] of Object.entries(arch?.recipe || {})) {
        const input = form.elements.namedItem(name);
        if (input instanceof HTMLInputElement && input.type !== "checkbox") input.placeholder = String(value);
      }
    };
    form.elements.arch.addEventListener("change", showRecipe);
    showRecipe();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = byTestId("start-run");
      button.disabled = true;
      status.className = "form-status";
      status.textContent = "Starting…";
      try {
        const answer = await window.mnistApi.postJson(initial.api.retrain, formValues(form));
        startedRun = { id: answer.id, status: answer.status };
        renderStartStatus();
        follow = true;
        selectRun(answer.id, { pin: true });
      } catch (error) {
        status.className = "form-status error";
        status.textContent = errorText(error);
      } finally {
        button.disabled = false;
      }
    });
  }

  // The API's message, with the problem of each field when the error names them.
  function errorText(error) {
    const detail = error.detail;
    if (detail && typeof detail === "object" && !Array.isArray(detail)) {
      const fields = Object.entries(detail).map(([field, problems]) => `${field}: ${[].concat(problems).join(" ")}`);
      if (fields.length) return `${error.message} ${fields.join("; ")}`;
    }
    return error.message;
  }

  function setupCancel() {
    const cancel = byTestId("cancel-run");
    if (!cancel) return;
    cancel.addEventListener("click", async () => {
      if (!selected) return;
      cancel.disabled = true;
      try {
        await window.mnistApi.postJson(urlFor(initial.api.cancel, selected.id));
      } catch (error) {
        byTestId("run-error").textContent = errorText(error);
        byTestId("run-error").hidden = false;
        cancel.disabled = false;
      }
    });
  }

  // ------------------------------------------------------------------ start

  byTestId("compare-select").addEventListener("change", (event) => {
    setCompared(event.target.value ? Number(event.target.value) : null);
  });
  setupStartForm();
  setupCancel();
  renderRunList();
  listSocket = new LiveSocket(initial.ws.runs, { onMessage: onListMessage, onStatus: connectionReporter("list") });
  if (initial.selected) selectRun(initial.selected);
  // Local clocks only (durations, the ETA countdown): the server is not asked anything.
  window.setInterval(() => {
    if (selected?.state && !FINISHED.has(selected.state.status)) renderProgress(selected);
    tickDurations();
  }, 1000);

  window.mnistDashboard = {
    get listSocket() { return listSocket; },
    get runSocket() { return runSocket; },
    get selected() { return selected; },
  };
})();
