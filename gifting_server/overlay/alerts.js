// /overlay/alerts: one alert at a time from a queue, never overlapping. A streak
// (the same sender tapping the same gift) is ONE alert whose counter climbs in
// place; it leaves once the server says the streak ended (or it went quiet).
// The streamer controls the queue of every open alerts overlay at once with
// `alerts` events (pause, resume, skip, clear, replay); `subscribed` says whether
// the alerts are paused when the page (re)loads. A test alert (a gift event marked
// `test`) is shown marked as one, apart from any streak. A gift's message is shown
// under its alert and, with `tts=on`, read aloud once the alert is in
// (alerts-speech.js); skip and clear stop it.

import {
  applyLook,
  choiceOption,
  el,
  flagOption,
  formatCoins,
  giftArt,
  loadCatalog,
  numberOption,
  streamId,
  textOption,
  token,
} from "./common.js";
import { speak, stopSpeech } from "./alerts-speech.js";
import { followStream } from "./hub.js";

const TEMPLATE = textOption("template", "{name} sent {gift} x{count}");
const MIN_COINS = numberOption("min_coins", 0, 0, Number.MAX_SAFE_INTEGER);
const DURATION_MS = numberOption("duration", 5, 0.5, 60) * 1000;
const SOUND = flagOption("sound", true);
const VOLUME = numberOption("volume", 50, 0, 100) / 100;
const POSITION = choiceOption("position", ["top", "center", "bottom"], "center");

const TIER_LENGTH = [1, 1.3, 1.8, 2.6]; // bigger gifts stay longer
const TIER_ENTER_MS = [380, 520, 650, 900]; // as in alerts.css
const STREAK_TIMEOUT_MS = 10_000; // a streak whose end never arrives leaves after this quiet time
// The final count stays at least this long after it last changed.
const LINGER_MS = Math.min(1_200, DURATION_MS / 2);
const EXIT_MS = 420;
const GAP_MS = 200;
const BACKLOG = 3; // with this many waiting (say, after a reconnect) alerts play at double speed

const stage = document.getElementById("stage");
const queue = [];
const open = new Map(); // `${sender}|${gift}` → the alert of a running streak, queued or on screen
let current = null;
let exitTimer = null;
let catalog = new Map();
let paused = false;

// Test and debugging hooks: every alert put on screen, in order (`count` climbs with
// its streak); whether the queue is paused.
window.__alertsShown = [];
window.__alertsPaused = paused;

function onEvent(event) {
  if (event.kind === "alerts") {
    control(event);
    return;
  }
  if (event.kind !== "gift") return;
  if (event.test) {
    // Apart from any streak, and never counted: it only shows what an alert looks like.
    enqueue(event, `test|${event.event_id}`, { test: true, ended: true });
    return;
  }
  const key = `${event.sender.id}|${event.gift.id}`;
  const alert = open.get(key);
  if (event.streak_end) {
    if (!alert) return; // below min_coins, or it already left
    open.delete(key);
    alert.ended = true;
    update(alert, Math.max(alert.combo, event.combo));
    return;
  }
  if (alert) {
    if (event.message) setMessage(alert, event.message, event.event_id);
    update(alert, event.combo);
    return;
  }
  const gift = { ...catalog.get(event.gift.id), ...event.gift };
  if (gift.coins * event.combo < MIN_COINS) return;
  open.set(key, enqueue(event, key, {}));
}

// A new alert for a gift event at the end of the queue.
function enqueue(event, key, { test = false, replay = false, ended = false }) {
  const gift = { ...catalog.get(event.gift.id), ...event.gift };
  const alert = {
    key,
    eventId: event.event_id,
    sender: event.sender,
    gift,
    tier: Math.min(4, Math.max(1, gift.tier || 1)),
    combo: event.combo,
    message: event.message || "",
    // The event that carries the message: its speech is asked for by this id.
    messageEventId: event.message ? event.event_id : null,
    test,
    replay,
    ended,
    changedAt: performance.now(),
  };
  queue.push(alert);
  next();
  return alert;
}

// The streamer's control of the queue, on every open alerts overlay at once.
function control(event) {
  if (event.action === "skip") {
    stopSpeech();
    if (current) leave(current);
  } else if (event.action === "clear") {
    stopSpeech();
    for (const alert of queue) {
      if (open.get(alert.key) === alert) open.delete(alert.key); // later taps: a new alert
    }
    queue.length = 0;
  } else if (event.action === "replay" && event.event?.kind === "gift") {
    const shown = event.event;
    // The streak's final count: a streak's end event carries it with count 0.
    enqueue(shown, `replay|${event.event_id}`, { replay: true, ended: true });
  }
  // Every alerts event says whether the queue is paused after it.
  if (typeof event.paused === "boolean") setPaused(event.paused);
}

