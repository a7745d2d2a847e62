// facepipe gallery: every page is this one script over the JSON API (/api/...), the same API a script uses.
// No inline script or style (the Content-Security-Policy forbids both); text goes in with textContent only.

const view = document.getElementById("view");
const banner = document.getElementById("banner");
const ACTIVE_MINUTES = 10; // a device whose newest face is this recent counts as active
let session = null;

class NeedLogin extends Error {}
class ApiFailure extends Error {
  constructor(status, error, detail) {
    super(detail ? `${error}: ${detail}` : error);
    this.status = status;
  }
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function showBanner(text) {
  banner.textContent = text;
  banner.hidden = false;
}

function storeBanner(detail) {
  showBanner(`The face store is not reachable right now (${detail}). What is stored is safe; this page works again once the store is back.`);
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) throw new NeedLogin();
  if (response.status === 503) {
    storeBanner(body.detail || body.error || "503");
    throw new ApiFailure(503, body.error || "unavailable", body.detail);
  }
  if (!response.ok) throw new ApiFailure(response.status, body.error || response.statusText, body.detail);
  return body;
}

function localTime(iso) {
  return new Date(iso).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3,
  });
}

function ago(iso) {
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

function timeElement(iso, relative = false) {
  return el("time", { datetime: iso, title: `${iso} (UTC)`, text: relative ? ago(iso) : localTime(iso) });
}

// Whether a face (as listed) is among what an `erased` event says went: one face, or a device's faces in a range.
function erasedBy(event, face) {
  if (face.device !== event.device) return false;
  if (event.face !== undefined) return face.id === event.face;
  if (event.camera && face.camera !== event.camera) return false;
  const moment = new Date(face.captured_at).getTime();
  return (!event.since || moment >= new Date(event.since).getTime()) && (!event.until || moment < new Date(event.until).getTime());
}

function liveStream(device, handlers) {
  const indicator = document.getElementById("live");
  const source = new EventSource(device ? `/api/events?device=${encodeURIComponent(device)}` : "/api/events");
  source.addEventListener("hello", (event) => {
    const on = JSON.parse(event.data).live;
    indicator.dataset.state = on ? "on" : "off";
    indicator.title = on ? "new faces appear as they are stored" : "live updates are off on this gallery";
  });
  for (const [name, handler] of Object.entries(handlers)) source.addEventListener(name, (event) => handler(JSON.parse(event.data)));
  source.addEventListener("error", () => { indicator.dataset.state = "off"; });
  return source;
}

// --- pages ----------------------------------------------------------------------------------------

function statusText(device) {
  const status = device.status;
  if (!status) return device.online === null ? "" : "no status received";
  const parts = [];
  for (const [camera, capture] of Object.entries(status.cameras)) parts.push(`${camera}: ${capture.source}, ${capture.fps.toFixed(1)} fps`);
  for (const [component, info] of Object.entries(status.components)) {
    if (info.state !== "online") parts.push(`${component} ${info.state} since ${ago(info.last_seen)}`);
  }
  return parts.join(" · ") || "all components online";
}

async function devicesPage() {
  document.title = "Devices · facepipe gallery";
  const data = await api("/api/devices");
  const rows = new Map();
  const body = el("tbody");
  const table = el("table", { "data-testid": "devices" },
    el("thead", {}, el("tr", {}, el("th", { text: "" }), el("th", { text: "Device" }), el("th", { text: `Faces today (${data.day}, UTC)` }),
      el("th", { text: "Last face" }), el("th", { text: "Last seen" }), el("th", { text: "Status" }))),
    body);

  function row(device) {
    const cells = {
      state: el("span", { class: "state" }),
      count: el("td", { class: "num", "data-testid": "faces-today" }),
      thumb: el("td"),
      seen: el("td", { "data-testid": "last-seen" }),
      status: el("td", { class: "muted", "data-testid": "status" }),
    };
    const tr = el("tr", { "data-device": device.device },
      el("td", {}, cells.state), el("td", {}, el("a", { href: `/devices/${encodeURIComponent(device.device)}`, text: device.device })),
      cells.count, cells.thumb, cells.seen, cells.status);
    const entry = { tr, cells, device };
    rows.set(device.device, entry);
    render(entry);
    return tr;
  }

  function render({ tr, cells, device }) {
    const today = device.faces_today_complete === false ? `${device.faces_today}+` : String(device.faces_today);
    cells.count.replaceChildren(device.faces_today ? el("a", { href: `/devices/${encodeURIComponent(device.device)}?day=${data.day}`, text: today }) : today);
    cells.thumb.replaceChildren(device.newest ? el("a", { href: device.newest.page }, el("img", { src: device.newest.thumbnail, alt: "newest face" })) : "");
    cells.seen.replaceChildren(device.last_seen ? timeElement(device.last_seen, true) : "never");
    cells.status.textContent = statusText(device);
    // Alive: what the device's own status says (its forwarder online); without status updates, a face in the last minutes.
    const byFace = device.last_seen && Date.now() - new Date(device.last_seen).getTime() < ACTIVE_MINUTES * 60000;
    const active = device.online === null || device.online === undefined ? byFace : device.online;
    tr.dataset.online = active ? "true" : "false";
    cells.state.dataset.active = active ? "true" : "false";
    cells.state.title = device.online === null || device.online === undefined
      ? (active ? `a face in the last ${ACTIVE_MINUTES} minutes` : `no face in the last ${ACTIVE_MINUTES} minutes`)
      : (active ? "online: its forwarder says so" : "offline, or not heard from");
  }

  function entryOf(name) {
    if (!rows.has(name)) {
      body.append(row({ device: name, faces_today: 0, faces_today_complete: true, last_seen: null, newest: null, online: data.status_known ? false : null, status: null }));
      empty.hidden = true;
    }
    return rows.get(name);
  }

  const empty = el("p", { class: "muted", text: "No device has sent faces or its status yet. They appear here as they do.", hidden: data.devices.length > 0 });
  for (const device of data.devices) body.append(row(device));
  view.replaceChildren(el("h1", { text: "Devices" }), empty, table);
  liveStream(null, {
    face: (face) => {
      const entry = entryOf(face.device);
      if (face.captured_at.slice(0, 10) === data.day) entry.device.faces_today += 1;
      if (!entry.device.last_seen || face.captured_at > entry.device.last_seen) {
        entry.device.last_seen = face.captured_at;
        entry.device.newest = face;
      }
      render(entry);
    },
    status: (update) => {
      const entry = entryOf(update.device);
      entry.device.status = update.status;
      entry.device.online = update.status.online;
      render(entry);
    },
    // Faces were deleted: today's count and the newest face come from the store again.
    erased: (event) => {
      const entry = rows.get(event.device);
      if (!entry) return;
      api("/api/devices").then((now) => {
        const fresh = now.devices.find((device) => device.device === event.device);
        Object.assign(entry.device, { faces_today: 0, faces_today_complete: true, last_seen: null, newest: null }, fresh || {});
        render(entry);
      }).catch(() => {}); // a store that is down says so in the banner; the row stays as it was
    },
  });
}

function faceCard(face, fresh = false) {
  const card = el("a", { class: fresh ? "card new" : "card", href: face.page, "data-testid": "face", "data-id": face.id, "data-captured": face.captured_at },
    el("img", { src: face.thumbnail, alt: `face from ${face.camera || "unknown camera"}`, loading: "lazy" }),
    el("div", { class: "caption" }, timeElement(face.captured_at), el("span", { class: "muted", text: face.camera || "" })));
  card.face = face;
  return card;
}

function longDay(day) {
  return new Date(`${day}T00:00:00Z`).toLocaleDateString(undefined, { weekday: "long", year: "numeric", month: "long", day: "numeric", timeZone: "UTC" });
}

// The device page's grid: faces newest first under a heading per UTC day (a link to that day alone).
class DayGrid {
  constructor(linkOf) {
    this.node = el("div", { class: "grid", "data-testid": "faces" });
    this.linkOf = linkOf;
    this.clear();
  }

  clear() {
    this.node.replaceChildren();
    this.first = null; // the heading of the newest day shown
    this.lastDay = null;
  }

  heading(day) {
    return el("h2", { class: "day", "data-testid": "day-heading", "data-day": day }, el("a", { href: this.linkOf(day), text: `${longDay(day)} (UTC)` }));
  }

  append(face) {
    const day = face.captured_at.slice(0, 10);
    if (day !== this.lastDay) {
      const heading = this.heading(day);
      this.node.append(heading);
      this.first ??= heading;
      this.lastDay = day;
    }
    this.node.append(faceCard(face));
  }

  prepend(face) {
    const day = face.captured_at.slice(0, 10);
    if (!this.first || this.first.dataset.day !== day) {
      this.first = this.heading(day);
      this.node.prepend(this.first);
      this.lastDay ??= day;
    }
    this.first.after(faceCard(face, true));
  }

  has(face) {
    return this.node.querySelector(`[data-id="${CSS.escape(face.id)}"]`) !== null;
  }

  // Drops the cards of an `erased` event, and the headings of days left empty; how many cards went.
  drop(event) {
    const gone = [...this.node.querySelectorAll("[data-testid=face]")].filter((card) => erasedBy(event, card.face));
    for (const card of gone) card.remove();
    for (const heading of this.node.querySelectorAll("[data-testid=day-heading]")) {
      const next = heading.nextElementSibling;
      if (!next || next.dataset.testid === "day-heading") heading.remove();
    }
    this.first = this.node.querySelector("[data-testid=day-heading]");
    if (!this.first) this.lastDay = null;
    return gone.length;
  }
}

function toLocalInput(iso) {
  if (!iso) return "";
  const moment = new Date(iso);
  return new Date(moment.getTime() - moment.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

// The admin's erase button for what the device page shows: a day, a time range, or (no filter) every face of the device.
function eraseButton(device, filters, onErased) {
  const camera = filters.camera ? ` from ${filters.camera}` : "";
  let what = "every face of this device";
  let testid = "erase-all";
  const query = new URLSearchParams();
  if (filters.day) {
    what = `all faces of ${filters.day}`;
    testid = "erase-day";
    query.set("day", filters.day);
  } else if (filters.since || filters.until) {
    what = `all faces from ${filters.since ? localTime(filters.since) : "the first"} until ${filters.until ? localTime(filters.until) : "now"}`;
    testid = "erase-range";
    if (filters.since) query.set("since", filters.since);
    if (filters.until) query.set("until", filters.until);
  } else {
    query.set("all", "true");
  }
  if (filters.camera) query.set("camera", filters.camera);
  return el("button", {
    class: "danger", type: "button", "data-testid": testid, text: `Delete ${what}${camera}`,
    onclick: async (event) => {
      const question = `Delete ${what}${camera} of ${device}? This cannot be undone.`;
      const sure = testid === "erase-all" ? prompt(`${question}\nType the device name to confirm.`) === device : confirm(question);
      if (!sure) return;
      event.target.disabled = true;
      const result = await api(`/api/devices/${encodeURIComponent(device)}/faces?${query}`, { method: "DELETE", headers: { "X-CSRF-Token": session.csrf } });
      showBanner(`Deleted ${result.deleted} faces of ${device}${filters.day ? ` on ${filters.day}` : ""}.`);
      onErased();
    },
  });
}

async function devicePage(device) {
  document.title = `${device} · facepipe gallery`;
  const params = new URLSearchParams(location.search);
  const filters = {};
  for (const name of ["day", "camera", "since", "until"]) if (params.get(name)) filters[name] = params.get(name);
  const days = await api(`/api/devices/${encodeURIComponent(device)}/days?limit=120`);

  const daySelect = el("select", { name: "day", "data-testid": "day" }, el("option", { value: "", text: "all days" }));
  for (const day of days.days) daySelect.append(el("option", { value: day, text: day, selected: day === filters.day }));
  const cameras = el("datalist", { id: "cameras" });
  const camera = el("input", { name: "camera", value: filters.camera || "", placeholder: "any", size: 10, list: "cameras" });
  const knownCameras = new Set();
  function knowCamera(id) {
    if (!id || knownCameras.has(id)) return;
    knownCameras.add(id);
    cameras.append(el("option", { value: id }));
  }
  const since = el("input", { type: "datetime-local", name: "since-local", value: toLocalInput(filters.since) });
  const until = el("input", { type: "datetime-local", name: "until-local", value: toLocalInput(filters.until) });
  const form = el("form", { class: "filters", "data-testid": "filters" },
    el("label", {}, "Day (UTC)", daySelect), el("label", {}, "Camera", camera, cameras), el("label", {}, "From", since), el("label", {}, "Until", until),
    el("button", { type: "submit", text: "Show" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (daySelect.value) next.set("day", daySelect.value);
    if (camera.value.trim()) next.set("camera", camera.value.trim());
    if (since.value && !daySelect.value) next.set("since", new Date(since.value).toISOString());
    if (until.value && !daySelect.value) next.set("until", new Date(until.value).toISOString());
    location.search = next.toString();
  });

  const grid = new DayGrid((day) => {
    const only = new URLSearchParams({ day });
    if (filters.camera) only.set("camera", filters.camera);
    return `?${only}`;
  });
  const more = el("button", { class: "more", type: "button", text: "Load more", "data-testid": "more", hidden: true });
  const count = el("span", { class: "muted", "data-testid": "shown" });
  const tools = el("div", { class: "toolbar" }, count, el("span", { class: "spacer" }));
  if (session.role === "admin") tools.append(eraseButton(device, filters, () => {
    grid.clear();
    shown = 0;
    cursor = null;
    more.hidden = true;
    counted();
  }));
  view.replaceChildren(el("h1", {}, el("a", { href: "/", text: "Devices" }), " / ", device), form, tools, grid.node, more);

  let cursor = null;
  let shown = 0;
  function counted() {
    count.textContent = `${shown} face${shown === 1 ? "" : "s"} shown${cursor ? ", newest first" : ""}`;
  }
  async function load() {
    const query = new URLSearchParams({ device, ...filters, limit: "60" });
    if (cursor) query.set("cursor", cursor);
    more.disabled = true;
    const page = await api(`/api/faces?${query}`);
    for (const face of page.faces) {
      grid.append(face);
      knowCamera(face.camera);
    }
    shown += page.faces.length;
    cursor = page.next;
    more.hidden = !cursor;
    more.disabled = false;
    counted();
  }
  more.addEventListener("click", () => load().catch(report));
  await load();

  const today = new Date().toISOString().slice(0, 10);
  const showsNewest = !filters.until && (!filters.day || filters.day === today);
  liveStream(device, {
    face: (face) => {
      if (!showsNewest || (filters.camera && face.camera !== filters.camera)) return;
      if (filters.since && face.captured_at < new Date(filters.since).toISOString()) return;
      if (grid.has(face)) return;
      grid.prepend(face);
      knowCamera(face.camera);
      shown += 1;
      counted();
    },
    erased: (event) => {
      shown -= grid.drop(event);
      counted();
    },
  });
}

async function facePage(faceId) {
  const face = await api(`/api/faces/${faceId.split("/").map(encodeURIComponent).join("/")}`);
  document.title = `${face.device} ${face.captured_at} · facepipe gallery`;
  const facts = [
    ["Captured", timeElement(face.captured_at)], ["Device", el("a", { href: `/devices/${encodeURIComponent(face.device)}`, text: face.device })],
    ["Camera", face.camera], ["Track", face.track], ["Score", face.score], ["Detector", face.detector],
    ["Bounding box", face.bbox ? `x ${face.bbox[0]}, y ${face.bbox[1]}, ${face.bbox[2]} × ${face.bbox[3]} px` : null],
    ["Frame / face", face.frame !== undefined ? `${face.frame} / ${face.face}` : null], ["Camera run / seq", face.boot ? `${face.boot} / ${face.seq}` : null],
    ["Size", `${face.size} bytes`], ["Stored", timeElement(face.stored_at)], ["Key", face.key],
  ];
  const list = el("dl", { "data-testid": "metadata" });
  for (const [name, value] of facts) {
    if (value === null || value === undefined) continue;
    list.append(el("dt", { text: name }), el("dd", {}, typeof value === "object" ? value : String(value)));
  }
  const actions = el("div", { class: "toolbar" }, el("a", { href: `${face.image}?download=1`, text: "Download PNG", "data-testid": "download" }));
  if (session.role === "admin") {
    actions.append(el("button", {
      class: "danger", type: "button", "data-testid": "erase-face", text: "Delete this face",
      onclick: async (event) => {
        if (!confirm("Delete this face? This cannot be undone.")) return;
        event.target.disabled = true;
        await api(face.image.replace(/\/image$/, ""), { method: "DELETE", headers: { "X-CSRF-Token": session.csrf } });
        location.assign(`/devices/${encodeURIComponent(face.device)}?deleted=1`);
      },
    }));
  }
  const image = el("img", { src: face.image, alt: "face crop", "data-testid": "image" });
  view.replaceChildren(
    el("h1", {}, el("a", { href: "/", text: "Devices" }), " / ", el("a", { href: `/devices/${encodeURIComponent(face.device)}`, text: face.device }), " / face"),
    el("div", { class: "face" }, image, el("div", {}, list, actions)));
  liveStream(face.device, {
    erased: (event) => {
      if (!erasedBy(event, face)) return;
      image.remove();
      actions.remove();
      showBanner("This face was deleted.");
    },
  });
}

function loginPage() {
  document.title = "Log in · facepipe gallery";
  const user = el("input", { name: "user", autocomplete: "username", required: true, autofocus: true });
  const password = el("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const error = el("p", { class: "error", "data-testid": "login-error" });
  const form = el("form", { class: "login panel", "data-testid": "login" }, el("h1", { text: "Log in" }),
    el("label", {}, "User", user), el("label", {}, "Password", password), el("button", { type: "submit", text: "Log in" }), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const response = await fetch("/api/login", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: user.value, password: password.value }),
    });
    if (response.ok) {
      location.assign(new URLSearchParams(location.search).get("next") || "/");
    } else {
      const body = await response.json().catch(() => ({}));
      error.textContent = body.error || `refused (${response.status})`;
    }
  });
  view.replaceChildren(form);
}

function report(failure) {
  if (failure instanceof NeedLogin) {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    return;
  }
  if (failure instanceof ApiFailure && failure.status === 503) {
    view.replaceChildren(el("p", { class: "muted", "data-testid": "unavailable", text: "Nothing to show while the store is unreachable." }));
    return;
  }
  view.replaceChildren(el("p", { class: "error", "data-testid": "failure", text: String(failure.message || failure) }));
}

async function start() {
  const path = location.pathname;
  if (path === "/login") {
    loginPage();
    return;
  }
  session = await api("/api/session");
  document.getElementById("who").textContent = `${session.user} (${session.role})`;
  const logout = document.getElementById("logout");
  if (session.via === "session") {
    logout.hidden = false;
    logout.addEventListener("click", async () => {
      await fetch("/api/logout", { method: "POST", credentials: "same-origin" });
      location.assign("/login");
    });
  }
  const status = await api("/api/status");
  if (!status.store.ok) storeBanner(status.store.error);
  if (path.startsWith("/devices/")) await devicePage(decodeURIComponent(path.slice("/devices/".length)));
  else if (path.startsWith("/faces/")) await facePage(path.slice("/faces/".length).split("/").map(decodeURIComponent).join("/"));
  else await devicesPage();
}

start().catch(report);
