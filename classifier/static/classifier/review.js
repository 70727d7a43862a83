// The staff review queue: one drawing at a time; a digit key labels it, `s` skips it, `x` marks it
// "not a digit". The next drawing shows at once from a small prefetched buffer while the label is
// sent in the background (POST /api/review/{id}/label/); the buffer refills from GET /api/review/.
// Nothing reloads the page.
(() => {
  "use strict";

  const api = window.mnistApi;
  const $ = (id) => document.getElementById(id);
  const ui = {
    id: $("review-id"),
    item: $("review-item"),
    empty: $("review-empty"),
    image: $("review-image"),
    input: $("review-input"),
    digit: $("review-digit"),
    top3: $("review-top3"),
    reasons: $("review-reasons"),
    opinions: $("review-opinions"),
    visitors: $("review-visitors"),
    meta: $("review-meta"),
    status: $("review-status"),
  };
  const counters = {
    left: document.querySelector('[data-testid="count-left"]'),
    suggested: document.querySelector('[data-testid="count-suggested"]'),
    disputed: document.querySelector('[data-testid="count-disputed"]'),
    unsure: document.querySelector('[data-testid="count-unsure"]'),
    reviewed: document.querySelector('[data-testid="count-reviewed"]'),
  };
  const REASONS = {
    visitor_disagrees: "a visitor disagreed",
    models_disagree: "active and candidate disagree",
    low_confidence: "low confidence",
  };
  const PREFETCH = 4;
  const MAX_SKIPPED = 500;

  const skipped = [];         // ids skipped on this page, left out of every refill
  const inFlight = new Map(); // id -> the request sending its label
  let buffer = [];            // the next drawings, in queue order
  let current = null;
  let refilling = null;
  let exhausted = false;      // the last refill found nothing beyond what we hold

  const percent = (p) => `${(100 * p).toFixed(1)}%`;

  function showCounts(counts) {
    if (!counts) return;
    for (const [name, el] of Object.entries(counters)) {
      if (el && typeof counts[name] === "number") el.textContent = String(counts[name]);
    }
  }

  function say(text, isError = false) {
    ui.status.textContent = text;
    ui.status.classList.toggle("error", isError);
  }

  function render() {
    if (!current) {
      ui.item.hidden = true;
      ui.id.textContent = "–";
      ui.empty.hidden = !exhausted;
      return;
    }
    const item = current;
    ui.empty.hidden = true;
    ui.item.hidden = false;
    ui.id.textContent = String(item.id);
    ui.id.dataset.id = String(item.id);
    if (item.image_url) {
      ui.image.src = item.image_url;
      ui.image.alt = `drawing ${item.id} as received`;
    } else {
      ui.image.removeAttribute("src");
      ui.image.alt = "the original drawing is missing";
    }
    if (item.input) ui.input.src = item.input; else ui.input.removeAttribute("src");
    ui.input.alt = `28x28 input of drawing ${item.id}`;
    ui.digit.textContent = `${item.digit} (${percent(item.confidence)})`;
    ui.top3.replaceChildren(...item.top3.map(({ digit, probability }) => {
      const li = document.createElement("li");
      li.textContent = `${digit}: ${percent(probability)}`;
      return li;
    }));
    ui.reasons.replaceChildren(...item.reasons.map((reason) => {
      const span = document.createElement("span");
      span.textContent = REASONS[reason] || reason;
      return span;
    }));
    const opinions = [];
    if (item.opinions.active) opinions.push(`active version: ${item.opinions.active.digit} (${percent(item.opinions.active.confidence)})`);
    if (item.opinions.candidate) opinions.push(`newest candidate: ${item.opinions.candidate.digit} (${percent(item.opinions.candidate.confidence)})`);
    ui.opinions.textContent = opinions.join(" · ");
    const said = (value) => (value === "x" ? "not a digit" : String(value));
    ui.visitors.textContent = item.visitor_labels.length
      ? "Visitors said: " + item.visitor_labels.map((l) => said(l.label) + (l.client ? ` (${l.client})` : "")).join(", ")
        + (item.suggestion !== null && item.suggestion !== undefined ? ` · Enter confirms ${said(item.suggestion)}` : "")
      : "";
    ui.meta.textContent = `${item.model_version.name} v${item.model_version.version} · ${item.source} · ${new Date(item.created_at).toLocaleString()}`;
  }

  function held() {
    return new Set([...skipped, ...inFlight.keys(), ...buffer.map((i) => i.id), ...(current ? [current.id] : [])]);
  }

  // Refills wait for the labels being sent, so what comes back (drawings, counts) already counts them.
  function refill() {
    if (refilling) return refilling;
    refilling = Promise.allSettled([...inFlight.values()])
      .then(() => {
        const query = new URLSearchParams({ count: String(PREFETCH + 1), skip: [...held()].join(",") });
        return api.getJson(`/api/review/?${query}`);
      })
      .then((data) => {
        const known = held();
        const fresh = data.items.filter((item) => !known.has(item.id));
        buffer = buffer.concat(fresh);
        exhausted = fresh.length === 0;
        showCounts(data.counts);
        if (!current) {
          current = buffer.shift() || null;
          render();
        }
      })
      .catch((error) => say(`Could not load drawings: ${error.message}`, true))
      .finally(() => { refilling = null; });
    return refilling;
  }

  function advance() {
    current = buffer.shift() || null;
    render();
    if (buffer.length < PREFETCH) refill();
  }

  function label(value) {
    const item = current;
    if (!item) return;
    const sending = api.postJson(`/api/review/${item.id}/label/`, { label: value })
      .then((data) => {
        say(value === "x" ? `Drawing ${item.id}: not a digit.` : `Drawing ${item.id} labelled ${value}.`);
        showCounts(data.counts);
      })
      .catch((error) => {
        say(`Drawing ${item.id} was not labelled: ${error.message}`, true);
        if (current) buffer.unshift(current);
        current = item; // show it again, to label it once more
        render();
      })
      .finally(() => inFlight.delete(item.id));
    inFlight.set(item.id, sending);
    advance();
  }

  function skip() {
    if (!current) return;
    skipped.push(current.id);
    if (skipped.length > MAX_SKIPPED) skipped.shift();
    say(`Drawing ${current.id} skipped.`);
    advance();
  }

  function act(key) {
    if (/^[0-9]$/.test(key)) label(Number(key));
    else if (key === "x") label("x");
    else if (key === "s") skip();
    else if (key === "enter" && current && current.suggestion !== null && current.suggestion !== undefined) label(current.suggestion);
    else return false;
    return true;
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const target = event.target;
    if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
    if (act(event.key.toLowerCase())) event.preventDefault();
  });
  for (const button of document.querySelectorAll(".review-keys [data-label]")) {
    button.addEventListener("click", () => act(button.dataset.label));
  }

  refill();
})();
