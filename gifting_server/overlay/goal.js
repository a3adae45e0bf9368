// /overlay/goal: a progress bar toward a coin target for the stream, live.
// It starts from GET /v1/streams/{id} (coins received so far) and follows the
// `coins_total` every gift event carries.

import {
  applyLook,
  fetchRetrying,
  formatCoins,
  numberOption,
  params,
  streamId,
  textOption,
  token,
} from "./common.js";
import { followStream } from "./hub.js";

let target = Math.round(numberOption("target", 1000, 1, Number.MAX_SAFE_INTEGER));
let progress = 0;

const card = document.getElementById("goal");
const fill = document.getElementById("fill");
const bar = document.getElementById("bar");

// Test and debugging hook: what the bar shows.
window.__goal = { progress, target, percent: 0 };

function render() {
  const percent = Math.min(100, Math.floor((progress * 100) / target));
  fill.style.width = `${Math.min(100, (progress * 100) / target)}%`;
  bar.setAttribute("aria-valuenow", String(percent));
  bar.dataset.percent = String(percent);
  document.getElementById("percent").textContent = `${percent}%`;
  document.getElementById("progress").textContent = formatCoins(progress);
  document.getElementById("target").textContent = formatCoins(target);
  const reached = progress >= target;
  card.classList.toggle("is-reached", reached);
  document.getElementById("reached").hidden = !reached;
  window.__goal = { progress, target, percent };
}

async function refetch() {
  const answer = await fetchRetrying(`/v1/streams/${encodeURIComponent(streamId)}`);
  if (answer.ok) {
    progress = answer.data.coins_total || 0;
    render();
  }
}

function onEvent(event) {
  if (event.kind === "gift" && Number.isFinite(event.coins_total)) {
    progress = event.coins_total;
    render();
  } else if (event.kind === "goal") {
    progress = event.progress;
    if (!params.has("target") && event.target > 0) target = event.target;
    render();
  }
}

async function main() {
  applyLook(26);
  document.getElementById("title").textContent = textOption("title", "Gift goal");
  render();
  card.hidden = false;
  await refetch();
  followStream(streamId, token, { onEvent, onResync: refetch });
}

main();
