/*
 * Clarion bell — a dependency-free notification bell for any page.
 *
 *   <div id="bell"></div>
 *   <script type="module">
 *     import { mountBell } from "https://clarion.example.com/static/clarion/bell.js";
 *     mountBell(document.getElementById("bell"), {
 *       server: "https://clarion.example.com",        // where Clarion runs
 *       token: "<recipient token from POST /api/v1/recipients/{id}/token>",
 *       getToken: async () => (await fetch("/my-app/clarion-token")).text(),  // optional: renew on expiry
 *       serviceWorker: "/clarion-sw.js",  // optional: see "Web push" below
 *     });
 *   </script>
 *
 * The database is the truth and the socket a fast hint: the list comes from
 * the inbox API; live frames carry `previous_id`, and on any gap, reconnect or
 * doubt the bell asks the server to `resume` after the newest id it holds
 * without a gap. Items are de-duplicated by id, so nothing shows twice.
 *
 * Web push: when the browser has the Push API and Clarion serves a VAPID key
 * (GET /api/v1/inbox/web-push-key), the panel offers "Notify me on this
 * device". It registers Clarion's service worker (clarion-sw.js), subscribes
 * with that key and registers the subscription as the recipient (PUT
 * /api/v1/inbox/web-push-subscriptions). A service worker must come from the
 * page's own origin: when Clarion is on the page's origin the bell uses its
 * /clarion-sw.js; elsewhere serve a copy of static/clarion/clarion-sw.js from
 * your site and pass its URL as `serviceWorker` (without one, no opt-in is
 * shown). `webPush: false` turns the control off.
 */

const STYLE = `
.clarion-bell{position:relative;display:inline-block;font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1f2937}
.clarion-bell__button{position:relative;background:none;border:0;cursor:pointer;padding:6px;border-radius:50%;color:inherit}
.clarion-bell__button:hover,.clarion-bell__button:focus-visible{background:#f3f4f6;outline:none}
.clarion-bell__icon{width:24px;height:24px;display:block}
.clarion-bell__badge{position:absolute;top:0;right:0;min-width:18px;height:18px;padding:0 5px;border-radius:9px;background:#dc2626;color:#fff;font-size:11px;font-weight:600;line-height:18px;text-align:center;box-sizing:border-box}
.clarion-bell__badge[hidden]{display:none}
.clarion-bell__panel{position:absolute;right:0;top:calc(100% + 6px);width:360px;max-width:90vw;background:#fff;border:1px solid #e5e7eb;border-radius:10px;box-shadow:0 12px 32px rgba(0,0,0,.14);z-index:1000;overflow:hidden}
.clarion-bell__panel[hidden]{display:none}
.clarion-bell__head{display:flex;align-items:center;justify-content:space-between;padding:10px 14px;border-bottom:1px solid #f0f0f0;font-weight:600}
.clarion-bell__readall{background:none;border:0;color:#2563eb;cursor:pointer;font:inherit;font-weight:500;padding:0}
.clarion-bell__readall:disabled{color:#9ca3af;cursor:default}
.clarion-bell__list{list-style:none;margin:0;padding:0;max-height:420px;overflow-y:auto}
.clarion-bell__item{display:flex;gap:10px;padding:10px 14px;border-bottom:1px solid #f5f5f5;cursor:pointer}
.clarion-bell__item:hover{background:#f9fafb}
.clarion-bell__item--unread{background:#eff6ff}
.clarion-bell__item--unread:hover{background:#e0edff}
.clarion-bell__dot{flex:none;width:8px;height:8px;border-radius:4px;margin-top:6px;background:transparent}
.clarion-bell__item--unread .clarion-bell__dot{background:#2563eb}
.clarion-bell__title{font-weight:600}
.clarion-bell__body{color:#4b5563;overflow-wrap:anywhere}
.clarion-bell__time{color:#9ca3af;font-size:12px}
.clarion-bell__empty,.clarion-bell__status{padding:18px 14px;color:#6b7280;text-align:center}
.clarion-bell__status{padding:6px 14px;font-size:12px}
.clarion-bell__status[hidden]{display:none}
.clarion-bell__push{display:flex;align-items:center;flex-wrap:wrap;gap:8px;padding:8px 14px;border-top:1px solid #f0f0f0;font-size:13px}
.clarion-bell__push[hidden],.clarion-bell__pushbutton[hidden]{display:none}
.clarion-bell__pushbutton{background:none;border:1px solid #d1d5db;border-radius:6px;padding:4px 10px;cursor:pointer;font:inherit;color:inherit}
.clarion-bell__pushbutton:disabled{color:#9ca3af;cursor:default}
.clarion-bell__pushstatus{color:#6b7280}
`;

