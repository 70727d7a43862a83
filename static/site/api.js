// Calls to the site's JSON API, shared by every page script as `window.mnistApi`.
// Requests carry the session cookie and the CSRF header; an error answer, whose body is always
// {"error": {"code", "message", "detail"}}, becomes a thrown ApiError with those fields and the status.
(() => {
  "use strict";

  class ApiError extends Error {
    constructor({ code, message, detail = null, status }) {
      super(message);
      this.name = "ApiError";
      this.code = code;
      this.detail = detail;
      this.status = status;
    }
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]*)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  // The parsed JSON answer; throws ApiError (or the fetch's AbortError when `signal` aborted it).
  async function request(url, { method = "GET", body, signal } = {}) {
    const headers = { Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin", signal };
    if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError({
        code: "network",
        message: "The server could not be reached. Check the connection and try again.",
        status: 0,
      });
    }
    const data = await response.json().catch(() => null);
    if (signal?.aborted) throw new DOMException("The request was aborted.", "AbortError");
    if (response.ok && (data !== null || response.status === 204)) return data;
    const error = data && data.error && typeof data.error === "object" ? data.error : null;
    throw new ApiError({
      code: error?.code || `http_${response.status}`,
      message: error?.message || `The server answered ${response.status} ${response.statusText}`.trim() + ".",
      detail: error?.detail ?? null,
      status: response.status,
    });
  }

  const getJson = (url, options = {}) => request(url, { ...options, method: "GET" });
  const postJson = (url, body, options = {}) => request(url, { ...options, method: "POST", body });

  window.mnistApi = Object.freeze({ ApiError, csrfToken, getJson, postJson });
})();