function setPaused(value) {
  paused = value;
  window.__alertsPaused = paused;
  document.body.dataset.paused = String(paused);
  next();
}

function setMessage(alert, message, eventId) {
  alert.message = message;
  alert.messageEventId = eventId;
  if (alert.record) alert.record.message = message;
  const node = alert.node?.querySelector(".alert-message");
  if (node) {
    node.textContent = message;
    node.hidden = false;
  }
  if (alert === current && alert.node?.dataset.phase === "shown") speak(eventId);
}

function update(alert, combo) {
  if (alert.leaving) return;
  if (combo !== alert.combo) {
    alert.combo = combo;
    alert.changedAt = performance.now();
  }
  if (alert.record) Object.assign(alert.record, { count: alert.combo, ended: alert.ended });
  if (alert !== current) return;
  for (const node of alert.node.querySelectorAll(".count")) {
    if (node.textContent === String(alert.combo)) continue;
    node.textContent = String(alert.combo);
    node.animate(
      [{ transform: "scale(1.7)", filter: "brightness(1.6)" }, { transform: "none" }],
      { duration: 360, easing: "cubic-bezier(.2,1.6,.4,1)" },
    );
  }
  for (const node of alert.node.querySelectorAll(".coins")) {
    node.textContent = formatCoins(alert.gift.coins * alert.combo);
  }
  alert.node.querySelector(".alert-sub").textContent = subLine(alert);
  scheduleExit();
}

function next() {
  // Paused: the alert on screen plays to its end, the rest wait for resume.
  if (paused || current || queue.length === 0) return;
  current = queue.shift();
  show(current);
}

function show(alert) {
  alert.node = build(alert);
  stage.replaceChildren(alert.node);
  const speed = queue.length >= BACKLOG ? 0.5 : 1;
  alert.leaveNoSoonerThan = performance.now() + DURATION_MS * TIER_LENGTH[alert.tier - 1] * speed;
  alert.record = {
    event_id: alert.eventId,
    name: alert.sender.name,
    sender_id: alert.sender.id,
    gift: alert.gift.name,
    gift_id: alert.gift.id,
    tier: alert.tier,
    count: alert.combo,
    ended: alert.ended,
    message: alert.message,
    test: alert.test,
    replay: alert.replay,
  };
  window.__alertsShown.push(alert.record);
  beep(alert.tier);
  const node = alert.node;
  setTimeout(() => {
    if (node.dataset.phase !== "enter") return;
    node.dataset.phase = "shown";
    if (alert.message) speak(alert.messageEventId);
  }, TIER_ENTER_MS[alert.tier - 1]);
  scheduleExit();
}

function scheduleExit() {
  clearTimeout(exitTimer);
  const alert = current;
  const quiet = alert.ended ? LINGER_MS : STREAK_TIMEOUT_MS;
  const due = Math.max(alert.leaveNoSoonerThan, alert.changedAt + quiet);
  exitTimer = setTimeout(() => leave(alert), due - performance.now());
}

function leave(alert) {
  // Once: a skip and the alert's own exit timer may both ask.
  if (alert.leaving) return;
  alert.leaving = true;
  clearTimeout(exitTimer);
  if (!alert.ended) {
    // Its end never came (say, a lost event): stop waiting; later taps start a new alert.
    alert.ended = true;
    if (open.get(alert.key) === alert) open.delete(alert.key);
    alert.record.ended = true;
  }
  alert.node.dataset.phase = "exit";
  setTimeout(() => {
    alert.node.remove();
    alert.confetti?.remove();
    current = null;
    setTimeout(next, GAP_MS);
  }, EXIT_MS);
}

function build(alert) {
  const root = el("div", `alert tier-${alert.tier}${alert.test ? " is-test" : ""}`);
  root.dataset.phase = "enter";
  root.dataset.sender = alert.sender.id;
  root.dataset.gift = alert.gift.id;
  const burst = el("div", "burst");
  if (alert.tier === 4) {
    burst.append(el("div", "rays"));
    alert.confetti = confetti(); // its own layer: a moving alert must not carry it along
  }
  if (alert.tier >= 3) sparkles(burst);
  const art = el("div", "alert-art");
  art.append(giftArt(alert.gift));
  const card = el("div", "alert-card");
  if (alert.test) card.append(el("div", "alert-badge", "TEST"));
  // The message as the server moderated it, as text (never HTML: viewers wrote it).
  const message = el("div", "alert-message", alert.message);
  message.hidden = !alert.message;
  card.append(line(alert), el("div", "alert-sub", subLine(alert)), message);
  root.append(burst, art, card);
  return root;
}

