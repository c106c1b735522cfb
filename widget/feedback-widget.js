/* feedback-bridge widget: <feedback-widget token="..."> adds thumbs up / down to one AI answer.
 * Load it with a classic <script src=".../feedback/widget.js">: events go to ".../feedback/events"
 * unless the element has an `endpoint` attribute. No dependencies. */
(() => {
  "use strict";
  const script = document.currentScript;
  const DEFAULT_ENDPOINT = script && script.src ? new URL("events", script.src).href : "/feedback/events";
  // A plain thumb drawn for this widget (emoji fonts are missing on many Linux desktops).
  const THUMB = `<svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" fill="currentColor">
<path d="M2 10h4v11H2zM8 10l4-8c1.5 0 3 1 3 3v4h5.5c1.4 0 2.4 1.3 2 2.6l-2.2 7.6A2 2 0 0 1 18.4 21H8z"/></svg>`;
  const TEMPLATE = `<style>
  :host { display: inline-flex; align-items: center; gap: .375rem; font: inherit; color: inherit; }
  :host([hidden]) { display: none; }
  button { font: inherit; line-height: 1; padding: .3rem .45rem; border-radius: .4rem; cursor: pointer;
    border: 1px solid var(--feedback-widget-border, #c8ccd2); background: var(--feedback-widget-bg, transparent); }
  button:hover { border-color: var(--feedback-widget-accent, #2f5fd0); }
  button:focus-visible { outline: 2px solid var(--feedback-widget-accent, #2f5fd0); outline-offset: 2px; }
  button[aria-pressed="true"] { border-color: var(--feedback-widget-accent, #2f5fd0);
    background: var(--feedback-widget-pressed-bg, #e4ebfb); }
  svg { display: block; }
  [data-vote="down"] svg { transform: rotate(180deg); }
  [role="status"] { font-size: .85em; opacity: .8; }
</style><button type="button" part="button up" data-vote="up" aria-label="Thumbs up" aria-pressed="false"
  title="Good answer">${THUMB}</button><button type="button"
  part="button down" data-vote="down" aria-label="Thumbs down" aria-pressed="false"
  title="Bad answer">${THUMB}</button><span role="status" aria-live="polite"
  part="status"></span>`;

  /** A UUID; crypto.randomUUID only exists in secure contexts, getRandomValues everywhere. */
  const uuid = () => crypto.randomUUID?.() ?? "10000000-1000-4000-8000-100000000000".replace(/[018]/g,
    (c) => (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16));

  class FeedbackWidgetElement extends HTMLElement {
    static get observedAttributes() { return ["token"]; }

    /** Register the element under `tag`; calling it again is harmless. */
    static define(tag = "feedback-widget") {
      const registry = window.customElements;
      if (!registry.get(tag)) {
        try { registry.define(tag, this); } catch { registry.define(tag, class extends this {}); }
      }
      return registry.get(tag);
    }

    /** @type {"up" | "down" | null} */ #vote = null;
    #stateToken = null; // token whose stored state was requested
    #touched = false; // the user voted: a late state answer must not overwrite that
    #status;

    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      root.innerHTML = TEMPLATE;
      this.#status = root.querySelector('[role="status"]');
      root.addEventListener("click", (event) => {
        const button = event.target.closest("button[data-vote]");
        if (button) this.#toggle(button.dataset.vote);
      });
    }

    /** @returns {string} the message token issued by the server */
    get token() { return this.getAttribute("token") ?? ""; }
    /** @param {string | null} value */
    set token(value) {
      if (value == null) this.removeAttribute("token");
      else this.setAttribute("token", String(value));
    }

    /** @returns {string} absolute URL of the events endpoint */
    get endpoint() { return new URL(this.getAttribute("endpoint") || DEFAULT_ENDPOINT, document.baseURI).href; }

    /** @returns {"up" | "down" | null} the vote shown */
    get vote() { return this.#vote; }

    connectedCallback() { this.#loadState(); }

    attributeChangedCallback(name, oldValue, newValue) {
      if (name !== "token" || oldValue === newValue) return;
      this.#touched = false;
      this.#render(null);
      if (this.isConnected) this.#loadState();
    }

    #render(vote) {
      this.#vote = vote;
      for (const button of this.shadowRoot.querySelectorAll("button[data-vote]")) {
        button.setAttribute("aria-pressed", String(button.dataset.vote === vote));
      }
    }

    #toggle(vote) {
      const previous = this.#vote;
      const type = previous === vote ? "retract" : `thumbs_${vote}`;
      this.#touched = true;
      this.#render(type === "retract" ? null : vote);
      this.#send(type, previous);
    }

    async #loadState() {
      const token = this.token;
      if (!token || token === this.#stateToken) return;
      this.#stateToken = token;
      try {
        const url = new URL("state", this.endpoint);
        url.searchParams.set("token", token);
        const response = await fetch(url, { headers: { Accept: "application/json" } });
        if (!response.ok) throw new Error(`state request failed with HTTP ${response.status}`);
        const state = await response.json();
        if (token === this.token && !this.#touched) this.#render(state.vote ?? null);
      } catch (error) {
        this.#stateToken = null; // try again on the next connect
        this.#emit("error", { stage: "state", error });
      }
    }

    async #send(type, previous) {
      const event = { id: uuid(), type, token: this.token, occurred_at: new Date().toISOString() };
      const shown = this.#vote;
      this.#emit("submit", { event });
      try {
        const response = await fetch(this.endpoint, {
          method: "POST", keepalive: true, headers: { "Content-Type": "text/plain" },
          body: JSON.stringify({ events: [event] }),
        });
        const body = await response.json().catch(() => ({}));
        const result = body.results?.[0];
        if (!result || result.status === "rejected") {
          throw new Error(result?.code || `event request failed with HTTP ${response.status}`);
        }
        this.#status.textContent = type === "retract" ? "Feedback removed" : "Thanks for your feedback";
        this.#emit("delivered", { event, result });
      } catch (error) {
        if (this.#vote === shown) this.#render(previous); // undo, unless the user has voted again since
        this.#status.textContent = "Sorry, your feedback could not be sent";
        this.#emit("error", { stage: "submit", event, error });
      }
    }

    #emit(name, detail) {
      this.dispatchEvent(new CustomEvent(`feedback-widget:${name}`, { bubbles: true, composed: true, detail }));
    }
  }

  window.FeedbackWidgetElement ??= FeedbackWidgetElement;
  FeedbackWidgetElement.define();
})();
