// Live preview of a notification type's templates in the admin change form.
(function () {
  const box = document.getElementById("clarion-preview");
  if (!box) return;
  const templates = document.getElementById("id_templates");
  const sample = document.getElementById("id_sample_data");
  const locale = document.getElementById("clarion-preview-locale");
  const defaultLocale = document.getElementById("id_default_locale");
  const csrf = document.querySelector("[name=csrfmiddlewaretoken]").value;
  let timer = null;

  function el(tag, text) { const n = document.createElement(tag); if (text !== undefined) n.textContent = text; return n; }

  function show(result) {
    box.textContent = "";
    for (const [path, messages] of Object.entries(result.errors || {})) {
      const p = el("p", `${path}: ${messages.join(" ")}`);
      p.className = "errornote";
      box.appendChild(p);
    }
    for (const [template, names] of Object.entries(result.missing || {})) {
      const p = el("p", `${template} — Missing in sample_data: ${names.join(", ")}`);
      p.className = "help clarion-missing";
      box.appendChild(p);
    }
    for (const [channel, fields] of Object.entries(result.channels || {})) {
      box.appendChild(el("h3", channel));
      for (const [field, value] of Object.entries(fields)) {
        box.appendChild(el("strong", field));
        if (field === "html") {
          const frame = document.createElement("iframe");
          frame.setAttribute("sandbox", "");  // no scripts, no same-origin: markup only
          frame.style.cssText = "width:100%;height:220px;border:1px solid #ddd;background:#fff";
          frame.srcdoc = value;
          box.appendChild(frame);
        } else {
          const pre = el("pre", value);
          pre.style.whiteSpace = "pre-wrap";
          box.appendChild(pre);
        }
      }
    }
  }

  async function refresh() {
    const body = new URLSearchParams({
      templates: templates ? templates.value : "{}",
      sample_data: sample ? sample.value : "{}",
      locale: locale.value,
      default_locale: defaultLocale ? defaultLocale.value : "en",
    });
    const response = await fetch(box.dataset.url, { method: "POST", body, headers: { "X-CSRFToken": csrf } });
    show(await response.json());
  }

  function schedule() { clearTimeout(timer); timer = setTimeout(refresh, 300); }
  [templates, sample, locale, defaultLocale].forEach((input) => input && input.addEventListener("input", schedule));
  refresh();
})();
