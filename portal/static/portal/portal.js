// Copy buttons: data-copy="text" copies that text, data-copy-from="id" the text of that
// element. Plain JS, no dependencies: the portal must work offline and without a build.
"use strict";

function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text);
  }
  // Plain-HTTP pages (a router on a LAN address) have no clipboard API: fall back to a
  // selected textarea and the older copy command.
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  const copied = document.execCommand("copy");
  document.body.removeChild(area);
  return copied ? Promise.resolve() : Promise.reject(new Error("copy refused"));
}

document.addEventListener("click", function (event) {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const source = button.dataset.copyFrom && document.getElementById(button.dataset.copyFrom);
  const text = source ? source.textContent : (button.dataset.copy || "");
  const label = button.textContent;
  copyText(text.trim()).then(
    function () { button.textContent = "Copied"; },
    function () { button.textContent = "Select and copy by hand"; }
  ).finally(function () {
    setTimeout(function () { button.textContent = label; }, 2000);
  });
});
