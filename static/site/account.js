// The API token page: the Copy button next to a new token's key.
(() => {
  "use strict";

  async function copy(input) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(input.value);
      return;
    }
    // Pages served over plain HTTP (not localhost) have no clipboard API: copy the selection instead.
    input.select();
    if (!document.execCommand("copy")) throw new Error("copy refused");
  }

  for (const button of document.querySelectorAll("[data-copy]")) {
    const input = document.getElementById(button.dataset.copy);
    const status = document.querySelector('[data-testid="copy-status"]');
    input.addEventListener("focus", () => input.select());
    button.addEventListener("click", async () => {
      try {
        await copy(input);
        status.textContent = "Copied to the clipboard.";
      } catch {
        input.focus();
        status.textContent = "Copying was refused by the browser: the token is selected, copy it with Ctrl+C (⌘C).";
      }
    });
  }
})();
