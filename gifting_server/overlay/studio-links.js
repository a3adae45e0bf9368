// The studio's overlay links: mints an overlay token for the stream
// (POST /v1/streams/{id}/overlay-tokens), builds each overlay's URL from the options
// form, previews it live in a frame and copies it. "Replace all links" mints with
// `rotate`, which revokes every earlier overlay token of the stream.

import { api, el } from "./common.js";

// Browser source sizes that fit each overlay (OBS pixels), as `make run` prints them.
const SIZES = {
  alerts: [800, 600],
  leaderboard: [400, 500],
  goal: [800, 160],
  feed: [400, 600],
  ticker: [1280, 80],
  battle: [800, 220],
  compact: [800, 110],
};
// Which options each overlay reads (the labels' data-for in studio.html say the same).
const OPTIONS = {
  alerts: ["duration", "min_coins", "sound", "tts", "theme"],
  leaderboard: ["limit", "period", "theme"],
  goal: ["theme"],
  feed: ["limit", "min_coins", "mode", "theme"],
  battle: ["compact", "theme"],
};

const PREVIEW_MAX_HEIGHT = 340; // px: the preview is a glance, not a second OBS

let ctx = null;
let minted = null; // {token, urls}
const $ = (id) => document.getElementById(id);

function storageKey() {
  return `overlay-links:${ctx.streamId}`;
}

async function mint(rotate) {
  const answer = await api(`${ctx.streamPath}/overlay-tokens`, {
    method: "POST",
    auth: ctx.token,
    body: rotate ? { rotate: true } : {},
  });
  if (!answer.ok) {
    const missing = answer.status === 404 && answer.data.error?.code === "not_found";
    ctx.note(
      "links-note",
      missing ? "This server cannot mint overlay links yet." : ctx.explain(answer),
      "error",
    );
    return false;
  }
  minted = answer.data;
  sessionStorage.setItem(storageKey(), JSON.stringify(minted));
  return true;
}

function options(kind) {
  const wanted = OPTIONS[kind];
  const query = new URLSearchParams();
  const add = (name, value, fallback) => {
    if (wanted.includes(name) && String(value) !== String(fallback)) query.set(name, String(value));
  };
  add("duration", $("opt-duration").value, "5");
  add("min_coins", $("opt-min-coins").value, "0");
  add("sound", $("opt-sound").checked ? "on" : "off", "on");
  add("tts", $("opt-tts").checked ? "on" : "off", "off");
  add("limit", $("opt-limit").value, kind === "feed" ? "6" : "5");
  add("period", $("opt-period").value, "stream");
  add("mode", $("opt-mode").value, "list");
  add("compact", $("opt-compact").checked ? "on" : "off", "off");
  add("theme", $("opt-theme").value, "dark");
  return query;
}

export function overlayUrl(kind) {
  if (!minted) return "";
  const base = new URL(minted.urls?.[kind] || `${location.origin}/overlay/${kind}`, location.href);
  if (!base.searchParams.has("token")) {
    base.searchParams.set("stream_id", ctx.streamId);
    base.searchParams.set("token", minted.token);
  }
  for (const [name, value] of options(kind)) base.searchParams.set(name, value);
  return base.toString();
}

function render() {
  const kind = $("opt-kind").value;
  for (const label of document.querySelectorAll("#links-form [data-for]")) {
    label.hidden = !label.dataset.for.split(" ").includes(kind);
  }
  const [width, height] = sizeOf(kind);
  $("link-size").textContent = `${width} × ${height}`;
  const url = overlayUrl(kind);
  $("link-url").value = url;
  renderAll();
  window.__overlayUrl = url; // test hook
  // The preview draws the overlay at its OBS size, scaled to the card.
  const box = $("preview-box");
  const frame = $("preview");
  box.hidden = !url;
  if (!url) return;
  const scale = Math.min(1, box.clientWidth / width, PREVIEW_MAX_HEIGHT / height);
  frame.style.width = `${width}px`;
  frame.style.height = `${height}px`;
  frame.style.transform = `scale(${scale})`;
  box.style.height = `${Math.ceil(height * scale)}px`;
  // The preview never plays sound: the studio sits beside OBS.
  const preview = `${url}&sound=off`;
  if (frame.dataset.src !== preview) {
    frame.dataset.src = preview;
    frame.src = preview;
  }
}

const NAMES = {
  alerts: "Alerts",
  leaderboard: "Top gifters",
  goal: "Goal bar",
  feed: "Gift feed",
  battle: "Battle bar",
};

// The OBS size of an overlay as its options shape it.
function sizeOf(kind) {
  if (kind === "feed" && $("opt-mode").value === "ticker") return SIZES.ticker;
  if (kind === "battle" && $("opt-compact").checked) return SIZES.compact;
  return SIZES[kind];
}

// Every overlay's link at once (each with the options that apply to it), to set up
// all the browser sources in one go.
function renderAll() {
  const list = $("all-links");
  list.replaceChildren(
    ...(minted ? Object.keys(OPTIONS) : []).map((kind) => {
      const item = el("li");
      const [width, height] = sizeOf(kind);
      const button = el("button", "small-button", "Copy");
      button.type = "button";
      button.dataset.kind = kind;
      button.onclick = () => copy(overlayUrl(kind));
      item.append(el("b", "", NAMES[kind]), el("span", "muted small", `${width} × ${height}`), button);
      return item;
    }),
  );
}

async function copy(text) {
  const url = typeof text === "string" ? text : $("link-url").value;
  if (!url) return;
  try {
    await navigator.clipboard.writeText(url);
  } catch {
    // No clipboard API (plain http on a LAN address): copy the selected text.
    const field = $("link-url");
    const shown = field.value;
    field.value = url;
    field.select();
    document.execCommand("copy");
    field.value = shown;
  }
  ctx.note("links-note", "Copied. Paste it into an OBS browser source.");
}

async function rotate() {
  const sure = confirm(
    "Replace all overlay links of this stream?\n\nEvery earlier link stops working at once " +
      "(open overlays show \"this link was replaced\"): paste the new links into OBS afterwards.",
  );
  if (!sure) return;
  if (await mint(true)) {
    render();
    ctx.note("links-note", "Done: every earlier link stopped working. Copy the new ones into OBS.");
  }
}

// After going live for the first time: a stream that did not exist had no links.
export async function ensureLinks() {
  if (!minted && ctx && (await mint(false))) render();
}

export async function startLinks(context) {
  ctx = context;
  $("links-form").oninput = render;
  $("links-form").onchange = render;
  $("copy-link").onclick = copy;
  $("rotate").onclick = rotate;
  addEventListener("resize", render);
  const kept = sessionStorage.getItem(storageKey());
  if (kept) minted = JSON.parse(kept);
  else await mint(false);
  render();
}
