/*
 * Clarion's service worker: shows the web push notifications Clarion sends
 * and opens their link when one is clicked.
 *
 * The bell registers it (the "Notify me on this device" control). Clarion
 * serves it at /clarion-sw.js with `Service-Worker-Allowed: /`, so its scope
 * covers the whole site; a page on another origin serves a copy of this file
 * from its own origin (a service worker must be same-origin with the page)
 * and names it in the bell's `serviceWorker` option.
 *
 * A push message's data is the JSON {"title", "body", "url", "delivery_id"}
 * (the browser has already decrypted it). It has no fetch handler: it never
 * sits between the page and the network.
 */

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function readMessage(data) {
  if (!data) return {};
  try {
    const message = data.json();
    return message && typeof message === "object" ? message : {};
  } catch (error) {
    return { body: data.text() };
  }
}

// Only http(s) links, resolved against the site: a pushed `javascript:` URL opens nothing.
function safeUrl(raw) {
  if (typeof raw !== "string" || !raw) return null;
  try {
    const url = new URL(raw, self.registration.scope);
    return url.protocol === "https:" || url.protocol === "http:" ? url : null;
  } catch (error) {
    return null;
  }
}

self.addEventListener("push", (event) => {
  const message = readMessage(event.data);
  const title = typeof message.title === "string" && message.title ? message.title : "New notification";
  const options = {
    body: typeof message.body === "string" ? message.body : "",
    data: { url: message.url || "", delivery_id: message.delivery_id ?? null },
  };
  // One notification per delivery: a message sent twice (at-least-once) replaces itself.
  if (message.delivery_id !== undefined && message.delivery_id !== null) {
    options.tag = `clarion-${message.delivery_id}`;
  }
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = safeUrl(event.notification.data && event.notification.data.url);
  const target = url ? url.href : self.registration.scope;
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const open = windows.find((client) => client.url === target);
      if (open && "focus" in open) return open.focus();
      if (self.clients.openWindow) return self.clients.openWindow(target);
      return undefined;
    })(),
  );
});
