// Copy buttons beside short ids in the admin's lists and pages.
document.addEventListener("click", (event) => {
  const button = event.target.closest(".clarion-copy");
  if (!button) return;
  event.preventDefault();
  const text = button.dataset.copy;
  const done = () => {
    button.textContent = "copied";
    setTimeout(() => { button.textContent = "copy"; }, 1200);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done);
    return;
  }
  // Plain http (an admin behind a private address): the clipboard API is not offered.
  const area = document.createElement("textarea");
  area.value = text;
  document.body.appendChild(area);
  area.select();
  document.execCommand("copy");
  area.remove();
  done();
});
