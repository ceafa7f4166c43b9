// The playground: streams chat completions from /v1 and shows each answer's tokens and cost.
// The key comes from a same-origin POST and lives in this closure only, never in the page.
(function () {
  "use strict";
  var form = document.getElementById("playground");
  if (!form) { return; }
  var transcript = form.querySelector("[data-testid=transcript]");
  var errorBox = form.querySelector("[data-testid=playground-error]");
  var sendButton = form.querySelector("[data-testid=send]");
  var stopButton = form.querySelector("[data-testid=stop]");
  var clearButton = form.querySelector("[data-testid=clear]");
  var csrfToken = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  var history = [];  // the conversation so far, as the API wants it
  var key = null;
  var controller = null;

  function fetchKey() {
    return fetch(form.dataset.keyUrl, {
      method: "POST", credentials: "same-origin",
      headers: {"X-CSRFToken": csrfToken, "Accept": "application/json"}
    }).then(function (response) {
      if (!response.ok) { throw new Error("The playground key could not be had: sign in again."); }
      return response.json();
    }).then(function (body) { key = body.key; return key; });
  }

  function turn(role, text) {
    var item = document.createElement("li");
    item.className = "pg-turn " + role;
    item.dataset.role = role;
    var label = document.createElement("p");
    label.className = "pg-role";
    label.textContent = role === "user" ? "You" : "Model";
    var body = document.createElement("p");
    body.className = "pg-text";
    body.textContent = text;
    item.append(label, body);
    transcript.append(item);
    return {item: item, body: body};
  }

  function meta(shown, text) {
    var line = document.createElement("p");
    line.className = "pg-meta";
    line.dataset.testid = "answer-meta";
    line.textContent = text;
    shown.item.append(line);
  }

  function request(signal) {
    var messages = [];
    var system = form.elements.system.value.trim();
    if (system) { messages.push({role: "system", content: system}); }
    var body = {
      model: form.elements.model.value,
      messages: messages.concat(history),
      stream: true,
      stream_options: {include_usage: true}
    };
    var temperature = parseFloat(form.elements.temperature.value);
    if (!isNaN(temperature)) { body.temperature = temperature; }
    var maxTokens = parseInt(form.elements.max_tokens.value, 10);
    if (!isNaN(maxTokens)) { body.max_tokens = maxTokens; }
    return fetch(form.dataset.chatUrl, {
      method: "POST", signal: signal, credentials: "omit",
      headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json"},
      body: JSON.stringify(body)
    });
  }

  // Server-sent events: blank-line separated, each with `data:` lines; [DONE] ends them.
  function readEvents(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    function pump() {
      return reader.read().then(function (step) {
        if (step.done) { return; }
        buffer += decoder.decode(step.value, {stream: true}).replace(/\r\n/g, "\n");
        var end;
        while ((end = buffer.indexOf("\n\n")) !== -1) {
          var block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          var data = block.split("\n").filter(function (line) {
            return line.indexOf("data:") === 0;
          }).map(function (line) { return line.slice(5).trim(); }).join("\n");
          if (data === "[DONE]") { return; }
          if (data) { onEvent(JSON.parse(data)); }
        }
        return pump();
      });
    }
    return pump();
  }

  function refusal(response) {
    return response.json().then(function (body) {
      return (body && body.error && body.error.message) || ("HTTP " + response.status);
    }, function () { return "HTTP " + response.status; });
  }

  function setBusy(busy) {
    sendButton.disabled = busy;
    stopButton.disabled = !busy;
  }

  function send(text) {
    errorBox.textContent = "";
    history.push({role: "user", content: text});
    var asked = turn("user", text);
    var shown = turn("assistant", "");
    var answer = "";
    var usage = null;
    controller = new AbortController();
    var signal = controller.signal;
    setBusy(true);
    (key ? Promise.resolve(key) : fetchKey()).then(function () {
      return request(signal);
    }).then(function (response) {
      // A key revoked or expired since it was fetched: fetch the session's key afresh, once.
      if (response.status === 401) { return fetchKey().then(function () { return request(signal); }); }
      return response;
    }).then(function (response) {
      if (!response.ok) {
        return refusal(response).then(function (message) { throw new Error(message); });
      }
      return readEvents(response, function (event) {
        if (event.error) { throw new Error(event.error.message || "The stream failed."); }
        var choice = event.choices && event.choices[0];
        if (choice && choice.delta && choice.delta.content) {
          answer += choice.delta.content;
          shown.body.textContent = answer;
        }
        if (event.usage) { usage = event.usage; }
      });
    }).then(function () {
      history.push({role: "assistant", content: answer});
      if (usage) {
        // usage.cost is the exact charge as decimal text: shown as it came, never rounded.
        meta(shown, usage.prompt_tokens + " prompt + " + usage.completion_tokens +
             " completion tokens · cost $" + usage.cost);
      }
    }, function (error) {
      if (error.name === "AbortError") {
        history.push({role: "assistant", content: answer});
        meta(shown, "Stopped. What was produced is charged; see Usage for the cost.");
      } else {
        // Refused or failed: the question goes back to the box, to send again.
        history.pop();
        asked.item.remove();
        shown.item.remove();
        form.elements.message.value = text;
        errorBox.textContent = error.message;
      }
    }).then(function () {
      controller = null;
      setBusy(false);
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = form.elements.message.value.trim();
    if (!text || controller) { return; }
    form.elements.message.value = "";
    send(text);
  });
  stopButton.addEventListener("click", function () {
    // Aborting drops the connection; the router then charges what it had streamed.
    if (controller) { controller.abort(); }
  });
  clearButton.addEventListener("click", function () {
    if (controller) { controller.abort(); }
    history = [];
    transcript.replaceChildren();
    errorBox.textContent = "";
  });
})();
