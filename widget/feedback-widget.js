/* feedback-bridge widget: <feedback-widget token="..."> collects feedback on one AI answer.
 *
 * One dependency-free file that runs as it is, no build step needed. The bridge serves its build by terser,
 * feedback-widget.min.js beside it (after a change here: `npm run build` in this folder; a test checks that the
 * committed build is this file's), which must stay under 5,000 bytes gzip -9, English included. Load it as a
 * classic script (`<script src=".../feedback/widget.js" defer>`) or import the module form the bridge also serves
 * (`import {FeedbackWidgetElement} from ".../feedback/widget.mjs"`: this code with exports), which replaces the one
 * `D.currentScript` (keep it the only one) with the module's URL. Internal names are short, each explained where it
 * is declared; public names (the element, its attributes and properties, `feedbackBridge`, the events, CSS
 * variables and parts) are spelled out.
 *
 * Delivery: each event gets a client-made id and time and joins ONE ordered queue in localStorage (in memory when
 * storage is unavailable) shared by the origin's tabs. The sender of a tab holds a Web Lock from reading the queue
 * to removing what the server answered, so no two tabs send at once and none sends what another already had
 * answered: neither a reload nor a second tab sends an event twice (the server's de-duplication by id is the
 * last line, not the first). Retries back off with jitter and honour Retry-After; rejected events are dropped
 * with a `feedback-widget:error` event; offline events wait for `online`; on `pagehide` what is left leaves with
 * sendBeacon.
 */
