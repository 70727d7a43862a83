// The drawing page: a canvas for mouse, touch and pen, live predictions from /api/predict/,
// the probability histogram, feedback labels, a random MNIST test digit and the compare mode.
// API calls go through window.mnistApi (static/site/api.js), which base.html loads first.
(() => {
  "use strict";

  const SIZE = 280; // the canvas's own coordinate system: CSS pixels at full size
  const LINE_WIDTH = 18; // suits the server's crop-and-scale-to-20-px preprocessing
  const INK = "#16181d";
  const DEBOUNCE_MS = 250;

  const $ = (id) => document.getElementById(id);
  const canvas = $("pad");
  const ctx = canvas.getContext("2d");
  const ui = {
    predict: $("predict"),
    undo: $("undo"),
    clear: $("clear"),
    random: $("random-digit"),
    compareToggle: $("compare-toggle"),
    emptyMessage: $("empty-message"),
    errorMessage: $("error-message"),
    resultPanel: document.querySelector(".result-panel"),
    prediction: $("prediction"),
    confidence: $("confidence"),
    quickDigit: $("quick-digit"),
    quickConfidence: $("quick-confidence"),
    randomInfo: $("random-info"),
    histogram: $("probabilities"),
    seen: $("seen"),
    seenPlaceholder: $("seen-placeholder"),
    modelName: $("model-name"),
    latency: $("latency"),
    feedback: $("feedback"),
    feedbackRight: $("feedback-right"),
    feedbackStatus: $("feedback-status"),
    compare: $("compare"),
    compareGrid: $("compare-grid"),
  };
  const PROMPT = ui.confidence.textContent;

  const state = {
    strokes: [], // each {pointerId, points: [[x, y], ...]} in canvas units
    active: null, // the stroke being drawn
    timer: 0,
    seq: 0, // increases with every request and every reset; older answers are dropped
    controller: null,
    predictionId: null,
    predictedDigit: null,
  };

  // ---- drawing ------------------------------------------------------------------------------

  function fitBackingStore() {
    const rect = canvas.getBoundingClientRect();
    if (!rect.width || !rect.height) return;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(rect.width * ratio);
    const height = Math.round(rect.height * ratio);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width; // resets the context, so the pen is set up again below
      canvas.height = height;
    }
    ctx.setTransform(width / SIZE, 0, 0, height / SIZE, 0, 0);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = LINE_WIDTH;
    ctx.strokeStyle = INK;
    ctx.fillStyle = INK;
    redraw();
  }

  function watchPixelRatio() {
    const query = window.matchMedia(`(resolution: ${window.devicePixelRatio || 1}dppx)`);
    query.addEventListener("change", () => {
      fitBackingStore();
      watchPixelRatio();
    }, { once: true });
  }

  function dot([x, y]) {
    ctx.beginPath();
    ctx.arc(x, y, LINE_WIDTH / 2, 0, 2 * Math.PI);
    ctx.fill();
  }

  function segment(from, to) {
    ctx.beginPath();
    ctx.moveTo(from[0], from[1]);
    ctx.lineTo(to[0], to[1]);
    ctx.stroke();
  }

  function drawStroke(points) {
    if (points.length === 1) {
      dot(points[0]);
      return;
    }
    ctx.beginPath();
    ctx.moveTo(points[0][0], points[0][1]);
    for (const [x, y] of points.slice(1)) ctx.lineTo(x, y);
    ctx.stroke();
  }

  function redraw() {
    ctx.save();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.restore();
    for (const stroke of state.strokes) drawStroke(stroke.points);
  }

  function canvasPoint(event) {
    const rect = canvas.getBoundingClientRect();
    return [
      ((event.clientX - rect.left) * SIZE) / rect.width,
      ((event.clientY - rect.top) * SIZE) / rect.height,
    ];
  }

  function startStroke(event) {
    if (state.active || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    const stroke = { pointerId: event.pointerId, points: [canvasPoint(event)] };
    state.active = stroke;
    state.strokes.push(stroke);
    dot(stroke.points[0]);
    hideMessages();
  }

  function extendStroke(event) {
    const stroke = state.active;
    if (!stroke || event.pointerId !== stroke.pointerId) return;
    event.preventDefault();
    const coalesced = typeof event.getCoalescedEvents === "function" ? event.getCoalescedEvents() : [];
    for (const sample of coalesced.length ? coalesced : [event]) {
      const last = stroke.points[stroke.points.length - 1];
      const point = canvasPoint(sample);
      if (point[0] === last[0] && point[1] === last[1]) continue;
      stroke.points.push(point);
      segment(last, point);
    }
    schedulePrediction(DEBOUNCE_MS);
  }

  function endStroke(event) {
    const stroke = state.active;
    if (!stroke || event.pointerId !== stroke.pointerId) return;
    state.active = null;
    if (canvas.hasPointerCapture(event.pointerId)) canvas.releasePointerCapture(event.pointerId);
    schedulePrediction(0);
  }

  canvas.addEventListener("pointerdown", startStroke);
  canvas.addEventListener("pointermove", extendStroke);
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);
  canvas.addEventListener("lostpointercapture", endStroke);
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());

  new ResizeObserver(fitBackingStore).observe(canvas);
  watchPixelRatio();
  fitBackingStore();

  // ---- talking to the API -------------------------------------------------------------------

  const { getJson, postJson } = window.mnistApi;

  const isAbort = (error) => error.name === "AbortError";

  // Start a request that supersedes any earlier one; returns its number and abort signal.
  function beginRequest() {
    cancelPending();
    state.controller = new AbortController();
    ui.resultPanel.setAttribute("aria-busy", "true");
    return { seq: state.seq, signal: state.controller.signal };
  }

  function finishRequest(seq) {
    if (seq !== state.seq) return false; // a newer request or a reset took over
    state.controller = null;
    ui.resultPanel.removeAttribute("aria-busy");
    return true;
  }

  function cancelPending() {
    clearTimeout(state.timer);
    state.seq += 1;
    if (state.controller) state.controller.abort();
    state.controller = null;
    ui.resultPanel.removeAttribute("aria-busy");
  }

  function schedulePrediction(delay) {
    clearTimeout(state.timer);
    state.timer = setTimeout(() => predict(), delay);
  }

  // `reveal`: the visitor asked for this answer with a button (Predict, Compare all models), so it is brought
  // into view if it is not; answers to drawing alone never scroll the canvas away.
  async function predict({ reveal = false } = {}) {
    clearTimeout(state.timer);
    if (!state.strokes.length) {
      cancelPending();
      resetResult();
      showEmpty("empty");
      return;
    }
    const compare = ui.compareToggle.checked;
    const image = canvas.toDataURL("image/png");
    // The same drawing, grown since the last answer: that answer's record is replaced, not kept beside it.
    const replaces = state.predictionId;
    const { seq, signal } = beginRequest();
    const started = performance.now();
    let data;
    try {
      data = await postJson("/api/predict/", { image, compare, replaces }, { signal });
    } catch (error) {
      if (isAbort(error) || !finishRequest(seq)) return;
      if (error.code === "empty_drawing") {
        resetResult();
        showEmpty("faint");
      } else {
        showError(error.message);
      }
      return;
    }
    if (!finishRequest(seq)) return;
    showPrediction(data, performance.now() - started, compare);
    if (reveal && compare && !ui.compare.hidden) bringIntoView(ui.compare, ui.compare);
    else if (reveal) bringIntoView(ui.resultPanel, ui.feedback);
  }

  async function randomDigit() {
    state.strokes = [];
    state.active = null;
    redraw();
    hideMessages();
    const { seq, signal } = beginRequest();
    ui.random.disabled = true;
    const started = performance.now();
    let data;
    try {
      data = await getJson("/api/mnist/random/", { signal });
    } catch (error) {
      ui.random.disabled = false;
      if (isAbort(error) || !finishRequest(seq)) return;
      resetResult();
      // Staff get how to fix a missing data set in the detail; visitors get the message alone.
      const hint = error.code === "mnist_unavailable" && typeof error.detail === "string" ? error.detail : "";
      showError(hint ? `${error.message} ${hint}` : error.message);
      return;
    }
    ui.random.disabled = false;
    if (!finishRequest(seq)) return;
    showRandomDigit(data, performance.now() - started);
    // The MNIST image and its true label are in the answer panel: below the canvas on a phone.
    bringIntoView(ui.resultPanel, ui.seen.closest("figure"));
  }

  async function sendLabel(label) {
    const id = state.predictionId;
    if (id === null) return;
    setFeedbackStatus("Sending…", "");
    let correct;
    try {
      ({ correct } = await postJson(`/api/predictions/${id}/label/`, { label }));
    } catch (error) {
      if (id === state.predictionId && !isAbort(error)) setFeedbackStatus(error.message, "error");
      return;
    }
    if (id !== state.predictionId) return; // a newer prediction replaced this one meanwhile
    setFeedbackStatus(
      correct ? `Thanks! Recorded: it was ${aDigit(label)}, as the model said.` : `Thanks! Recorded: it was ${aDigit(label)}.`,
      "ok",
    );
    for (const button of ui.feedback.querySelectorAll("button")) {
      const chosen = button === ui.feedbackRight ? correct : Number(button.dataset.label) === label;
      button.setAttribute("aria-pressed", String(Boolean(chosen)));
    }
  }

  // ---- showing results ----------------------------------------------------------------------

  // "a 7", "an 8".
  const aDigit = (digit) => `${Number(digit) === 8 ? "an" : "a"} ${digit}`;

  const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

  // Scroll the least that shows `first`'s top to `last`'s bottom, or as much of it from `first`'s top as
  // the window holds; nothing when it is all in view already.
  function bringIntoView(first, last) {
    const margin = 8;
    const top = first.getBoundingClientRect().top;
    const bottom = last.getBoundingClientRect().bottom;
    let by = 0;
    if (bottom > window.innerHeight) by = Math.min(bottom - window.innerHeight + margin, top - margin);
    else if (top < 0) by = top - margin;
    if (Math.abs(by) >= 1) window.scrollBy({ top: by, behavior: reducedMotion.matches ? "auto" : "smooth" });
  }

  function percent(p) {
    if (p > 0 && p < 0.005) return "<1%";
    return `${Math.round(p * 100)}%`;
  }

  function modelLabel(version) {
    return version ? `${version.name} v${version.version}` : "–";
  }

  function argmax(values) {
    return values.reduce((best, value, index) => (value > values[best] ? index : best), 0);
  }

  function buildHistogram(label) {
    const list = document.createElement("ol");
    list.className = "histogram small";
    list.setAttribute("aria-label", label);
    for (let digit = 0; digit < 10; digit += 1) {
      const bar = document.createElement("li");
      bar.className = "bar";
      bar.dataset.digit = String(digit);
      bar.innerHTML =
        '<span class="bar-label"></span><span class="bar-track" aria-hidden="true">' +
        '<span class="bar-fill"></span></span><span class="bar-value"></span>';
      bar.querySelector(".bar-label").textContent = String(digit);
      list.append(bar);
    }
    return list;
  }

  function fillHistogram(list, probabilities) {
    const top = probabilities && probabilities.length ? argmax(probabilities) : -1;
    list.querySelectorAll(".bar").forEach((bar, digit) => {
      const p = probabilities ? Number(probabilities[digit]) || 0 : 0;
      bar.dataset.value = String(p);
      bar.style.setProperty("--p", String(Math.min(Math.max(p, 0), 1)));
      bar.querySelector(".bar-value").textContent = percent(p);
      bar.classList.toggle("top", digit === top);
    });
  }

  function showSeen(base64png, alt) {
    ui.seen.src = `data:image/png;base64,${base64png}`;
    ui.seen.alt = alt;
    ui.seen.hidden = false;
    ui.seenPlaceholder.hidden = true;
  }

  function showAnswer(digit, confidence, probabilities) {
    ui.prediction.textContent = String(digit);
    ui.confidence.textContent = `${percent(confidence)} confident`;
    ui.quickDigit.textContent = ui.prediction.textContent;
    ui.quickConfidence.textContent = ui.confidence.textContent;
    fillHistogram(ui.histogram, probabilities);
  }

  function showPrediction(data, roundTripMs, compare) {
    hideMessages();
    showAnswer(data.digit, data.confidence, data.probabilities);
    ui.randomInfo.hidden = true;
    showSeen(data.preprocessed, "The 28 by 28 pixel input the model saw");
    ui.modelName.textContent = modelLabel(data.model_version);
    ui.latency.textContent =
      `${Number(data.latency_ms).toFixed(1)} ms on the server, ${Math.round(roundTripMs)} ms round trip`;
    state.predictionId = data.id;
    state.predictedDigit = data.digit;
    resetFeedback();
    ui.feedback.hidden = false;
    if (compare && Array.isArray(data.compare)) {
      showCompare(data.compare, data.model_version);
    } else {
      hideCompare();
    }
  }

  function showRandomDigit(data, roundTripMs) {
    const { prediction } = data;
    hideMessages();
    showAnswer(prediction.digit, prediction.confidence, prediction.probabilities);
    const right = prediction.digit === data.label;
    ui.randomInfo.textContent =
      `MNIST test image #${data.index}, true label ${data.label}: the model is ${right ? "right" : "wrong"}.`;
    ui.randomInfo.className = `answer-source ${right ? "correct" : "wrong"}`;
    ui.randomInfo.hidden = false;
    showSeen(data.image, `MNIST test image number ${data.index}, ${aDigit(data.label)}`);
    ui.modelName.textContent = modelLabel(prediction.model_version);
    ui.latency.textContent = `${Math.round(roundTripMs)} ms round trip`;
    state.predictionId = null;
    ui.feedback.hidden = true;
    hideCompare();
  }

  function showCompare(results, main) {
    ui.compareGrid.replaceChildren(
      ...results.map((result) => {
        const version = result.model_version || {};
        const name = modelLabel(version);
        const card = document.createElement("article");
        card.className = "compare-card";
        card.dataset.testid = "compare-card";
        const serving = main && version.id === main.id;
        // A fresh candidate nobody promoted (only staff are shown one): never mistaken for a vetted model.
        const candidate = result.vetted === false;
        if (serving) card.classList.add("serving");
        if (candidate) card.classList.add("candidate");
        const heading = document.createElement("h3");
        heading.textContent = name;
        const arch = document.createElement("span");
        arch.className = "compare-arch";
        arch.textContent = [version.arch || "", serving ? "serving" : "", candidate ? "candidate" : ""]
          .filter(Boolean).join(", ");
        heading.append(" ", arch);
        card.append(heading);
        if (candidate) {
          const badge = document.createElement("p");
          badge.className = "compare-candidate";
          badge.dataset.testid = "compare-candidate";
          badge.textContent = "Candidate: not promoted; only staff see it";
          card.append(badge);
        }
        const answer = document.createElement("p");
        answer.className = "compare-answer";
        const digit = document.createElement("strong");
        digit.textContent = String(result.digit);
        answer.append(digit, ` ${percent(result.confidence)}`);
        const histogram = buildHistogram(`${name}: probability of each digit`);
        histogram.dataset.testid = "compare-histogram";
        fillHistogram(histogram, result.probabilities);
        card.append(answer, histogram);
        return card;
      }),
    );
    ui.compare.hidden = false;
  }

  function hideCompare() {
    ui.compare.hidden = true;
    ui.compareGrid.replaceChildren();
  }

  function resetFeedback() {
    setFeedbackStatus("", "");
    for (const button of ui.feedback.querySelectorAll("button")) button.setAttribute("aria-pressed", "false");
  }

  function setFeedbackStatus(text, kind) {
    ui.feedbackStatus.textContent = text;
    ui.feedbackStatus.className = `feedback-status ${kind}`.trim();
  }

  function resetResult() {
    ui.prediction.textContent = "";
    ui.confidence.textContent = PROMPT;
    ui.quickDigit.textContent = "";
    ui.quickConfidence.textContent = PROMPT;
    ui.randomInfo.hidden = true;
    fillHistogram(ui.histogram, null);
    ui.seen.hidden = true;
    ui.seen.removeAttribute("src");
    ui.seenPlaceholder.hidden = false;
    ui.modelName.textContent = "–";
    ui.latency.textContent = "–";
    state.predictionId = null;
    state.predictedDigit = null;
    ui.feedback.hidden = true;
    resetFeedback();
    hideCompare();
  }

  function showEmpty(kind) {
    ui.errorMessage.hidden = true;
    ui.emptyMessage.textContent = kind === "faint" ? ui.emptyMessage.dataset.faintText : ui.emptyMessage.dataset.emptyText;
    ui.emptyMessage.hidden = false;
  }

  function showError(message) {
    ui.emptyMessage.hidden = true;
    ui.errorMessage.textContent = message;
    ui.errorMessage.hidden = false;
  }

  function hideMessages() {
    ui.emptyMessage.hidden = true;
    ui.errorMessage.hidden = true;
  }

  // ---- controls -----------------------------------------------------------------------------

  function undo() {
    if (state.active) return;
    state.strokes.pop();
    redraw();
    hideMessages();
    if (state.strokes.length) {
      schedulePrediction(0);
    } else {
      cancelPending();
      resetResult();
    }
  }

  function clear() {
    state.strokes = [];
    state.active = null;
    redraw();
    cancelPending();
    hideMessages();
    resetResult();
  }

  ui.predict.addEventListener("click", () => predict({ reveal: true }));
  ui.undo.addEventListener("click", undo);
  ui.clear.addEventListener("click", clear);
  ui.random.addEventListener("click", randomDigit);
  ui.compareToggle.addEventListener("change", () => {
    if (state.strokes.length) predict({ reveal: ui.compareToggle.checked });
    else if (!ui.compareToggle.checked) hideCompare();
  });
  ui.feedbackRight.addEventListener("click", () => {
    if (state.predictedDigit !== null) sendLabel(state.predictedDigit);
  });
  for (const button of ui.feedback.querySelectorAll("[data-label]")) {
    button.addEventListener("click", () => sendLabel(Number(button.dataset.label)));
  }
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement) return;
    if ((event.ctrlKey || event.metaKey) && !event.shiftKey && event.key.toLowerCase() === "z") {
      event.preventDefault();
      undo();
    }
  });
})();
