// Shared by every page: options from the query string, the HTTP API on this
// origin, the gift catalog and a few formatting helpers. No outside assets.

export const params = new URLSearchParams(location.search);
export const streamId = params.get("stream_id") || "";
export const token = params.get("token") || "";

export function textOption(name, fallback) {
  const value = params.get(name);
  return value === null || value.trim() === "" ? fallback : value;
}

export function numberOption(name, fallback, min, max) {
  const value = Number(params.get(name));
  if (!params.has(name) || params.get(name) === "" || !Number.isFinite(value)) return fallback;
  return Math.min(max, Math.max(min, value));
}

export function flagOption(name, fallback) {
  const value = params.get(name);
  if (value === null) return fallback;
  return !["0", "off", "false", "no"].includes(value.trim().toLowerCase());
}

export function choiceOption(name, choices, fallback) {
  const value = (params.get(name) || "").trim().toLowerCase();
  return choices.includes(value) ? value : fallback;
}

// A colour as `ff3d7f` or `#ff3d7f` (a `#` must be written %23 in a URL), or `fallback`.
export function colourOption(name, fallback) {
  const value = (params.get(name) || "").trim().replace(/^#/, "");
  return /^([0-9a-f]{3}|[0-9a-f]{6})$/i.test(value) ? `#${value}` : fallback;
}

// Theme and font size shared by the overlays: `theme=dark|light|outline`, `font_size=28`.
export function applyLook(defaultFontSize) {
  const theme = choiceOption("theme", ["dark", "light", "outline"], "dark");
  document.body.classList.add(`theme-${theme}`);
  const size = numberOption("font_size", defaultFontSize, 10, 120);
  document.documentElement.style.setProperty("--font-size", `${size}px`);
}

// GET/POST JSON on this origin. Never throws: offline answers {ok: false, status: 0}.
// `auth` sends the page's token, or the token given (the studio keeps its own).
export async function api(path, { method = "GET", body, auth = false } = {}) {
  const headers = { Accept: "application/json" };
  if (auth) headers.Authorization = `Bearer ${typeof auth === "string" ? auth : token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    const data = await response.json().catch(() => ({}));
    return { ok: response.ok, status: response.status, data };
  } catch {
    return { ok: false, status: 0, data: {} };
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Retry a request that may fail while the server restarts: 0.5 s, 1 s, 2 s, … up to 10 s.
export async function fetchRetrying(path, options) {
  for (let attempt = 0; ; attempt++) {
    const answer = await api(path, options);
    if (answer.ok || (answer.status >= 400 && answer.status < 500)) return answer;
    await sleep(Math.min(10_000, 500 * 2 ** attempt));
  }
}

// The gift catalog by id: name, price, tier and art (emoji or inline SVG).
export async function loadCatalog() {
  const answer = await fetchRetrying("/v1/gifts");
  return new Map((answer.data.gifts || []).map((gift) => [gift.id, gift]));
}

// The gift's art as an element: its emoji, or its SVG as an image (an <img>
// never runs scripts that an SVG might carry).
export function giftArt(gift, className = "art") {
  if (gift && !gift.emoji && gift.svg) {
    const img = document.createElement("img");
    img.className = className;
    img.alt = gift.name;
    img.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(gift.svg)}`;
    return img;
  }
  const span = document.createElement("span");
  span.className = className;
  span.textContent = (gift && gift.emoji) || "🎁";
  span.setAttribute("role", "img");
  if (gift) span.setAttribute("aria-label", gift.name);
  return span;
}

const numbers = new Intl.NumberFormat("en-US");
export const formatCoins = (n) => numbers.format(n);

export function compactCoins(n) {
  if (n < 10_000) return numbers.format(n);
  if (n < 1_000_000) return `${(n / 1000).toFixed(n < 100_000 ? 1 : 0).replace(/\.0$/, "")}k`;
  return `${(n / 1_000_000).toFixed(1).replace(/\.0$/, "")}M`;
}

// A stable colour per user, for avatars.
export function hueOf(text) {
  let hash = 0;
  for (const char of text) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return hash % 360;
}

export function avatar(user) {
  const el = document.createElement("span");
  el.className = "avatar";
  el.textContent = ([...(user.name || user.id || "?")][0] || "?").toUpperCase();
  el.style.setProperty("--hue", String(hueOf(user.id || user.user_id || user.name || "")));
  return el;
}

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// The id of a message or purchase, also its idempotency key. crypto.randomUUID
// needs a secure context; a phone on the LAN over plain http has only getRandomValues.
export function newId(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `${prefix}-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

// What a streamer reads when the server closes with one of the reasons that say
// why a token stopped counting (gifting_server/auth.py: TOKEN_REVOKED, TOKEN_EXPIRED).
const REFUSALS = Object.freeze({
  token_revoked:
    "This overlay link was replaced by a newer one (the overlay links were rotated). Copy the new link from your studio's overlay links into this browser source.",
  token_expired:
    "This overlay link has expired. Copy a fresh link from your studio's overlay links into this browser source.",
});

// Shown only when the server refuses the page's token: a setup mistake the
// streamer must see in OBS's preview. Being offline is never shown.
export function showRefused(detail) {
  const box = el("div", "refused");
  box.dataset.reason = REFUSALS[detail] ? detail : "refused";
  box.textContent =
    REFUSALS[detail] ||
    `This overlay link was refused${detail ? ` (${detail})` : ""}. Get a new overlay link from your studio, or mint one with: gifting-server token <user> --role overlay --stream <stream id>`;
  document.body.append(box);
}
