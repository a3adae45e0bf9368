// /studio: the streamer's page. Everything here goes through the public HTTP API and
// the WebSocket, as any other tool could: go live and end, the activity feed, alert
// control, the goal and the message settings (this module); the overlay links
// (studio-links.js), the earnings (studio-earnings.js) and battles (studio-battle.js).
//
// The URL's token can cash out: it is taken out of the address bar at once and kept
// in this tab's sessionStorage. The stream is the streamer's one stable stream id, so
// overlay links stay valid from one stream to the next: `stream_id` of the URL when
// given, else the streamer's user id.

import { api, el, formatCoins, giftArt, loadCatalog, params } from "./common.js";
import { StreamHub } from "./hub.js";
import { StreakFeed, replayEventId } from "./feed-model.js";
import { ensureLinks, startLinks } from "./studio-links.js";
import { startEarnings, walletSoon } from "./studio-earnings.js";
import { startBattle, takeBattle } from "./studio-battle.js";

const BACKFILL = 300; // events read back from the history when the page opens
const TOKEN_KEY = "studio-token";

// -- the token, out of the address bar ----------------------------------------------

function takeToken() {
  const fromUrl = params.get("token");
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    const kept = new URLSearchParams(location.search);
    kept.delete("token");
    const query = kept.toString();
    history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}${location.hash}`);
  }
  return fromUrl || sessionStorage.getItem(TOKEN_KEY) || "";
}

function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

const token = takeToken();
const claims = claimsOf(token);
const streamId = params.get("stream_id") || claims.sub || "";
const streamPath = `/v1/streams/${encodeURIComponent(streamId)}`;

// -- saying what happened, in words ---------------------------------------------------

// Each refusal a streamer may meet, in words they can act on; else the server's own.
const REFUSALS = {
  unauthorized: "Your studio link is not valid (expired?). Open the studio with a fresh streamer link.",
  forbidden: "This link cannot run this stream: it needs the stream's own streamer token.",
  stream_id_taken: "This stream id belongs to another streamer. Open the studio with your own stream id.",
  unknown_stream: "This stream has never been live: press Go live first.",
  unknown_event: "That gift is too old to replay: it is no longer in the stream's history.",
  unknown_gift: "That gift is not in the catalog any more.",
  rate_limited: "Too many requests at once: wait a moment and try again.",
  service_unavailable: "The server is busy: try again in a moment.",
};

export function explain(answer) {
  if (answer.status === 0) return "The server cannot be reached: check your connection and try again.";
  const error = answer.data.error || {};
  return REFUSALS[error.code] || error.message || `The server refused (HTTP ${answer.status}).`;
}

export function note(id, text, kind = "ok") {
  const node = document.getElementById(id);
  node.textContent = text;
  node.dataset.kind = kind;
}

export const ctx = { token, streamId, streamPath, explain, note };

// Test and debugging hooks.
window.__studio = { streamId, status: "unknown", viewers: 0, paused: false, goal: null };

// -- the stream: live or not, viewers --------------------------------------------------

let hub = null;
let live = false;

function setStatus(status) {
  live = status === "live";
  window.__studio.status = status;
  const pill = document.getElementById("status-pill");
  pill.dataset.status = status;
  pill.textContent = { live: "LIVE", ended: "Offline", new: "Not live yet" }[status] || "…";
  document.getElementById("go-live").hidden = live;
  document.getElementById("end-stream").hidden = !live;
}

function setViewers(count) {
  window.__studio.viewers = count;
  document.getElementById("viewer-count").textContent = formatCoins(count);
}

async function goLive() {
  const button = document.getElementById("go-live");
  button.disabled = true;
  const answer = await api("/v1/streams", { method: "POST", auth: token, body: { stream_id: streamId } });
  button.disabled = false;
  if (!answer.ok) {
    banner(explain(answer));
    return;
  }
  banner("");
  setStatus("live");
  loadSettings();
  ensureLinks();
  follow();
}

async function endStream() {
  if (!confirm("End the stream? Viewers can no longer send gifts until you go live again.")) return;
  const answer = await api(`${streamPath}/end`, { method: "POST", auth: token });
  if (!answer.ok) {
    banner(explain(answer));
    return;
  }
  setStatus("ended");
}

function banner(text) {
  const node = document.getElementById("banner");
  node.textContent = text;
  node.hidden = !text;
}

// -- the activity feed ----------------------------------------------------------------

let catalog = new Map();
const feedNodes = new Map(); // row key → its <li>
const feed = new StreakFeed({ onChange: (row) => drawRow(row) });

function feedMin() {
  return Math.max(0, Number(document.getElementById("feed-min").value) || 0);
}

function drawRow(row) {
  let node = feedNodes.get(row.key);
  if (!node) {
    node = el("li", "feed-row");
    node.dataset.key = row.key;
    feedNodes.set(row.key, node);
    document.getElementById("feed").prepend(node);
  }
  const gift = { ...catalog.get(row.gift.id), ...row.gift };
  node.classList.toggle("is-test", row.test);
  node.classList.toggle("is-open", !row.ended);
  node.dataset.coins = String(row.coins);
  node.dataset.combo = String(row.combo);
  node.hidden = row.coins < feedMin();
  const line = el("div", "feed-line");
  line.append(el("b", "", row.sender.name), document.createTextNode(" sent "));
  line.append(el("span", "feed-gift", gift.name), el("b", "feed-count", ` x${row.combo}`));
  const side = el("div", "feed-side");
  side.append(el("span", "feed-coins", `🪙 ${formatCoins(row.coins)}`));
  const time = new Date(row.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  side.append(el("span", "muted small", time));
  const replay = el("button", "small-button replay", "↻");
  replay.type = "button";
  replay.title = "Replay: show this alert again on the alerts overlays";
  replay.setAttribute("aria-label", "Replay this alert");
  replay.onclick = () => control("replay", { event_id: replayEventId(row) });
  const body = el("div", "feed-body");
  body.append(line);
  if (row.test) line.append(el("span", "badge", "TEST"));
  if (row.message) body.append(el("p", "feed-message", row.message));
  node.replaceChildren(giftArt(gift), body, side, replay);
  document.getElementById("feed-empty").hidden = feed.rows.length > 0;
}

function refilter() {
  const min = feedMin();
  for (const row of feed.rows) {
    const node = feedNodes.get(row.key);
    if (node) node.hidden = row.coins < min;
  }
}

// -- alert control ---------------------------------------------------------------------

function setPaused(paused) {
  window.__studio.paused = paused;
  const state = document.getElementById("alerts-state");
  state.dataset.paused = String(paused);
  state.textContent = paused ? "paused" : "playing";
  document.getElementById("alerts-pause").hidden = paused;
  document.getElementById("alerts-resume").hidden = !paused;
}

const DONE = {
  pause: "Paused: alerts wait in the queue.",
  resume: "Playing again.",
  skip: "Skipped the alert on screen.",
  clear: "Cleared the queue.",
  replay: "Replaying it on the alerts overlays.",
  test: "Test alert sent.",
};

async function control(action, extra = {}) {
  const answer = await api(`${streamPath}/alerts`, {
    method: "POST",
    auth: token,
    body: { action, ...extra },
  });
  if (!answer.ok) {
    note("alerts-note", explain(answer), "error");
    return;
  }
  note("alerts-note", DONE[action]);
  if (action === "pause" || action === "resume") setPaused(action === "pause");
}

function fillTestGifts() {
  const select = document.getElementById("test-gift");
  const gifts = [...catalog.values()].sort((a, b) => a.coins - b.coins);
  select.replaceChildren(
    ...gifts.map((gift) => {
      const option = el("option", "", `${gift.emoji || "🎁"} ${gift.name} (${formatCoins(gift.coins)})`);
      option.value = gift.id;
      return option;
    }),
  );
}

// -- the goal ----------------------------------------------------------------------------

let goal = null; // {target, title, counted_from}
let coinsTotal = 0;

function takeGoal(held) {
  if (!held || !(held.target > 0)) return;
  goal = { target: held.target, title: held.title || "", counted_from: held.counted_from };
  coinsTotal = Math.max(coinsTotal, held.counted_from + held.progress);
  renderGoal();
}

function renderGoal() {
  if (!goal) return;
  const progress = Math.max(0, coinsTotal - goal.counted_from);
  window.__studio.goal = { progress, target: goal.target, title: goal.title };
  document.getElementById("goal-now").hidden = false;
  document.getElementById("goal-none").hidden = true;
  document.getElementById("goal-progress").textContent = formatCoins(progress);
  document.getElementById("goal-target").textContent = formatCoins(goal.target);
  document.getElementById("goal-title-now").textContent = goal.title ? `· ${goal.title}` : "";
  document.getElementById("goal-fill").style.width = `${Math.min(100, (progress * 100) / goal.target)}%`;
}

async function saveGoal(event) {
  event.preventDefault();
  const body = {
    target: Number(document.getElementById("goal-target-in").value),
    title: document.getElementById("goal-title").value,
    reset: document.getElementById("goal-reset").checked,
  };
  const answer = await api(`${streamPath}/goal`, { method: "PUT", auth: token, body });
  if (!answer.ok) {
    note("goal-note", explain(answer), "error");
    return;
  }
  document.getElementById("goal-reset").checked = false;
  takeGoal(answer.data);
  note("goal-note", body.reset ? "Saved; counting from now." : "Saved; progress kept.");
}

// -- message settings ----------------------------------------------------------------------

function showSettings(messages) {
  document.getElementById("set-enabled").checked = messages.enabled;
  document.getElementById("set-min-coins").value = messages.min_coins;
  document.getElementById("set-max-length").value = messages.max_length;
  document.getElementById("set-blocked").value = (messages.blocked_words || []).join("\n");
  document.getElementById("set-tts").checked = messages.tts;
  document.getElementById("set-tts-min").value = messages.tts_min_coins;
}

async function loadSettings() {
  const answer = await api(`${streamPath}/settings`, { auth: token });
  if (answer.ok) showSettings(answer.data.messages);
}

async function saveSettings(event) {
  event.preventDefault();
  const number = (id) => Number(document.getElementById(id).value);
  const messages = {
    enabled: document.getElementById("set-enabled").checked,
    min_coins: number("set-min-coins"),
    max_length: number("set-max-length"),
    blocked_words: document
      .getElementById("set-blocked")
      .value.split("\n")
      .map((word) => word.trim())
      .filter(Boolean),
    tts: document.getElementById("set-tts").checked,
    tts_min_coins: number("set-tts-min"),
  };
  const answer = await api(`${streamPath}/settings`, { method: "PUT", auth: token, body: { messages } });
  if (!answer.ok) {
    note("settings-note", explain(answer), "error");
    return;
  }
  showSettings(answer.data.messages);
  note("settings-note", "Saved.");
}

// -- the stream's events ---------------------------------------------------------------------

function onEvent(event) {
  feed.take(event);
  if (event.kind === "gift" && !event.test && Number.isFinite(event.coins_total)) {
    coinsTotal = Math.max(coinsTotal, event.coins_total);
    renderGoal();
    walletSoon();
  } else if (event.kind === "goal") {
    takeGoal(event);
  } else if (event.kind === "viewers") {
    setViewers(event.count);
  } else if (event.kind === "alerts" && typeof event.paused === "boolean") {
    setPaused(event.paused);
  } else if (event.kind === "settings") {
    // Another tab changed them: show them, keeping the blocked words this page has.
    const words = document.getElementById("set-blocked").value.split("\n").filter(Boolean);
    showSettings({ ...event.messages, blocked_words: words });
  } else if (event.kind === "battle") {
    takeBattle(event);
  } else if (event.kind === "stream_ended") {
    setStatus("ended");
  }
}

function follow() {
  if (hub) return;
  hub = new StreamHub({
    streamId,
    token,
    backfill: BACKFILL,
    onEvent,
    onSubscribed: (message) => {
      setViewers(message.viewers || 0);
      if (typeof message.alerts_paused === "boolean") setPaused(message.alerts_paused);
      takeGoal(message.goal);
      if (message.battle) takeBattle(message.battle, { fresh: false });
    },
    onResync: async () => {
      feed.endAll();
      await readStream();
    },
    onState: (state, detail) => {
      document.body.dataset.state = state;
      const words = { live: "", offline: "reconnecting…", connecting: "connecting…" };
      document.getElementById("conn").textContent =
        state === "refused" ? `refused: ${detail}` : words[state] || "";
    },
  });
  window.__hub = hub;
  hub.start();
}

async function readStream() {
  const answer = await api(streamPath);
  if (answer.status === 404) {
    setStatus("new");
    return false;
  }
  if (!answer.ok) {
    banner(explain(answer));
    return false;
  }
  const stream = answer.data;
  if (stream.streamer_id !== claims.sub) {
    banner("This stream belongs to another streamer: this page can only watch it.");
  }
  setStatus(stream.status);
  setPaused(stream.alerts_paused);
  coinsTotal = stream.coins_total || 0;
  takeGoal(stream.goal);
  if (stream.goal) {
    document.getElementById("goal-target-in").value = stream.goal.target;
    document.getElementById("goal-title").value = stream.goal.title || "";
  }
  return true;
}

async function main() {
  document.getElementById("streamer-name").textContent = claims.name || claims.sub || "Studio";
  document.getElementById("stream-label").textContent = streamId ? `· stream ${streamId}` : "";
  document.title = `Studio · ${claims.name || streamId}`;
  if (!token || claims.role !== "streamer") {
    banner("This page needs a streamer link: /studio?token=<a streamer token>.");
  }
  document.getElementById("go-live").onclick = goLive;
  document.getElementById("end-stream").onclick = endStream;
  document.getElementById("feed-min").oninput = refilter;
  document.getElementById("alerts-pause").onclick = () => control("pause");
  document.getElementById("alerts-resume").onclick = () => control("resume");
  document.getElementById("alerts-skip").onclick = () => control("skip");
  document.getElementById("alerts-clear").onclick = () => control("clear");
  document.getElementById("test-form").onsubmit = (event) => {
    event.preventDefault();
    const count = Math.max(1, Number(document.getElementById("test-count").value) || 1);
    control("test", { gift_id: document.getElementById("test-gift").value, count });
  };
  document.getElementById("goal-form").onsubmit = saveGoal;
  document.getElementById("settings-form").onsubmit = saveSettings;

  catalog = await loadCatalog();
  fillTestGifts();
  startEarnings(ctx);
  startBattle(ctx);
  const known = await readStream();
  startLinks(ctx);
  if (known) {
    loadSettings();
    follow();
  }
}

main();
