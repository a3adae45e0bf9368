// /client: the viewer's live-stream page. Gifts go over the WebSocket as
// `gift` messages whose id is also their idempotency key, so a gift that was
// in flight when the connection dropped is simply sent again on reconnect and
// charged once. The balance shown is the one the server answered last.

import {
  api,
  avatar,
  el,
  fetchRetrying,
  formatCoins,
  giftArt,
  loadCatalog,
  newId,
  streamId,
  token,
} from "./common.js";
import { StreamHub } from "./hub.js";
import { Stage } from "./client-stage.js";
import { BattleBar } from "./battle-bar.js";

const COMBO_SHOWN_MS = 2_500;
const BATTLE_WINNER_MS = 8_000; // the winner of a battle stays this long over the video
const TOAST_MS = 4_000;
const demoPayments = document.body.dataset.demoPayments === "on";

const pending = new Map(); // gift message id → {gift, message}, until its ack or error
const CONFIRM_KEY = "gift-confirm-above"; // the viewer's own threshold, in coins
const CONFIRM_DEFAULT = 1_000;
let hub = null;
let stage = null;
let me = { id: "", name: "" };
let balance = null;
let balanceEventId = 0; // the event id of the gift whose ack set the balance shown
let ended = false;
let comboTimer = null;
let toastTimer = null;
let walletTimer = null;
let packages = null;
let battle = null;

// Test and debugging hooks.
window.__acks = [];
window.__errors = [];

// -- balance -------------------------------------------------------------------

function setBalance(coins, eventId) {
  if (eventId !== undefined) {
    if (eventId < balanceEventId) return; // an older gift's answer arriving late
    balanceEventId = eventId;
  }
  balance = coins;
  for (const id of ["balance", "sheet-balance"]) {
    const node = document.getElementById(id);
    node.textContent = formatCoins(coins);
    node.dataset.coins = String(coins);
  }
}

async function syncWallet() {
  const answer = await api("/v1/wallet", { auth: true });
  if (answer.ok && pending.size === 0) setBalance(answer.data.coins);
  return answer;
}

// Once taps settle, read the wallet back: the shown balance converges even if
// answers crossed a purchase on the way.
function syncWalletSoon() {
  clearTimeout(walletTimer);
  walletTimer = setTimeout(syncWallet, 2_000);
}

// -- sending gifts ---------------------------------------------------------------

function tap(gift, button) {
  button.animate([{ transform: "scale(0.86)" }, { transform: "none" }], {
    duration: 220,
    easing: "cubic-bezier(.2,1.6,.4,1)",
  });
  if (ended) {
    toast("The stream has ended: gifts are closed.", { error: true });
    return;
  }
  const input = document.getElementById("gift-message");
  const message = messagesOn() ? input.value.trim() : "";
  if (message && gift.coins < messages.min_coins) {
    toast(
      `A message goes with a gift of 🪙 ${formatCoins(messages.min_coins)} or more: pick a bigger gift, or clear the message.`,
      { error: true },
    );
    return;
  }
  if (gift.coins > confirmAbove()) {
    askToConfirm(gift, message, () => send(gift, message));
    return;
  }
  send(gift, message);
}

function send(gift, message) {
  const id = newId("gift");
  pending.set(id, { gift, message });
  if (message) document.getElementById("gift-message").value = "";
  if (!hub?.send(giftMessage(id, gift, message))) {
    toast("Reconnecting… your gift goes out as soon as the stream is back.");
  }
}

function giftMessage(id, gift, message) {
  const frame = { type: "gift", id, stream_id: streamId, gift_id: gift.id, count: 1 };
  if (message) frame.message = message;
  return frame;
}

// -- confirming big gifts ------------------------------------------------------------

function confirmAbove() {
  const kept = Number(localStorage.getItem(CONFIRM_KEY));
  return localStorage.getItem(CONFIRM_KEY) !== null && Number.isFinite(kept) && kept >= 0
    ? kept
    : CONFIRM_DEFAULT;
}

function showConfirmAbove() {
  document.getElementById("ask-above-coins").textContent = formatCoins(confirmAbove());
}

function changeConfirmAbove() {
  const answer = prompt(
    "Ask me to confirm gifts worth more than how many coins? (0: confirm every gift)",
    String(confirmAbove()),
  );
  if (answer === null) return;
  const value = Number(answer.replace(/[,\s]/g, ""));
  if (!Number.isInteger(value) || value < 0) {
    toast("That is not a number of coins.", { error: true });
    return;
  }
  localStorage.setItem(CONFIRM_KEY, String(value));
  showConfirmAbove();
}