const BELL_SVG = '<svg class="clarion-bell__icon" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M18 8a6 6 0 0 0-12 0c0 7-3 9-3 9h18s-3-2-3-9"/><path d="M13.73 21a2 2 0 0 1-3.46 0"/></svg>';

const PAGE_SIZE = 20;
const PING_MS = 25000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30000;
const GAP_GRACE_MS = 300;
const PUSH_SUBSCRIPTIONS = "/api/v1/inbox/web-push-subscriptions";
const PUSH_STATES = {
  off: ["Notify me on this device", ""],
  working: ["Notify me on this device", "Turning on…"],
  on: ["Stop notifying this device", "Notifications are on for this device."],
  blocked: [null, "Notifications are blocked for this site in the browser's settings."],
  error: ["Notify me on this device", "Could not turn on notifications on this device."],
};

function injectStyle() {
  if (document.getElementById("clarion-bell-style")) return;
  const style = document.createElement("style");
  style.id = "clarion-bell-style";
  style.textContent = STYLE;
  document.head.appendChild(style);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text; // never innerHTML: content is untrusted
  return node;
}

// Titles and bodies arrive as HTML with every variable escaped by the server;
// only simple inline markup from the template itself is kept.
const ALLOWED_TAGS = new Set(["B", "STRONG", "I", "EM", "U", "BR", "A", "SPAN"]);

export function safeFragment(markup) {
  const parsed = new DOMParser().parseFromString(`<body>${markup || ""}</body>`, "text/html");
  const fragment = document.createDocumentFragment();
  const copy = (source, target) => {
    for (const node of source.childNodes) {
      if (node.nodeType === Node.TEXT_NODE) {
        target.appendChild(document.createTextNode(node.textContent));
      } else if (node.nodeType === Node.ELEMENT_NODE) {
        if (!ALLOWED_TAGS.has(node.tagName)) { copy(node, target); continue; }
        const clean = document.createElement(node.tagName.toLowerCase());
        const href = node.getAttribute("href");
        if (node.tagName === "A" && href && /^(https?:\/\/|\/)/.test(href)) {
          clean.setAttribute("href", href);
          clean.setAttribute("rel", "noopener noreferrer");
        }
        copy(node, clean);
        target.appendChild(clean);
      }
    }
  };
  copy(parsed.body, fragment);
  return fragment;
}

const UNITS = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60]];

export function relativeTime(iso, now = Date.now(), locale = undefined) {
  const seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  const format = new Intl.RelativeTimeFormat(locale, { numeric: "auto" });
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size) return format.format(Math.round(seconds / size), unit);
  }
  return Math.abs(seconds) < 10 ? format.format(0, "second") : format.format(seconds, "second");
}

