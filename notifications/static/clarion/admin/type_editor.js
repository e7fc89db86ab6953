// The notification type editor: keeps the templates JSON in step with the
// per-locale fields, previews each locale beside its fields, adds, copies and
// removes locales. Saving is the admin's own form post; the server checks it.
// Loaded in the page head (admin media): runs once the form is parsed.
document.addEventListener("DOMContentLoaded", () => {
  const grid = document.querySelector(".clarion-grid");
  if (!grid) return;
  const jsonBox = grid.querySelector(".clarion-json textarea");
  const sample = document.getElementById("id_sample_data");
  const defaultLocale = document.getElementById("id_default_locale");
  const csrf = document.querySelector("[name=csrfmiddlewaretoken]").value;
  const url = grid.dataset.previewUrl;
  let timer = null;
  let generation = 0;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function collect() {
    const templates = {};
    grid.querySelectorAll(".clarion-channel").forEach((section) => {
      section.querySelectorAll(".clarion-locale").forEach((block) => {
        const fields = {};
        block.querySelectorAll("textarea[data-field]").forEach((area) => {
          if (area.value.trim()) fields[area.dataset.field] = area.value;
        });
        if (Object.keys(fields).length) {
          (templates[section.dataset.channel] ||= {})[block.dataset.locale] = fields;
        }
      });
    });
    return templates;
  }

  function showPreview(block, channel, locale, result) {
    const box = block.querySelector(".clarion-locale__preview");
    box.textContent = "";
    const key = `${channel}.${locale}`;
    Object.entries(result.errors || {}).forEach(([path, messages]) => {
      if (path === `templates.${channel}` || path.startsWith(`templates.${key}.`)) {
        box.appendChild(el("p", { class: "clarion-error" }, `${path.replace(/^templates\./, "")}: ${messages.join(" ")}`));
      }
    });
    const rendered = (result.channels || {})[channel] || {};
    Object.entries(rendered).forEach(([field, value]) => {
      box.appendChild(el("strong", {}, field));
      if (field === "html") {
        const frame = el("iframe", { sandbox: "", title: `${key} html preview` });  // markup only: no scripts
        frame.srcdoc = value;
        box.appendChild(frame);
      } else {
        box.appendChild(el("pre", { "data-preview-field": field }, value));
      }
    });
    if (!box.childNodes.length) box.appendChild(el("p", { class: "help" }, "Nothing to show yet."));
    const used = (result.used || {})[key];
    block.querySelector(".clarion-used").textContent = used && used.length ? used.join(", ") : "nothing";
    const missing = (result.missing || {})[key] || [];
    const lacks = block.querySelector(".clarion-lacks");
    lacks.hidden = !missing.length;
    lacks.querySelector(".clarion-missing-names").textContent = missing.join(", ");
  }

  async function refresh() {
    const mine = ++generation;
    const templates = collect();
    jsonBox.value = JSON.stringify(templates, null, 2);
    jsonBox.dispatchEvent(new Event("input"));  // the whole-type preview below follows it
    const blocks = [...grid.querySelectorAll(".clarion-locale")];
    const locales = [...new Set(blocks.map((b) => b.dataset.locale))];
    await Promise.all(locales.map(async (locale) => {
      const body = new URLSearchParams({
        templates: JSON.stringify(templates),
        sample_data: sample ? sample.value || "{}" : "{}",
        locale,
        default_locale: defaultLocale ? defaultLocale.value : "en",
      });
      let result;
      try {
        const response = await fetch(url, { method: "POST", body, headers: { "X-CSRFToken": csrf } });
        result = await response.json();
      } catch (error) {
        result = { errors: { preview: [String(error)] } };
      }
      if (mine !== generation) return;  // a newer edit is being previewed
      blocks.filter((b) => b.dataset.locale === locale).forEach((block) => {
        showPreview(block, block.closest(".clarion-channel").dataset.channel, locale, result);
      });
    }));
    grid.dataset.previewed = String(mine);
  }

  function schedule() { clearTimeout(timer); timer = setTimeout(refresh, 300); }

  // A box grows with its template, so a long line is read whole.
  function fit(area) {
    area.style.height = "auto";
    area.style.height = `${area.scrollHeight + 2}px`;
  }

  function wire(block) {
    block.querySelectorAll("textarea").forEach((area) => {
      fit(area);
      area.addEventListener("input", () => { fit(area); schedule(); });
    });
    block.querySelector(".clarion-copy-default").addEventListener("click", () => {
      const wanted = (defaultLocale ? defaultLocale.value : "en").toLowerCase();
      const source = [...block.parentNode.querySelectorAll(".clarion-locale")]
        .find((b) => b !== block && b.dataset.locale.toLowerCase() === wanted);
      if (!source) return;
      source.querySelectorAll("textarea[data-field]").forEach((from) => {
        const to = block.querySelector(`textarea[data-field="${from.dataset.field}"]`);
        to.value = from.value;
        fit(to);
      });
      schedule();
    });
    block.querySelector(".clarion-remove-locale").addEventListener("click", () => {
      block.remove();
      schedule();
    });
  }

  function addLocale(section, locale) {
    if ([...section.querySelectorAll(".clarion-locale")].some((b) => b.dataset.locale === locale)) return;
    const block = el("div", { class: "clarion-locale", "data-locale": locale });
    const fields = el("div", { class: "clarion-locale__fields" });
    const title = el("h4", {}, locale);
    title.append(" ",
      el("button", { type: "button", class: "clarion-copy-default" }, "copy from default"),
      el("button", { type: "button", class: "clarion-remove-locale" }, "remove"));
    fields.appendChild(title);
    section.dataset.fields.split(",").forEach((field) => {
      const name = `${section.dataset.prefix}${locale}__${field}`;
      const wrapper = el("div", { class: "clarion-field" });
      wrapper.appendChild(el("label", { for: name }, field));
      wrapper.appendChild(el("textarea", {
        id: name, name, "data-field": field,
        rows: ["html", "text", "payload", "body"].includes(field) ? "3" : "1",
      }));
      fields.appendChild(wrapper);
    });
    const used = el("p", { class: "clarion-vars" }, "Uses: ");
    used.appendChild(el("span", { class: "clarion-used" }, "nothing"));
    const lacks = el("p", { class: "clarion-vars clarion-lacks", hidden: "" }, "Missing in sample_data: ");
    lacks.appendChild(el("span", { class: "clarion-missing-names" }));
    fields.append(used, lacks);
    block.append(fields, el("div", { class: "clarion-locale__preview", "aria-live": "polite" }));
    section.querySelector(".clarion-locales").appendChild(block);
    wire(block);
    schedule();
  }

  function markChannels() {
    const enabled = new Set([...document.querySelectorAll("input[name=channels]:checked")].map((b) => b.value));
    grid.querySelectorAll(".clarion-channel").forEach((section) => {
      section.classList.toggle("clarion-channel--off", !enabled.has(section.dataset.channel));
    });
  }

  grid.querySelectorAll(".clarion-locale").forEach(wire);
  grid.querySelectorAll(".clarion-channel").forEach((section) => {
    const input = section.querySelector(".clarion-new-locale");
    const add = () => {
      const locale = input.value.trim();
      if (locale && !locale.includes("__")) addLocale(section, locale);
      input.value = "";
    };
    section.querySelector(".clarion-add-locale__button").addEventListener("click", add);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") { event.preventDefault(); add(); }
    });
  });
  document.querySelectorAll("input[name=channels]").forEach((box) => box.addEventListener("change", markChannels));
  [sample, defaultLocale].forEach((input) => input && input.addEventListener("input", schedule));
  markChannels();
  refresh();
});