function askToConfirm(gift, message, onYes) {
  const sheet = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent =
    `${gift.name} costs 🪙 ${formatCoins(gift.coins)} coins.` + (message ? ` With your message: “${message}”` : "");
  const close = () => {
    sheet.hidden = true;
    document.getElementById("sheet-backdrop").hidden = true;
  };
  document.getElementById("confirm-send").onclick = () => {
    close();
    onYes();
  };
  document.getElementById("confirm-cancel").onclick = close;
  document.getElementById("sheet-backdrop").onclick = close;
  sheet.hidden = false;
  document.getElementById("sheet-backdrop").hidden = false;
  document.getElementById("confirm-send").focus();
}

// -- gift messages, as the stream's settings allow ------------------------------------------

let messages = { enabled: false, min_coins: 0, max_length: 150 };

function messagesOn() {
  return messages.enabled && !ended;
}

function takeMessageSettings(settings) {
  if (!settings) return;
  messages = settings;
  document.getElementById("message-box").hidden = !messagesOn();
  const input = document.getElementById("gift-message");
  input.maxLength = settings.max_length;
  document.getElementById("message-hint").textContent =
    settings.min_coins > 1
      ? `Goes with your next gift of 🪙 ${formatCoins(settings.min_coins)} or more (up to ${settings.max_length} characters).`
      : `Goes with your next gift (up to ${settings.max_length} characters).`;
}

function onMessage(message) {
  if (message.type === "ack" && pending.has(message.id)) {
    const { gift } = pending.get(message.id);
    pending.delete(message.id);
    window.__acks.push(message);
    setBalance(message.coins, message.event_id);
    showCombo(gift, message.combo);
    syncWalletSoon();
  } else if (message.type === "error" && retryLater(message) && pending.has(message.id)) {
    // The server was too busy (or held too many of this viewer's gifts at once) and
    // changed nothing: the same gift (same id, so it is charged once) goes out again
    // when it said, with some jitter.
    const gift = pending.get(message.id);
    const delay = message.retry_after_ms * (1 + Math.random() * 0.5);
    setTimeout(() => {
      if (pending.has(message.id)) hub?.send(giftMessage(message.id, gift));
    }, delay);
    toast("Busy right now: your gift goes out in a moment.");
  } else if (message.type === "error") {
    const sent = pending.get(message.id);
    pending.delete(message.id);
    window.__errors.push(message);
    // A refused message stays in the box, to be changed or sent with another gift.
    if (sent?.message && !document.getElementById("gift-message").value) {
      document.getElementById("gift-message").value = sent.message;
    }
    explain(message, sent?.gift);
  }
}

function retryLater(message) {
  // The script's own rate_limited carries no retry_after_ms: that one is explained.
  const codes = ["service_unavailable", "rate_limited"];
  return codes.includes(message.code) && Number.isInteger(message.retry_after_ms);
}

function showCombo(gift, combo) {
  const box = document.getElementById("combo");
  const times = el("span", "times", `x${combo}`);
  box.replaceChildren(giftArt(gift), times);
  box.dataset.gift = gift.id;
  box.dataset.combo = String(combo);
  box.hidden = false;
  times.animate([{ transform: "scale(1.7)" }, { transform: "none" }], {
    duration: 320,
    easing: "cubic-bezier(.2,1.6,.4,1)",
  });
  const badge = document.querySelector(`.gift[data-gift="${CSS.escape(gift.id)}"] .badge`);
  for (const other of document.querySelectorAll(".gift .badge")) other.hidden = other !== badge;
  if (badge) {
    badge.textContent = `x${combo}`;
    badge.hidden = false;
  }
  clearTimeout(comboTimer);
  comboTimer = setTimeout(() => {
    box.hidden = true;
    if (badge) badge.hidden = true;
  }, COMBO_SHOWN_MS);
}

// Each refusal in words a viewer can act on.
function explain(error, gift) {
  const name = gift ? gift.name : "this gift";
  switch (error.code) {
    case "insufficient_funds":
      toast(`Not enough coins for ${name}.`, { error: true, action: ["Recharge", openRecharge] });
      break;
    case "daily_limit_exceeded":
      toast("You reached your daily gift budget. It resets at midnight (UTC).", { error: true });
      break;
    case "stream_not_live":
    case "unknown_stream":
      setEnded();
      toast("The stream has ended: gifts are closed.", { error: true });
      break;
    case "age_verification_required":
      toast("Gifts are for age-verified (18+) viewers.", { error: true });
      break;
    case "self_gift":
      toast("You cannot send gifts to your own stream.", { error: true });
      break;
    case "rate_limited":
      toast("Easy there! Too many gifts at once: try again in a moment.", { error: true });
      break;
    case "forbidden":
      toast("This link cannot send gifts: it needs a viewer token.", { error: true });
      break;
    case "message_not_allowed":
      toast(`The streamer does not take a message with this gift: ${error.message}`, { error: true });
      break;
    case "invalid_request":
      toast(error.message || "The gift was refused.", { error: true });
      break;
    default:
      toast(error.message || "Something went wrong; try again.", { error: true });
  }
}

