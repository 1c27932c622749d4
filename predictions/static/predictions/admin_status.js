// Admin: while a version is pending or being checked, refresh its status, message and
// "active" cells every 2 s from the admin's status view (no page reload: no edits are lost).
(function () {
  "use strict";
  const WORKING = new Set(["pending", "checking"]);
  const INTERVAL_MS = 2000;

  function cells() {
    return Array.from(document.querySelectorAll("span[data-version][data-field]"));
  }

  function workingIds() {
    const ids = new Set();
    for (const cell of cells()) {
      if (cell.dataset.field === "status" && WORKING.has(cell.textContent.trim())) {
        ids.add(cell.dataset.version);
      }
    }
    return Array.from(ids);
  }

  async function refresh() {
    if (workingIds().length === 0) return;
    // Every version on the page: an activation changes another version's "active" too.
    const ids = Array.from(new Set(cells().map((cell) => cell.dataset.version)));
    const url = cells()[0].dataset.statusUrl + "?ids=" + ids.join(",");
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (response.ok) {
        const states = await response.json();
        for (const cell of cells()) {
          const state = states[cell.dataset.version];
          if (state && cell.dataset.field in state) {
            const text = state[cell.dataset.field];
            const limit = Number(cell.dataset.limit || 0);
            cell.textContent = limit && text.length > limit ? text.slice(0, limit - 1) + "…" : text;
            if (limit) cell.title = text;
          }
        }
      }
    } finally {
      setTimeout(refresh, INTERVAL_MS);
    }
  }

  document.addEventListener("DOMContentLoaded", () => setTimeout(refresh, INTERVAL_MS));
})();