// The template with {name}, {gift}, {count} and {coins} filled in as text nodes
// (never as HTML: names come from viewers).
function line(alert) {
  const node = el("div", "alert-line");
  for (const part of TEMPLATE.split(/(\{name\}|\{gift\}|\{count\}|\{coins\})/)) {
    if (part === "{name}") node.append(el("span", "name", alert.sender.name));
    else if (part === "{gift}") node.append(el("span", "gift", alert.gift.name));
    else if (part === "{count}") node.append(el("span", "count", String(alert.combo)));
    else if (part === "{coins}") {
      node.append(el("span", "coins", formatCoins(alert.gift.coins * alert.combo)));
    } else if (part) node.append(document.createTextNode(part));
  }
  return node;
}

function subLine(alert) {
  const coins = alert.gift.coins * alert.combo;
  return `🪙 ${formatCoins(coins)} ${coins === 1 ? "coin" : "coins"}`;
}

function sparkles(burst) {
  const colors = ["#ffc940", "#ff3d7f", "#4de8ff", "#ffffff", "#b36bff"];
  for (let i = 0; i < 14; i++) {
    const angle = (i / 14) * Math.PI * 2;
    const reach = 2.2 + Math.random() * 1.4;
    const spark = el("span", "spark");
    spark.style.setProperty("--x", `${Math.cos(angle) * reach}em`);
    spark.style.setProperty("--y", `${Math.sin(angle) * reach}em`);
    spark.style.setProperty("--c", colors[i % colors.length]);
    spark.style.setProperty("--delay", `${120 + Math.random() * 200}ms`);
    burst.append(spark);
  }
}

function confetti() {
  const layer = el("div", "confetti-layer");
  const colors = ["#ff3d7f", "#ffc940", "#4de8ff", "#7c4dff", "#5cff9d"];
  for (let i = 0; i < 36; i++) {
    const piece = el("span", "confetti");
    piece.style.left = `${Math.random() * 100}vw`;
    piece.style.setProperty("--c", colors[i % colors.length]);
    piece.style.setProperty("--fall", `${2.4 + Math.random() * 2}s`);
    piece.style.setProperty("--delay", `${Math.random() * 1200}ms`);
    piece.style.setProperty("--drift", `${(Math.random() - 0.5) * 30}vw`);
    piece.style.setProperty("--turn", `${360 + Math.random() * 720}deg`);
    layer.append(piece);
  }
  document.body.append(layer);
  return layer;
}

// A short chime made with WebAudio (no sound files): more notes for bigger gifts.
let audio = null;
function beep(tier) {
  if (!SOUND || VOLUME === 0) return;
  try {
    audio = audio || new AudioContext();
    if (audio.state === "suspended") audio.resume().catch(() => {});
    const notes = [[880], [660, 990], [523, 659, 784], [523, 659, 784, 1047]][tier - 1];
    const start = audio.currentTime + 0.02;
    notes.forEach((frequency, i) => {
      const at = start + i * 0.11;
      const length = tier === 4 && i === notes.length - 1 ? 0.7 : 0.2;
      const oscillator = audio.createOscillator();
      const gain = audio.createGain();
      oscillator.type = tier >= 3 ? "triangle" : "sine";
      oscillator.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, at);
      gain.gain.exponentialRampToValueAtTime(0.3 * VOLUME, at + 0.015);
      gain.gain.exponentialRampToValueAtTime(0.0001, at + length);
      oscillator.connect(gain).connect(audio.destination);
      oscillator.start(at);
      oscillator.stop(at + length + 0.05);
    });
  } catch {
    // No audio device (or autoplay refused): alerts stay silent, nothing else changes.
  }
}

// The server could not replay what this page missed (a fresh `subscribed` with
// recovered: false): the end of a running streak may be among it. End them all
// here, so none waits for an end that will never come; later taps start new alerts.
function onResync() {
  for (const alert of open.values()) {
    alert.ended = true;
    if (alert.record) alert.record.ended = true;
  }
  open.clear();
  if (current) scheduleExit();
}

async function main() {
  applyLook(32);
  stage.className = `pos-${POSITION}`;
  catalog = await loadCatalog();
  const onSubscribed = (message) => {
    if (typeof message.alerts_paused === "boolean") setPaused(message.alerts_paused);
  };
  followStream(streamId, token, { onEvent, onResync, onSubscribed });
}

main();
