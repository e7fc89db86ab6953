// A preference cell cycles on → off → as inherited ("" posted: no row, docs/preferences.md).
// Loaded in the page head (admin media): runs once the form is parsed.
document.addEventListener("DOMContentLoaded", () => {
  const NEXT = { "": "on", on: "off", off: "" };

  function show(cell) {
    const state = cell.querySelector("input[type=hidden]").value;
    const box = cell.querySelector(".clarion-pref__box");
    const inherited = cell.dataset.inherited;
    box.checked = state === "on" || (state === "" && inherited === "on");
    box.indeterminate = state === "";
    cell.className = `clarion-pref clarion-pref--${state || "inherit"}`;
    cell.querySelector(".clarion-pref__state").textContent = state || `(${inherited})`;
  }

  function globalChanged(table) {
    // Cells without a row follow the global setting of their channel.
    const globalRow = table.querySelector("tr[data-scope=global]");
    const channels = [...table.querySelectorAll("thead th")].slice(1).map((th) => th.textContent);
    channels.forEach((channel, i) => {
      const state = globalRow.querySelectorAll("td")[i].querySelector("input[type=hidden]").value;
      table.querySelectorAll("tbody tr:not([data-scope=global])").forEach((row) => {
        const cell = row.querySelectorAll("td")[i];
        cell.dataset.inherited = state === "off" ? "off" : "on";
        show(cell);
      });
    });
  }

  document.querySelectorAll(".clarion-prefs").forEach((table) => {
    table.querySelectorAll("td.clarion-pref").forEach((cell) => {
      show(cell);
      cell.querySelector(".clarion-pref__box").addEventListener("click", () => {
        const hidden = cell.querySelector("input[type=hidden]");
        hidden.value = NEXT[hidden.value];
        show(cell);
        if (cell.closest("tr").dataset.scope === "global") globalChanged(table);
      });
    });
  });
});