function toast(text, { error = false, action = null } = {}) {
  const box = document.getElementById("toast");
  const button = document.getElementById("toast-action");
  document.getElementById("toast-text").textContent = text;
  box.classList.toggle("error", error);
  box.dataset.kind = error ? "error" : "info";
  button.hidden = !action;
  button.onclick = null;
  if (action) {
    button.textContent = action[0];
    button.onclick = () => {
      box.hidden = true;
      action[1]();
    };
  }
  box.hidden = false;
  box.getAnimations().forEach((animation) => animation.play());
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.hidden = true), action ? TOAST_MS * 1.5 : TOAST_MS);
}

function setEnded() {
  ended = true;
  document.getElementById("message-box").hidden = true;
  document.getElementById("ended").hidden = false;
  document.getElementById("gifts").classList.add("closed");
  const badge = document.getElementById("live-badge");
  badge.textContent = "ENDED";
  badge.classList.add("off");
}

// -- the streamer's goal, held by the server ----------------------------------------

let goal = null; // {target, title, counted_from}
let coinsTotal = 0;

function takeGoal(held) {
  if (!held || !(held.target > 0)) return;
  goal = { target: held.target, title: held.title, counted_from: held.counted_from };
  coinsTotal = held.counted_from + held.progress;
  renderGoal();
}

function renderGoal() {
  const strip = document.getElementById("goal-strip");
  strip.hidden = goal === null;
  if (goal === null) return;
  const progress = Math.max(0, coinsTotal - goal.counted_from);
  document.getElementById("goal-title").textContent = goal.title || "Goal";
  document.getElementById("goal-fill").style.width = `${Math.min(100, (progress * 100) / goal.target)}%`;
  document.getElementById("goal-numbers").textContent =
    `${formatCoins(progress)} / ${formatCoins(goal.target)}`;
  // Test and debugging hook: what the goal bar shows.
  window.__clientGoal = { progress, target: goal.target, title: goal.title };
}

function onEvent(event) {
  if (event.kind === "gift" && event.test) {
    return; // a test alert is for the streamer's overlays: no banner, no counter, no goal
  }
  if (event.kind === "goal") {
    takeGoal(event);
  } else if (event.kind === "gift") {
    if (Number.isFinite(event.coins_total) && event.coins_total > coinsTotal) {
      coinsTotal = event.coins_total;
      renderGoal();
    }
    stage.gift(event);
    // Sent from another device or tab of ours: the balance changed there.
    if (event.sender.id === me.id && !event.streak_end) syncWalletSoon();
  } else if (event.kind === "leaderboard") {
    stage.topGifters(event.entries);
  } else if (event.kind === "viewers") {
    stage.viewers(event.count);
  } else if (event.kind === "battle") {
    battle.take(event);
  } else if (event.kind === "settings") {
    takeMessageSettings(event.messages);
  } else if (event.kind === "stream_ended") {
    setEnded();
  }
}

// -- recharge --------------------------------------------------------------------

async function openRecharge() {
  document.getElementById("recharge").hidden = false;
  document.getElementById("sheet-backdrop").hidden = false;
  const note = document.getElementById("sheet-note");
  note.textContent = demoPayments
    ? "Demo mode: no money is charged; the purchase goes through the payment webhook."
    : "Purchases are handled by the platform's payment provider.";
  if (packages === null) {
    const answer = await fetchRetrying("/v1/coin-packages");
    packages = answer.data.packages || [];
  }
  const box = document.getElementById("packages");
  // Bigger packages give more coins per cent than the smallest one: say how much.
  const smallest = packages.reduce((a, b) => (b.coins < a.coins ? b : a));
  const base = smallest.coins / smallest.price.amount;
  box.replaceChildren(
    ...packages.map((pkg) => {
      const button = el("button", "package");
      button.type = "button";
      button.dataset.package = pkg.id;
      button.disabled = !demoPayments;
      const money = new Intl.NumberFormat("en-US", { style: "currency", currency: pkg.price.currency });
      button.append(
        el("span", "coins", `🪙 ${formatCoins(pkg.coins)}`),
        el("span", "price", money.format(pkg.price.amount / 100)),
      );
      const saving = Math.round((1 - base / (pkg.coins / pkg.price.amount)) * 100);
      if (saving >= 2) button.append(el("span", "deal", `save ${saving}%`));
      button.onclick = () => buy(pkg, button);
      return button;
    }),
  );
}

function closeRecharge() {
  document.getElementById("recharge").hidden = true;
  document.getElementById("sheet-backdrop").hidden = true;
}

