/* The demo chat. Sends a question to POST /ask and appends the answer's words as the server streams them (one JSON
 * object per line: {"text"} pieces, then {"token", "message_id"}). When the answer is complete its element gets
 * data-feedback-token, and the widget script (loaded with data-attach) attaches a widget to it. No inline script
 * or style anywhere, so the page runs under a strict Content-Security-Policy. */
(() => {
  "use strict";
  const form = document.getElementById("chat-form");
  const input = document.getElementById("chat-input");
  const send = document.getElementById("chat-send");
  const log = document.getElementById("chat-log");
  const empty = document.getElementById("chat-empty");
  let busy = false;

  const element = (tag, className, text) => {
    const node = document.createElement(tag);
    node.className = className;
    if (text != null) node.textContent = text;
    return node;
  };

  // Follow the answer as it grows, unless the user scrolled up to read something else.
  const nearBottom = () => window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 120;
  const toBottom = () => window.scrollTo(0, document.documentElement.scrollHeight);

  const addTurn = (question) => {
    const user = element("div", "turn turn-user");
    user.append(element("div", "user-message", question));
    const turn = element("div", "turn turn-assistant");
    const avatar = element("span", "avatar", "N");
    avatar.setAttribute("aria-hidden", "true");
    const message = element("div", "assistant-message");
    message.setAttribute("aria-busy", "true"); // screen readers read the answer once, when it is complete
    const text = element("div", "message-text");
    const typing = element("span", "typing");
    typing.setAttribute("aria-label", "The assistant is typing");
    typing.append(element("span", ""), element("span", ""), element("span", ""));
    text.append(typing);
    message.append(text);
    turn.append(avatar, message);
    log.append(user, turn);
    return { message, text, typing };
  };

  // The first error message of a 4xx/5xx answer ({"errors": {field: [messages]}}), else its status.
  const problem = async (response) => {
    try {
      const errors = (await response.json()).errors;
      return Object.values(errors).flat()[0];
    } catch {
      return "The help desk did not answer (HTTP " + response.status + ").";
    }
  };

  const ask = async (question) => {
    busy = true;
    send.disabled = true;
    empty.hidden = true;
    const { message, text, typing } = addTurn(question);
    toBottom();
    try {
      const response = await fetch(form.dataset.ask, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ question }),
      });
      if (!response.ok) throw new Error(await problem(response));
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const follow = nearBottom();
        const lines = (buffer + value).split("\n");
        buffer = lines.pop();
        for (const line of lines) {
          if (!line) continue;
          const part = JSON.parse(line);
          if (part.text != null) {
            typing.remove();
            text.append(part.text); // a text node: the answer is never parsed as HTML
          }
          if (part.token) {
            message.dataset.messageId = part.message_id;
            message.setAttribute("data-feedback-token", part.token);
          }
        }
        if (follow) toBottom();
      }
      if (!message.hasAttribute("data-feedback-token")) throw new Error("The answer was cut off: please ask again.");
    } catch (error) {
      typing.remove();
      message.classList.add("failed");
      text.append(element("p", "error", error.message || "Something went wrong: please ask again."));
    } finally {
      text.normalize();
      message.removeAttribute("aria-busy");
      busy = false;
      send.disabled = false;
      input.focus();
    }
  };

  const submit = (question) => {
    question = question.trim();
    if (!question || busy) return;
    input.value = "";
    ask(question);
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit(input.value);
  });
  // Enter sends, Shift+Enter starts a new line (and Enter while an input method composes a word does neither).
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit(input.value);
    }
  });
  empty.addEventListener("click", (event) => {
    const suggestion = event.target.closest("[data-question]");
    if (suggestion) submit(suggestion.dataset.question);
  });
  if (log.children.length) toBottom();
  input.focus();
})();
