// The Models page's cost estimate, recomputed as the numbers are typed. Money never goes
// through a float: each option carries its prices as whole pico-USD per token (the server
// computed them exactly), the cost is summed in BigInt and rounded up once to micro-USD, as
// the router charges. Without JavaScript the form's submit asks the server instead.
"use strict";

(function () {
  const form = document.getElementById("estimator");
  if (!form) return;
  const select = document.getElementById("estimate-model");
  const tokensIn = document.getElementById("estimate-in");
  const tokensOut = document.getElementById("estimate-out");
  const output = document.getElementById("estimate");
  const tokensText = document.getElementById("estimate-tokens");
  const PICO_PER_MICRO = 1000000n;
  const MICROS_PER_USD = 1000000n;

  function count(input) {
    const text = input.value.trim();
    return /^[0-9]{1,9}$/.test(text) ? BigInt(text) : null;
  }

  // As the portal's usd filter: six decimals always, exact to the micro-USD.
  function usd(micros) {
    const whole = micros / MICROS_PER_USD;
    const fraction = (micros % MICROS_PER_USD).toString().padStart(6, "0");
    return "$" + whole.toString() + "." + fraction;
  }

  function grouped(n) {
    return n.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  function update() {
    const option = select.options[select.selectedIndex];
    const inCount = count(tokensIn);
    const outCount = count(tokensOut);
    if (!option || inCount === null || outCount === null) return;
    const pico = inCount * BigInt(option.dataset.input) + outCount * BigInt(option.dataset.output);
    const micros = (pico + PICO_PER_MICRO - 1n) / PICO_PER_MICRO;  // ceil: never under
    output.textContent = usd(micros);
    output.title = grouped(micros) + " micro-USD";
    tokensText.textContent = grouped(inCount) + " tokens in and " + grouped(outCount) + " out";
  }

  form.addEventListener("input", update);
  form.addEventListener("change", update);
})();
