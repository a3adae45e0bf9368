// /overlay/goal: a progress bar toward a coin target for the stream, live.
// The streamer's goal, held by the server, wins: it comes with `subscribed` (and
// GET /v1/streams/{id}), then in `goal` events, and every gift event moves it by
// its `coins_total` less the goal's `counted_from`. With no goal set on the server,
// the bar counts every coin the stream received toward `target=` of the URL.

import {
  applyLook,
  fetchRetrying,
  formatCoins,
  numberOption,
  streamId,
  textOption,
  token,
} from "./common.js";
import { followStream } from "./hub.js";

const URL_TARGET = Math.round(numberOption("target", 1000, 1, Number.MAX_SAFE_INTEGER));
const URL_TITLE = textOption("title", "Gift goal");
let target = URL_TARGET;
let title = URL_TITLE;
let countedFrom = 0; // the stream's coins_total when the server's goal began
let coinsTotal = 0;
let serverGoal = false;

const card = document.getElementById("goal");
const fill = document.getElementById("fill");
const bar = document.getElementById("bar");

// Test and debugging hook: what the bar shows.
window.__goal = { progress: 0, target, percent: 0, title, server: serverGoal };

function render() {
  const progress = Math.max(0, coinsTotal - countedFrom);
  const percent = Math.min(100, Math.floor((progress * 100) / target));
  fill.style.width = `${Math.min(100, (progress * 100) / target)}%`;
  bar.setAttribute("aria-valuenow", String(percent));
  bar.dataset.percent = String(percent);
  document.getElementById("title").textContent = title;
  document.getElementById("percent").textContent = `${percent}%`;
  document.getElementById("progress").textContent = formatCoins(progress);
  document.getElementById("target").textContent = formatCoins(target);
  const reached = progress >= target;
  card.classList.toggle("is-reached", reached);
  document.getElementById("reached").hidden = !reached;
  window.__goal = { progress, target, percent, title, server: serverGoal };
}

// The server's goal: {target, title, counted_from, progress}; null when none is set.
function takeGoal(goal) {
  if (!goal || !(goal.target > 0)) return;
  serverGoal = true;
  target = goal.target;
  title = goal.title || URL_TITLE;
  countedFrom = goal.counted_from;
  coinsTotal = goal.counted_from + goal.progress;
}

async function refetch() {
  const answer = await fetchRetrying(`/v1/streams/${encodeURIComponent(streamId)}`);
  if (answer.ok) {
    coinsTotal = answer.data.coins_total || 0;
    takeGoal(answer.data.goal);
    render();
  }
}

function onEvent(event) {
  if (event.kind === "gift" && !event.test && Number.isFinite(event.coins_total)) {
    coinsTotal = Math.max(coinsTotal, event.coins_total);
    render();
  } else if (event.kind === "goal") {
    takeGoal(event);
    render();
  }
}

function onSubscribed(message) {
  takeGoal(message.goal);
  render();
}

async function main() {
  applyLook(26);
  render();
  card.hidden = false;
  await refetch();
  followStream(streamId, token, { onEvent, onResync: refetch, onSubscribed });
}

main();