// An applicationServerKey from its base64url text (what Clarion serves).
export function base64UrlToBytes(text) {
  const base64 = (text + "===".slice((text.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

function sameBytes(buffer, bytes) {
  if (!buffer) return false;
  const held = new Uint8Array(buffer);
  return held.length === bytes.length && held.every((value, i) => value === bytes[i]);
}

// The registration once its worker is active (PushManager.subscribe needs one).
function activated(registration) {
  if (registration.active) return Promise.resolve(registration);
  const worker = registration.installing || registration.waiting;
  return new Promise((resolve, reject) => {
    const check = () => {
      if (worker.state === "activated") resolve(registration);
      else if (worker.state === "redundant") reject(new Error("the service worker did not install"));
    };
    worker.addEventListener("statechange", check);
    check();
  });
}

export class ClarionBell {
  constructor(root, options) {
    this.root = root;
    this.server = (options.server || window.location.origin).replace(/\/$/, "");
    this.token = options.token;
    this.getToken = options.getToken || null;
    this.locale = options.locale;
    this.items = new Map();       // id -> item
    this.lastId = null;           // newest id held with no gap before it
    this.pending = new Map();     // previous_id -> id, for items beyond lastId
    this.unread = 0;
    this.nextCursor = null;
    this.loadingMore = false;
    this.socket = null;
    this.resuming = false;
    this.backoff = BACKOFF_MIN_MS;
    this.closedByUs = false;
    this.serviceWorker = this.serviceWorkerUrl(options);
    this.serviceWorkerScope = options.serviceWorkerScope
      || (this.serviceWorker ? new URL("./", this.serviceWorker).href : null);
    this.vapidKey = null;
    this.pushState = "off";
    this.render();
  }

  serviceWorkerUrl(options) {
    if (options.webPush === false) return null;
    if (options.serviceWorker) return new URL(options.serviceWorker, window.location.href).href;
    // Only a same-origin worker can be registered: Clarion's own, when it serves this page.
    return new URL(this.server).origin === window.location.origin ? `${this.server}/clarion-sw.js` : null;
  }

  // ---- lifecycle ----------------------------------------------------------
  async start() {
    await this.loadFirstPage();
    this.connect();
    this.clock = setInterval(() => this.renderTimes(), 30000);
    this.pushReady = this.setupPush();
    return this;
  }

  stop() {
    this.closedByUs = true;
    clearInterval(this.clock);
    clearInterval(this.pinger);
    clearTimeout(this.reconnectTimer);
    if (this.socket) this.socket.close();
  }

  // ---- REST ---------------------------------------------------------------
  async api(path, init = {}) {
    for (let attempt = 0; attempt < 2; attempt++) {
      const response = await fetch(this.server + path, {
        ...init,
        headers: { ...(init.headers || {}), Authorization: `Recipient ${this.token}` },
      });
      if (response.status === 401 && this.getToken && attempt === 0) {
        this.token = await this.getToken();
        continue;
      }
      if (!response.ok) throw new Error(`Clarion ${path}: ${response.status}`);
      return response.status === 204 ? null : response.json();
    }
  }

  async loadFirstPage() {
    try {
      const page = await this.api(`/api/v1/inbox?limit=${PAGE_SIZE}`);
      page.results.forEach((item) => this.items.set(item.id, item));
      this.nextCursor = page.next_cursor;
      // Everything up to the newest listed item is known; the socket resumes after it.
      this.lastId = page.results.length ? page.results[0].id : null;
      const count = await this.api("/api/v1/inbox/unread-count");
      this.unread = count.count;
      this.setStatus("");
    } catch (error) {
      this.setStatus("Notifications are unavailable right now.");
    }
    this.renderList();
    this.renderBadge();
  }

  async loadMore() {
    if (!this.nextCursor || this.loadingMore) return;
    this.loadingMore = true;
    try {
      const page = await this.api(`/api/v1/inbox?limit=${PAGE_SIZE}&cursor=${encodeURIComponent(this.nextCursor)}`);
      page.results.forEach((item) => this.items.set(item.id, item));
      this.nextCursor = page.next_cursor;
      this.renderList();
    } finally {
      this.loadingMore = false;
    }
  }

  // ---- websocket ----------------------------------------------------------
  connect() {
    const url = this.server.replace(/^http/, "ws") + `/ws/inbox/?token=${encodeURIComponent(this.token)}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    this.resuming = false;
    socket.addEventListener("open", () => {
      this.backoff = BACKOFF_MIN_MS;
      this.setStatus("");
      this.resume();
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.send({ type: "ping" }), PING_MS);
    });
    socket.addEventListener("message", (event) => this.onFrame(JSON.parse(event.data)));
    socket.addEventListener("close", (event) => this.onClose(event));
  }

  async onClose(event) {
    clearInterval(this.pinger);
    if (this.closedByUs) return;
    if (event.code === 4401) {
      if (!this.getToken) {
        this.setStatus("Signed out of notifications.");
        return;
      }
      try {
        this.token = await this.getToken();
      } catch (error) {
        this.setStatus("Signed out of notifications.");
        return;
      }
    } else {
      this.setStatus("Reconnecting…");
    }
    const delay = Math.min(this.backoff, BACKOFF_MAX_MS) * (0.5 + Math.random());
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  send(frame) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  resume() {
    if (this.resuming) return;
    this.resuming = this.send({ type: "resume", after: this.lastId });
  }

  resumeSoon() {
    if (this.resumeTimer) return;
    this.resumeTimer = setTimeout(() => {
      this.resumeTimer = null;
      if (this.pending.size) this.resume();
    }, GAP_GRACE_MS);
  }

  onFrame(frame) {
    if (frame.type === "notification") {
      this.unread = frame.unread_count;
      const item = frame.notification;
      if (!this.items.has(item.id)) {
        this.items.set(item.id, item);
        this.pending.set(frame.previous_id ?? null, item.id);
        this.advance();
        // A frame arrived whose predecessor we do not hold: one went missing,
        // or two fan-outs committed out of order. Give stragglers a moment.
        if (this.lastId !== null && Number(item.id) > Number(this.lastId)) this.resumeSoon();
        this.renderList();
        this.root.dispatchEvent(new CustomEvent("clarion:notification", { detail: item }));
      }
      this.renderBadge();
    } else if (frame.type === "unread_count") {
      this.unread = frame.count;
      this.renderBadge();
      this.refreshReadState();
    } else if (frame.type === "resumed") {
      // The server has now sent everything up to last_id: hold that as the
      // gap-free point, even if a live frame's previous_id was computed
      // before its predecessor committed and so never links up.
      if (frame.last_id && (this.lastId === null || Number(frame.last_id) > Number(this.lastId))) {
        this.lastId = frame.last_id;
      }
      for (const [previous, id] of this.pending) {
        if (Number(id) <= Number(this.lastId)) this.pending.delete(previous);
      }
      this.advance();
      this.resuming = false;
      this.unread = frame.unread_count;
      this.renderBadge();
    } else if (frame.type === "error" && frame.code === "invalid_cursor") {
      // Our position is unknown to the server (e.g. erased): start over from the list.
      this.items.clear();
      this.pending.clear();
      this.resuming = false;
      this.loadFirstPage().then(() => this.resume());
    }
  }

  advance() {
    while (this.pending.has(this.lastId)) {
      const next = this.pending.get(this.lastId);
      this.pending.delete(this.lastId);
      this.lastId = next;
    }
  }

  // ---- reading ------------------------------------------------------------
  async markRead(id) {
    const item = this.items.get(id);
    if (!item || item.read_at) return;
    item.read_at = new Date().toISOString();
    this.unread = Math.max(0, this.unread - 1);
    this.renderList();
    this.renderBadge();
    if (!this.send({ type: "read", id })) await this.api(`/api/v1/inbox/${id}/read`, { method: "POST" });
  }

  async markAllRead() {
    const now = new Date().toISOString();
    this.items.forEach((item) => { if (!item.read_at) item.read_at = now; });
    this.unread = 0;
    this.renderList();
    this.renderBadge();
    if (!this.send({ type: "read_all" })) await this.api("/api/v1/inbox/read-all", { method: "POST" });
  }

  async refreshReadState() {
    // Another tab or device read something: when everything is read, reflect it at once.
    if (this.unread === 0) {
      const now = new Date().toISOString();
      let changed = false;
      this.items.forEach((item) => { if (!item.read_at) { item.read_at = now; changed = true; } });
      if (changed) this.renderList();
      return;
    }
    try {
      const page = await this.api(`/api/v1/inbox?limit=${Math.max(PAGE_SIZE, Math.min(this.items.size, 100))}`);
      page.results.forEach((fresh) => {
        const held = this.items.get(fresh.id);
        if (held) held.read_at = fresh.read_at;
      });
      this.renderList();
    } catch (error) { /* the next frame or reconnect repairs it */ }
  }

  // ---- web push -----------------------------------------------------------
  pushSupported() {
    return Boolean(this.serviceWorker) && window.isSecureContext && "serviceWorker" in navigator
      && "PushManager" in window && "Notification" in window;
  }

  // Show the opt-in only where it can work: the Push API, and a key served.
  async setupPush() {
    if (!this.pushSupported()) return;
    try {
      this.vapidKey = (await this.api("/api/v1/inbox/web-push-key")).public_key;
    } catch (error) {
      return; // web push is not configured on this Clarion
    }
    if (!this.vapidKey) return;
    this.pushBar.hidden = false;
    if (Notification.permission === "denied") return this.setPushState("blocked");
    try {
      const subscription = await this.browserSubscription();
      if (subscription && Notification.permission === "granted") {
        // On only if this recipient holds this browser's subscription (not another account's).
        const held = await this.api(PUSH_SUBSCRIPTIONS);
        if (held.results.some((s) => s.endpoint === subscription.endpoint)) return this.setPushState("on");
      }
    } catch (error) { /* shown as off: the button registers again */ }
    this.setPushState("off");
  }

  async browserSubscription() {
    const registration = await navigator.serviceWorker.getRegistration(this.serviceWorkerScope);
    return registration ? registration.pushManager.getSubscription() : null;
  }

  async enablePush() {
    this.setPushState("working");
    try {
      // Asked first, still inside the click: some browsers prompt only from a user gesture.
      const permission = Notification.permission === "granted"
        ? "granted" : await Notification.requestPermission();
      if (permission !== "granted") return this.setPushState(permission === "denied" ? "blocked" : "off");
      const registration = await activated(
        await navigator.serviceWorker.register(this.serviceWorker, { scope: this.serviceWorkerScope }),
      );
      const key = base64UrlToBytes(this.vapidKey);
      let subscription = await registration.pushManager.getSubscription();
      if (subscription && !sameBytes(subscription.options.applicationServerKey, key)) {
        await subscription.unsubscribe(); // made with a key Clarion no longer signs with
        subscription = null;
      }
      if (!subscription) {
        subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
      }
      const { endpoint, keys } = subscription.toJSON();
      await this.api(PUSH_SUBSCRIPTIONS, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ endpoint, keys, user_agent: navigator.userAgent.slice(0, 255) }),
      });
      this.setPushState("on");
      this.root.dispatchEvent(new CustomEvent("clarion:push-subscribed", { detail: { endpoint } }));
    } catch (error) {
      this.setPushState(Notification.permission === "denied" ? "blocked" : "error");
    }
  }

  async disablePush() {
    this.setPushState("working");
    try {
      const subscription = await this.browserSubscription();
      if (subscription) {
        await this.api(PUSH_SUBSCRIPTIONS, {
          method: "DELETE",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ endpoint: subscription.endpoint }),
        });
        await subscription.unsubscribe();
      }
      this.setPushState("off");
    } catch (error) {
      this.setPushState("on");
    }
  }

  setPushState(state) {
    const [label, text] = PUSH_STATES[state];
    this.pushState = state;
    this.pushButton.hidden = label === null;
    if (label !== null) this.pushButton.textContent = label;
    this.pushButton.disabled = state === "working";
    this.pushStatus.textContent = text;
    this.pushBar.dataset.state = state;
  }

  // ---- rendering ----------------------------------------------------------
  render() {
    injectStyle();
    this.root.classList.add("clarion-bell");
    this.root.textContent = "";
    this.button = el("button", "clarion-bell__button");
    this.button.type = "button";
    this.button.setAttribute("aria-haspopup", "true");
    this.button.setAttribute("aria-expanded", "false");
    this.button.setAttribute("aria-label", "Notifications");
    this.button.innerHTML = BELL_SVG; // static, trusted markup
    this.badge = el("span", "clarion-bell__badge");
    this.badge.hidden = true;
    this.badge.setAttribute("data-testid", "clarion-badge");
    this.button.appendChild(this.badge);
    this.panel = el("div", "clarion-bell__panel");
    this.panel.hidden = true;
    this.panel.setAttribute("role", "dialog");
    this.panel.setAttribute("aria-label", "Notifications");
    const head = el("div", "clarion-bell__head", "Notifications");
    this.readAll = el("button", "clarion-bell__readall", "Mark all as read");
    this.readAll.type = "button";
    head.appendChild(this.readAll);
    this.status = el("div", "clarion-bell__status");
    this.status.hidden = true;
    this.list = el("ul", "clarion-bell__list");
    this.pushBar = el("div", "clarion-bell__push");
    this.pushBar.hidden = true; // until setupPush() finds the Push API and a key
    this.pushBar.setAttribute("data-testid", "clarion-push");
    this.pushButton = el("button", "clarion-bell__pushbutton", PUSH_STATES.off[0]);
    this.pushButton.type = "button";
    this.pushButton.setAttribute("data-testid", "clarion-push-optin");
    this.pushStatus = el("span", "clarion-bell__pushstatus");
    this.pushStatus.setAttribute("role", "status");
    this.pushBar.append(this.pushButton, this.pushStatus);
    this.panel.append(head, this.status, this.list, this.pushBar);
    this.root.append(this.button, this.panel);

    this.button.addEventListener("click", () => this.toggle());
    this.readAll.addEventListener("click", () => this.markAllRead());
    this.pushButton.addEventListener("click", () => (this.pushState === "on" ? this.disablePush() : this.enablePush()));
    this.list.addEventListener("scroll", () => {
      if (this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 60) this.loadMore();
    });
    this.list.addEventListener("click", (event) => {
      const row = event.target.closest(".clarion-bell__item");
      if (!row) return;
      const item = this.items.get(row.dataset.id);
      this.markRead(row.dataset.id);
      if (item && item.url && /^(https?:\/\/|\/)/.test(item.url)) window.location.assign(item.url);
    });
    document.addEventListener("keydown", (event) => { if (event.key === "Escape") this.toggle(false); });
    document.addEventListener("click", (event) => { if (!this.root.contains(event.target)) this.toggle(false); });
  }

  toggle(open = this.panel.hidden) {
    this.panel.hidden = !open;
    this.button.setAttribute("aria-expanded", String(open));
    if (open) this.renderTimes();
  }

  setStatus(text) {
    this.status.textContent = text;
    this.status.hidden = !text;
  }

  renderBadge() {
    this.badge.textContent = this.unread > 99 ? "99+" : String(this.unread);
    this.badge.hidden = this.unread <= 0;
    this.readAll.disabled = this.unread <= 0;
    this.button.setAttribute("aria-label", `Notifications, ${this.unread} unread`);
  }

  renderList() {
    const sorted = [...this.items.values()]
      .filter((item) => !item.archived_at)
      .sort((a, b) => Number(b.id) - Number(a.id));
    this.list.textContent = "";
    if (!sorted.length) {
      this.list.appendChild(el("li", "clarion-bell__empty", "You're all caught up."));
      return;
    }
    for (const item of sorted) {
      const row = el("li", "clarion-bell__item" + (item.read_at ? "" : " clarion-bell__item--unread"));
      row.dataset.id = item.id;
      row.setAttribute("data-testid", "clarion-item");
      const text = el("div");
      const title = el("div", "clarion-bell__title");
      title.appendChild(safeFragment(item.title));
      text.append(title);
      if (item.body) {
        const body = el("div", "clarion-bell__body");
        body.appendChild(safeFragment(item.body));
        text.append(body);
      }
      const time = el("div", "clarion-bell__time", relativeTime(item.created_at, Date.now(), this.locale));
      time.dataset.created = item.created_at;
      text.append(time);
      row.append(el("span", "clarion-bell__dot"), text);
      this.list.appendChild(row);
    }
  }

  renderTimes() {
    this.list.querySelectorAll(".clarion-bell__time").forEach((node) => {
      node.textContent = relativeTime(node.dataset.created, Date.now(), this.locale);
    });
  }
}

export function mountBell(root, options) {
  const bell = new ClarionBell(root, options);
  bell.ready = bell.start();
  return bell;
}