(() => {
  // The module form (widget.mjs) is served with `D.currentScript` below replaced by `{src:import.meta.url}`: its
  // endpoint, like the classic script's, is `events` next to its own URL.
  const W = window, D = document, N = navigator, S = D.currentScript, src = S?.src;
  if (W.feedbackBridge) return; // loaded twice (say, classic and module): the first copy does the work
  const TAG = "feedback-widget", KEY = "feedback-bridge:queue:v1";
  // Settings: defaults, then the script tag's data-* attributes (data-attach, data-token-attribute, data-prompt,
  // data-input, data-variant, data-endpoint), then feedbackBridge.configure({...}).
  const cfg = {
    endpoint: src ? new URL("events", src).href : "/feedback/events", tokenAttribute: "data-feedback-token",
    labels: {}, retry: 1e3, retryMax: 3e5, ...S?.dataset,
  };
  // Short names, used throughout (one letter for a local is the rule, explained where it is not obvious):
  // `on(target, type, fn, capture)` adds a listener, `all(root, selector)` is querySelectorAll, `uid()` an id.
  const on = (t, type, f, c) => t.addEventListener(type, f, c), all = (r, s) => r.querySelectorAll(s),
    uid = () => crypto.randomUUID?.() ?? Date.now() + "." + Math.random();

  // -- labels, gettext style: the key is the English text (a reason's is its code, shown in words: "NOT_COMPLETE"
  // -> "Not complete"; every English key is already written that way). Another language's labels are fetched on
  // demand from {prefix}/widget/i18n/{lang}.json (the bridge has de, fr, es and ja); any label can be overridden:
  // feedbackBridge.configure({labels: {"Thumbs up": "Like", NOT_COMPLETE: "Missing steps"}}).
  const BAD = "NOT_FACTUALLY_CORRECT HARMFUL_OR_UNSAFE INCORRECT_OR_MISSING_SOURCES NOT_HELPFUL NOT_BASED_ON_DOCUMENTS \
NOT_COMPLETE NOT_CONCISE OTHER".split(" "), GOOD = "FACTUALLY_CORRECT COMPLETE RELEVANT_SOURCES HELPFUL OTHER".split(" ");
  const LANGS = {}; // language -> its labels (a promise while they are fetched)
  // label(language, key)
  const label = (l, k) => cfg.labels[k] ?? LANGS[l]?.[k] ?? k[0] + k.slice(1).toLowerCase().replaceAll("_", " ");
  // dress(root, language) labels the [data-k] elements under root (their text) and the [data-a] ones (icons, stars
  // and the comment box: accessible name, tooltip and placeholder; a star's {n} is its number).
  const dress = (r, l) => {
    for (const n of all(r, "[data-k]")) n.textContent = label(l, n.dataset.k);
    for (const n of all(r, "[data-a]")) n.title = n.ariaLabel = n.placeholder = label(l, n.dataset.a).replace("{n}", n.value);
  };
  // Text events carry 1-10,000 characters; never cut a surrogate pair in half (the server refuses lone halves).
  const clip = t => t.slice(0, 1e4).replace(/[\ud800-\udbff]$/, "");
  // emit(element, name, detail): a feedback-widget:{name} event, from the element while it is in the page.
  const emit = (w, name, detail) => (w?.isConnected ? w : D).dispatchEvent(
    new CustomEvent(TAG + ":" + name, { bubbles: true, composed: true, detail }));

  // -- storage: localStorage, else memory (private modes, full quotas, sandboxed frames): once storage fails (or
  // is not there: `store` is not an object), memory only. get(key), put(key, value)
  let store, mem = {};
  try { store = localStorage; } catch {}
  const get = k => {
    try { return JSON.parse(store.getItem(k)); } catch { store = 0; return mem[k]; }
  };
  // Writes only what changed: each write wakes the other tabs (a `storage` event).
  const put = (k, v) => {
    mem[k] = v;
    v = JSON.stringify(v);
    try { v == store.getItem(k) || store.setItem(k, v); } catch { store = 0; }
  };
  const STATE = "feedback-bridge:state:v1:"; // + token: the choice shown on a message

  // -- the queue: [{e: event, o: the page that made it, f: 1 while a request carries it}], oldest first; `i` is
  // an item of it throughout. A page sends its own events, and those of pages that are gone (reloaded, closed):
  // each page holds a Web Lock named after it while it lives. A page never sends another live page's events, so a
  // stale copy of the queue (localStorage reaches other processes with a delay, which a lock does not wait for)
  // cannot make it send one twice; for the same reason a gone page's events are only taken once they are 2 s old.
  const owners = new Map(); // event id -> the element that made it (it gets the delivered or error event)
  const unsaved = []; // made here, not yet in the stored queue: the sender moves them, under the lock
  const TAB = uid();
  N.locks?.request(KEY + TAB, () => new Promise(() => {}));
  // Ids this page had answered. A tab writing back a stale copy of the queue (the lock serialises senders, not
  // localStorage's propagation between processes) can bring answered events back: they are never taken again.
  // `queue(1)` drops the request marks (under the lock no request is out: marks left by a tab that died
  // mid-request are stale).
  const sent = new Set();
  const queue = clean => (get(KEY) || []).filter(i => !sent.has(i.e.id)).map(i => clean ? { e: i.e, o: i.o } : i);
  // take(queue, live): the events this page may send that fit one request (100 events, the 64 KiB budget of
  // keepalive and beacons), oldest first, stopping at one that a request may be carrying right now; `live`: the
  // pages alive (none: only this page's). Another page's events wait: a look again in 2 s sends them if that page
  // is gone by then.
  let later;
  const take = (q, live) => {
    const b = [];
    let size = 12;
    for (const i of q) {
      if (i.o != TAB && (!live || live.has(KEY + i.o) || Date.now() - Date.parse(i.e.occurred_at) < 2e3)) {
        clearTimeout(later);
        later = setTimeout(pump, 2e3);
        continue;
      }
      if (i.f || b[99] || ((size += new Blob([JSON.stringify(i.e)]).size + 1) > 6e4 && b[0])) break;
      b.push(i);
    }
    return b;
  };
  // enqueue(event, element): stamp, queue and announce an event
  const enqueue = (e, w) => {
    e.id = uid();
    e.occurred_at = new Date().toISOString();
    owners.set(e.id, w);
    unsaved.push({ e, o: TAB });
    emit(w, "submit", { event: e });
    pump();
    return e;
  };

  // The tab's one sender (`running`); `again` asks it for another round; after a failure, nothing is sent before
  // `retryAt` (`tries` failures in a row).
  let running, again, retryAt = 0, tries = 0, timer;
  const pump = () => {
    again = 1;
    // Under the Web Lock (without Web Locks: insecure origins, old browsers, the server's de-duplication is all
    // that is left).
    return running ||= (N.locks ? N.locks.request(KEY, send).catch(send) : send()).catch(() => {})
      .finally(() => { running = 0; again && pump(); });
  };
  // One round: q the queue, b the batch taken from it, r the response, j its body.
  const send = async () => {
    while (again) {
      again = 0;
      // The pages alive, only asked for when another page's events are queued: the question evicts every page of
      // this origin from the back/forward cache that holds a lock (their own, at least).
      const q = [...queue(1), ...unsaved.splice(0)],
        live = q.some(i => i.o != TAB) && new Set((await N.locks?.query())?.held.map(l => l.name)),
        b = take(q, live), events = b.map(i => i.e);
      // `online` or the retry timer pumps again
      if (!b[0] || !N.onLine || Date.now() < retryAt) return put(KEY, q);
      for (const i of b) i.f = 1;
      put(KEY, q);
      let r, j;
      try {
        // A string body goes as text/plain: no CORS preflight, and the bridge accepts it.
        r = await fetch(cfg.endpoint, { method: "POST", keepalive: true, body: JSON.stringify({ events }) });
        j = await r.json();
      } catch {}
      const status = r?.status | 0, results = j?.results;
      // Network errors, timeouts, throttling and server errors are retried; any other answer is final: the
      // events are answered (never taken again), and their elements told.
      if (!results && (status < 400 || status > 499 || status == 408 || status == 429)) {
        // Retry-After in seconds, else a jittered exponential delay.
        const delay = r?.headers.get("Retry-After") * 1e3 ||
          Math.min(cfg.retryMax, cfg.retry * 2 ** tries) * (0.5 + Math.random() / 2);
        tries++;
        retryAt = Date.now() + delay;
        clearTimeout(timer);
        timer = setTimeout(pump, delay);
      } else {
        tries = 0, again = 1;
        events.forEach((e, n) => settle(sent.add(e.id) && e, results?.[n] ||
          { id: e.id, status: "rejected", code: j?.code || "http_" + status, errors: j?.errors }));
      }
      // Answered events (in `sent`) leave the queue, read again: a closing tab may have added to it meanwhile.
      put(KEY, queue(1));
    }
  };
  // Leaving (or hidden, which may be the last chance on mobile): what is left goes out with sendBeacon, unless a
  // request is carrying the first events (those behind must not overtake them: they stay queued for the next page
  // or another tab).
  const leave = () => {
    const q = [...queue(), ...unsaved.splice(0)];
    for (let b; N.onLine && (b = take(q))[0] && N.sendBeacon(cfg.endpoint, JSON.stringify({ events: b.map(i => i.e) }));) {
      q.splice(0, b.length);
    }
    put(KEY, q);
  };
  on(W, "pagehide", leave);
  on(W, "visibilitychange", () => D.hidden && leave());
  // Send what is queued now, without waiting out a retry delay (when back online, or asked to).
  const flush = () => (retryAt = 0, pump());
  on(W, "online", flush);
  on(W, "storage", e => e.key == KEY && pump()); // another tab queued or released events

  // -- copies of answers and prompts, pastes into the chat input: one listener each for the whole document
  const answers = new WeakMap(); // answer element -> its widget
  let copying; // set while the copy button's execCommand fallback copies: that is no user copy
  // record(widget, type, text)
  const record = (w, type, text) => w?.token && enqueue({ type, token: w.token, text }, w);
  on(D, "copy", e => {
    const s = getSelection(), t = clip("" + s);
    // Not a copy inside a widget (its comment box) or a text field.
    if (copying || !t.trim() || e.target.closest(TAG + ",input,textarea")) return;
    for (let n = s.getRangeAt(0).commonAncestorContainer; n; n = n.parentNode) {
      if (answers.has(n)) return record(answers.get(n), "copy_output", t);
      if (n.matches?.(cfg.prompt)) {
        // A prompt's copy counts for its answer: the first assistant message after it, once it has its widget.
        const m = [...all(D, cfg.attach || TAG)].find(m => n.compareDocumentPosition(m) & 4);
        return record(answers.get(m) || m, "copy_input", t);
      }
    }
  }, true);
  on(D, "paste", e => {
    const t = clip(e.clipboardData.getData("text")), w = all(D, TAG + "[token]");
    // A paste into the chat input counts for the latest answer.
    t && e.target.closest?.(cfg.input) && record(w[w.length - 1], "paste", t);
  }, true);

  // -- auto-attach: one MutationObserver for the document. A widget goes after each message's content (m) once the
  // message has its token. It is inserted in the observer's callback (a microtask), so a streamed message has it
  // in the frame it first appears in.
  let observer;
  const attach = () => {
    const sel = cfg.attach, name = cfg.tokenAttribute;
    const give = (m, token = m.getAttribute(name), w = answers.get(m)) => token && (w?.answer == m ? w.token = token :
      m.append(Object.assign(D.createElement(TAG), { token, answer: m }, cfg.variant && { variant: cfg.variant })));
    const scan = n => {
      n.matches?.(sel) && give(n);
      for (const m of n.querySelectorAll?.(sel) || []) give(m);
    };
    observer?.disconnect();
    if (!sel) return;
    observer = new MutationObserver(records => {
      for (const r of records) {
        if (r.type[0] == "a") r.target.matches(sel) && give(r.target); // the token attribute changed
        else r.addedNodes.forEach(scan);
      }
    });
    observer.observe(D, { childList: true, subtree: true, attributes: true, attributeFilter: [name] });
    scan(D);
  };

  // -- looks: one constructable stylesheet for every widget. The public --feedback-* variables are only read (at
  // the point of use), never set here, so set on the element or any ancestor they apply, over light and dark
  // defaults: the system's page colours (Canvas, CanvasText) and an accent of AA contrast on both. Dark follows
  // prefers-color-scheme (color-scheme: light dark) unless the theme attribute fixes one. The accent marks pressed
  // thumbs and chosen stars; borders and the focus ring are the text colour. The thumbs are a polygon (clip-path)
  // painted in the text colour; the copy icon and the stars (native radio buttons) are glyphs.
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(":host{color-scheme:light dark}\
:host([theme=light]){color-scheme:light}:host([theme=dark]){color-scheme:dark}\
*{font:inherit;color:inherit;background:var(--feedback-bg,Canvas);border:1px solid;\
border-radius:var(--feedback-radius,1rem);padding:0 .6rem}div,fieldset{display:flex;flex-flow:wrap;align-items:center;\
gap:.3rem;color:var(--feedback-fg,CanvasText);font:var(--feedback-font,14px/1.4 system-ui,sans-serif)}\
div,input,span{padding:0;border:0;background:0}\
button,input{height:2rem}\
:focus-visible{outline:2px solid}[aria-pressed=true],:checked,:has(~:checked){color:var(--feedback-accent,\
light-dark(#0b57d0,#a8c7fa));forced-color-adjust:none}\
[data-v]:before{forced-color-adjust:none;content:'';display:block;padding:.5rem;background:currentColor;clip-path:polygon(0 40%,20% 40%,20% 100%,\
27% 100%,27% 40%,50% 0,60% 0,60% 35%,100% 35%,90% 100%,0 100%)}[data-v=down]:before{scale:-1}\
[data-c]:before{content:'❐'}input{appearance:none;margin:0 .2rem;font-size:1.3rem}input:before{content:'★'}\
:host(:not([variant=rating],[variant=both])) [part=rating],:host([variant=rating]) [data-v]{display:none}\
fieldset,textarea{flex-basis:100%;margin:0;padding:.5rem}textarea{height:4rem}");

  // An unrendered widget has no shadow root yet (a thousand of them attach faster without): one document rule
  // reserves its rendered height, so nothing shifts when it renders.
  const HOST = new CSSStyleSheet();
  HOST.replaceSync(TAG + ":not([hidden]){display:block;min-height:2.3rem}");
  D.adoptedStyleSheets.push(HOST);

  // The idle widget: one bar of 11 elements (thumbs, a 1-5 rating of native radio buttons, copy, a polite live
  // region); the panel with reasons and a comment is built only when it opens. Cloned per widget, English in.
  const BAR = D.createElement("template");
  BAR.innerHTML = "<div part=bar><button part='button up' data-v=up data-a='Thumbs up' aria-pressed=false></button>\
<button part='button down' data-v=down data-a='Thumbs down' aria-pressed=false></button><div role=radiogroup \
part=rating data-a=Rating>" + [1, 2, 3, 4, 5].map(n => "<input type=radio name=r part=star data-a='{n} out of 5' value=" +
    n + ">").join("") + "</div><button part='button copy' data-c=1 data-a='Copy answer'></button><span role=status \
part=status></span></div>";
  dress(BAR.content);

  const live = new Set(); // connected rendered widgets
  let burst = 0; // widgets connected unrendered in this microtask
  // Element internals for the code around the class, set in its static block: `visible`, `settle`, `relabel`.
  let visible, settle, relabel;

  class FeedbackWidgetElement extends HTMLElement {
    static observedAttributes = ["token"];

    /** Register the element as `tag` in `registry`; calling it again is harmless. */
    static define(tag = TAG, r = customElements) {
      // (A class defined under one name already gets a subclass for another.)
      try { r.get(tag) || r.define(tag, this); } catch { r.define(tag, class extends this {}); }
      return r.get(tag);
    }

    #v; // the vote shown: "up" | "down" | null
    #r; // the rating shown: 1-5 | null
    #e; // the latest vote or rating event: what a reason or comment amends
    #x; // the reason chosen in the open panel
    #p; // the open panel
    #l; // the language of the labels (the closest `lang`); set once rendered
    #f; // the token whose stored state was asked for
    #t; // the user chose here: a stored state answering late must not overwrite that
    #s; // the shadow root, made on the first render (before it, a document rule reserves the space: see HOST)
    // `answer` (an Element): the answer, set by auto-attach, else the element just before the widget

    // token, variant and theme: attribute-backed properties, defined after the class.

    connectedCallback() {
      (this.answer ||= this.previousElementSibling) && answers.set(this.answer, this);
      // Up to 10 widgets connected at once render now: a streamed message has its widget in its first frame. More
      // (a transcript attached, a page's widgets upgraded) stay idle, an empty host of the rendered size, until
      // they near the viewport or get focus.
      if (this.#l == null && !burst++) queueMicrotask(() => burst = 0);
      if (this.#l == null && burst > 10) this.tabIndex = 0, visible.observe(this);
      else this.#render();
    }

    disconnectedCallback() {
      live.delete(this);
      visible.unobserve(this);
    }

    attributeChangedCallback(_, old, value) {
      // A new token: another message. (Before the first connection, connectedCallback does it all.)
      if (old != value && this.#l != null) this.#t = this.#f = 0, this.#close(), this.#render();
    }

    /** The shadow root's one click and one keydown listener (and input, while the panel is open). The stars are
     * native radio buttons (arrow keys and one tab stop come with them): an arrow key's click has no `detail`. */
    handleEvent(e) {
      const t = e.target, d = t.dataset, n = +t.value;
      if (e.type == "input") t.nextSibling.textContent = t.value.length + "/1000";
      else if (e.type == "keydown") e.key == "Escape" && this.#close(1);
      else if (d.v) this.#choose(d.v);
      // Clicking the chosen star again retracts, as the thumbs do; Space there does not (radio keys).
      else if (t.name == "r") (e.detail || n != this.#r) && this.#choose(n);
      else if (d.r) {
        this.#x = this.#x == d.r ? 0 : d.r; // one reason at most: the API takes one
        for (const c of all(this.#p, "[data-r]")) c.ariaPressed = c.dataset.r == this.#x;
      } else if (d.k == "Send") this.#amend();
      else if (d.k == "Dismiss") this.#close(1);
      else if (d.c) this.#copy(t);
    }

    #say(t) {
      this.#s.querySelector("span").textContent = label(this.#l, t);
    }

    /** #show(vote, rating, keep): show a vote and rating (aria-pressed, checked stars); `keep`: remember it here. */
    #show(v, r, keep) {
      this.#v = v;
      this.#r = r;
      for (const b of all(this.#s, "[data-v]")) b.ariaPressed = b.dataset.v == v;
      for (const b of all(this.#s, "input")) b.checked = b.value == r;
      keep && put(STATE + this.token, (v || r) && { v, r });
    }

    /** Fill the shadow root (once) and show the stored choice; `near`: (nearly) visible: ask the server too. */
    #render(near) {
      // s: the shadow root, t: the token, l: the language, j: JSON from the server
      const s = this.#s ||= Object.assign(this.attachShadow({ mode: "open" }), { adoptedStyleSheets: [sheet] }),
        t = this.token, stored = t && get(STATE + t), json = r => r.json();
      live.add(this);
      if (this.#l == null) {
        const l = this.#l = (this.closest("[lang]")?.lang || "").slice(0, 2).toLowerCase();
        this.removeAttribute("tabindex");
        s.append(BAR.content.cloneNode(1));
        on(s, "click", this);
        on(s, "keydown", this);
        // Labels still being fetched (a promise) dress in English; they relabel when they come.
        // Any language but English is asked for: the bridge answers 404 for one it does not have.
        if (l && l != "en") LANGS[l] ||= fetch(new URL("widget/i18n/" + l + ".json", cfg.endpoint))
          .then(json).then(j => relabel(l, LANGS[l] = j)).catch(() => {}), dress(s, l);
      }
      this.#t || this.#show(stored?.v, stored?.r);
      if (t && this.#f != t) {
        if (!near) return visible.observe(this);
        this.#f = t;
        // Events still queued for this message are newer than what the server has.
        fetch(new URL("state?token=" + encodeURIComponent(t), cfg.endpoint)).then(json).then(j =>
          t == this.token && !this.#t && "vote" in j && ![...unsaved, ...queue()].some(i => i.e.token == t) &&
          this.#show(j.vote, j.rating, 1)).catch(() => this.#f = 0);
      }
    }

    /** A thumb ("up", "down") or a star (1-5); the chosen one again retracts the feedback (vote and rating, as on
     * the server). */
    #choose(v) {
      const token = this.token, star = v > 0, undo = v == (star ? this.#r : this.#v);
      if (!token) return;
      this.#t = 1;
      this.#e = enqueue({ type: undo ? "retract" : star ? "rating" : "thumbs_" + v, token,
        value: star && !undo ? v : undefined }, this);
      this.#show(undo ? null : star ? this.#v : v, undo ? null : star ? v : this.#r, 1);
      this.#close();
      this.#say(undo ? "Feedback removed" : "Thanks for your feedback");
      undo || this.#open(v == "down" || v < 3 ? BAD : v == "up" || v > 3 ? GOOD : []);
    }

    #open(reasons) {
      const p = this.#p = D.createElement("fieldset");
      this.#x = 0;
      p.part = "panel";
      p.innerHTML = "<legend data-k='Tell us more'></legend>" + reasons.map(r => "<button part=reason data-r=" + r +
        " data-k=" + r + " aria-pressed=false></button>").join("") + "<textarea part=comment maxlength=1000 \
data-a='Comment (optional)'></textarea><span part=counter>0/1000</span><button part='button send' \
data-k=Send></button><button part='button dismiss' data-k=Dismiss></button>";
      dress(p, this.#l);
      on(p, "input", this);
      this.#s.firstChild.append(p);
    }

    /** Close the panel; with `refocus`, focus moves from inside it back to the choice. */
    #close(refocus) {
      const p = this.#p;
      refocus && p?.contains(this.#s.activeElement) && this.#s.querySelector("[aria-pressed=true],:checked")?.focus();
      this.#p = 0;
      p?.remove();
    }

    /** The reason and comment amend the vote (a rating's amendment repeats its value, as the API requires). */
    #amend() {
      const e = this.#e, c = this.#p.querySelector("textarea").value.replace(/[^\P{Cc}\n\t]/gu, "").trim();
      (this.#x || c) && enqueue({ ...e, amends: e.id, reason: this.#x || undefined, comment: c || undefined }, this);
      this.#close(1);
      this.#say("Thanks for your feedback");
    }

    /** Copy the answer's text (without this widget, when it sits inside the answer). */
    #copy(b) {
      // a: the answer, r: a range of its text, t: that text; without the clipboard API a textarea's text is copied
      const a = this.answer, r = D.createRange(), fallback = () => {
        const area = this.#s.appendChild(D.createElement("textarea"));
        area.value = t;
        area.select();
        copying = 1;
        D.execCommand("copy");
        copying = 0;
        area.remove();
        b.focus();
      };
      if (!a) return;
      r.selectNodeContents(a);
      a.contains(this) && r.setEndBefore(this);
      const t = clip(("" + r).trim());
      N.clipboard ? N.clipboard.writeText(t).catch(fallback) : fallback();
      record(this, "copy_output", t);
      this.#say("Copied");
    }

    static {
      // Rendering and asking for the stored state wait until a widget is near the viewport (a screen's height
      // away, inside scrolling boxes too): a long transcript costs little to attach and makes no burst of requests.
      visible = new IntersectionObserver(entries => {
        for (const e of entries) e.isIntersecting && (visible.unobserve(e.target), e.target.#render(1));
      }, { rootMargin: "100%", scrollMargin: "100%" });
      // An idle widget is a tab stop: focus renders it and goes on into it, to the first element that takes it
      // (from below: the last; hidden ones and containers do not), so the keyboard never skips one.
      on(D, "focusin", e => {
        const w = e.composedPath()[0], from = e.relatedTarget;
        if (!(#s in w) || w.#l != null) return;
        w.#render(1);
        const b = [...all(w.#s, "*")];
        (from && w.compareDocumentPosition(from) & 4 ? b.reverse() : b).some(b => (b.focus(), w.#s.activeElement));
      }, true);
      // relabel(language): the widgets in that language, or (none given) the template and every widget
      relabel = l => {
        l || dress(BAR.content);
        for (const w of live) (!l || w.#l == l) && dress(w.#s, w.#l);
      };
      settle = (event, result) => {
        const w = owners.get(event.id), ok = result.status != "rejected";
        if (!owners.delete(event.id)) return; // made on an earlier page
        ok || w.#e?.id != event.id || (w.#show(null, null, 1), w.#say("Feedback not sent"));
        emit(w, ok ? "delivered" : "error", { event, result });
      };
    }
  }
  // token: the message's token from the server; variant: "thumbs" (default), "rating" or "both"; theme: "light",
  // "dark", or "" to follow prefers-color-scheme.
  for (const [name, value] of [["token", ""], ["variant", "thumbs"], ["theme", ""]]) {
    Object.defineProperty(FeedbackWidgetElement.prototype, name, {
      get() { return this.getAttribute(name) || value; }, set(v) { this.setAttribute(name, v); },
    });
  }

  W.FeedbackWidgetElement = FeedbackWidgetElement;
  W.feedbackBridge = {
    /** Change settings: endpoint, labels ({English text or reason code: label}), attach, tokenAttribute, prompt,
     * input, variant (of auto-attached widgets), retry and retryMax (the backoff's first and longest delay, ms). */
    configure(s) {
      Object.assign(cfg, s);
      s.labels && relabel();
      (s.attach || s.tokenAttribute) && attach();
      return cfg;
    },
    /** Send what is queued now, without waiting out a retry delay; resolves when the sender is idle. */
    flush,
  };
  FeedbackWidgetElement.define();
  attach();
  pump();
})();