async function buy(pkg, button) {
  button.disabled = true;
  const answer = await api("/v1/demo/payments", {
    method: "POST",
    auth: true,
    body: { package_id: pkg.id, idempotency_key: newId("buy") },
  });
  button.disabled = false;
  if (!answer.ok) {
    toast(answer.data.error?.message || "The purchase did not go through; try again.", { error: true });
    return;
  }
  setBalance(answer.data.coins);
  closeRecharge();
  toast(`+${formatCoins(answer.data.credited)} coins added. Happy gifting!`);
}

// -- start -----------------------------------------------------------------------

function renderPanel(catalog) {
  const gifts = [...catalog.values()].sort((a, b) => a.coins - b.coins);
  const panel = document.getElementById("gifts");
  panel.replaceChildren(
    ...gifts.map((gift) => {
      const button = el("button", "gift");
      button.type = "button";
      button.dataset.gift = gift.id;
      button.setAttribute("role", "listitem");
      button.setAttribute("aria-label", `Send ${gift.name} for ${gift.coins} coins`);
      const badge = el("span", "badge");
      badge.hidden = true;
      button.append(
        giftArt(gift),
        el("span", "gift-name", gift.name),
        el("span", "gift-price", `🪙 ${formatCoins(gift.coins)}`),
        badge,
      );
      button.onclick = () => tap(gift, button);
      return button;
    }),
  );
}

// The token's own claims, for display only (the server verifies it).
function whoAmI() {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return { id: claims.sub || "", name: claims.name || claims.sub || "" };
  } catch {
    return { id: "", name: "" };
  }
}

async function main() {
  me = whoAmI();
  const catalog = await loadCatalog();
  stage = new Stage({ catalog, me });
  battle = new BattleBar(document.getElementById("battle"), {
    ownStreamId: streamId,
    top: 0,
    winnerMs: BATTLE_WINNER_MS,
    onVisible: (visible) => document.getElementById("stage").classList.toggle("has-battle", visible),
  });
  window.__battle = () => battle.snapshot(); // test hook
  renderPanel(catalog);
  document.getElementById("balance-button").onclick = openRecharge;
  document.getElementById("sheet-close").onclick = closeRecharge;
  document.getElementById("sheet-backdrop").onclick = closeRecharge;

  document.getElementById("ask-above").onclick = changeConfirmAbove;
  showConfirmAbove();

  const path = `/v1/streams/${encodeURIComponent(streamId)}`;
  const [status, board, settings] = await Promise.all([
    fetchRetrying(path),
    fetchRetrying(`${path}/leaderboard?period=stream&limit=3`),
    fetchRetrying(`${path}/settings`),
  ]);
  const unknown = status.status === 404;
  // The streamer's display name, as they went live with it (the id when they had none).
  const host = status.ok ? status.data.streamer_name || status.data.streamer_id : "No such stream";
  document.getElementById("host-name").textContent = host;
  const hostId = status.ok ? status.data.streamer_id : streamId;
  document.getElementById("host-avatar").replaceWith(avatar({ id: hostId, name: host }));
  document.title = `${host} · Live`;
  if (unknown) {
    document.getElementById("ended-title").textContent = "No such stream";
    document.getElementById("ended-text").textContent = "Check the link: this stream does not exist.";
    document.body.dataset.stream = "unknown";
  }
  if (!status.ok || status.data.status !== "live") setEnded();
  if (settings.ok) takeMessageSettings(settings.data.messages);
  if (status.ok) {
    coinsTotal = status.data.coins_total || 0;
    takeGoal(status.data.goal);
  }
  if (board.ok) stage.topGifters(board.data.entries || []);
  const wallet = await syncWallet();
  if (!wallet.ok) {
    toast("Your link has no valid viewer token: you can watch but not send gifts.", { error: true });
  }

  if (unknown) return; // nothing to follow

  hub = new StreamHub({
    streamId,
    token,
    onMessage,
    onEvent,
    onSubscribed: (message) => {
      takeGoal(message.goal);
      if (message.battle) battle.take(message.battle, { fresh: false });
    },
    onState: (state) => {
      document.body.dataset.state = state;
      document.getElementById("conn").hidden = state === "live";
      document.getElementById("conn").textContent =
        state === "refused" ? "This link is not valid any more." : "Reconnecting…";
      if (state === "live") {
        stage.viewers(hub.viewers);
        // Gifts that never got an answer go again with the same id: charged once.
        for (const [id, sent] of pending) hub.send(giftMessage(id, sent.gift, sent.message));
      }
    },
    onResync: async () => {
      stage.viewers(hub.viewers);
      const fresh = await fetchRetrying(`${path}/leaderboard?period=stream&limit=3`);
      if (fresh.ok) stage.topGifters(fresh.data.entries || []);
      syncWallet();
    },
  });
  window.__hub = hub;
  hub.start();
}

main();
