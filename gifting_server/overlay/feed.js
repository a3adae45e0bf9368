// /overlay/feed: the latest gifts of the stream, one row per streak (its counter
// climbing), newest on top, with each gift's message; `mode=ticker` puts them on one
// line that scrolls. Options: limit (rows), min_coins, duration (seconds a row stays;
// 0 = until pushed out), theme, font_size. It starts with the stream's latest gifts
// from the history, and reconnects with backoff and `since` like every overlay.

import {
  applyLook,
  choiceOption,
  el,
  formatCoins,
  giftArt,
  loadCatalog,
  numberOption,
  streamId,
  token,
} from "./common.js";
import { followStream } from "./hub.js";
import { StreakFeed } from "./feed-model.js";

const LIMIT = Math.round(numberOption("limit", 6, 1, 50));
const MIN_COINS = numberOption("min_coins", 0, 0, Number.MAX_SAFE_INTEGER);
const DURATION_MS = numberOption("duration", 0, 0, 3600) * 1000;
const MODE = choiceOption("mode", ["list", "ticker"], "list");
const BACKFILL = 200; // events read back from the history on open

const list = document.getElementById("feed");
const nodes = new Map(); // row key → its <li>
let catalog = new Map();

// Test and debugging hook: the rows on screen, newest first.
window.__feed = [];

const feed = new StreakFeed({ onChange: (row, added) => draw(row, added) });

function shown(row) {
  return row.coins >= MIN_COINS;
}

function draw(row, added) {
  let node = nodes.get(row.key);
  if (!shown(row)) return;
  if (!node) {
    node = el("li", `feed-row${row.test ? " is-test" : ""}`);
    node.dataset.key = row.key;
    nodes.set(row.key, node);
    list.prepend(node);
    if (DURATION_MS > 0) setTimeout(() => drop(row.key), DURATION_MS);
  } else if (added) {
    list.prepend(node);
  }
  const gift = { ...catalog.get(row.gift.id), ...row.gift };
  const text = el("span", "feed-text");
  text.append(el("b", "feed-name", row.sender.name), document.createTextNode(" sent "));
  text.append(el("span", "feed-gift", gift.name), el("span", "feed-count", ` x${row.combo}`));
  const parts = [giftArt(gift), text, el("span", "feed-coins", `🪙 ${formatCoins(row.coins)}`)];
  if (row.test) parts.push(el("span", "feed-badge", "TEST"));
  if (row.message) parts.push(el("span", "feed-message", row.message));
  node.replaceChildren(...parts);
  while (list.children.length > LIMIT) drop(list.lastElementChild.dataset.key);
  window.__feed = [...list.children].map((child) => ({
    key: child.dataset.key,
    text: child.textContent,
  }));
}

function drop(key) {
  const node = nodes.get(key);
  if (!node) return;
  nodes.delete(key);
  node.remove();
  window.__feed = window.__feed.filter((row) => row.key !== key);
}

async function main() {
  applyLook(22);
  document.body.classList.add(`mode-${MODE}`);
  catalog = await loadCatalog();
  followStream(streamId, token, {
    onEvent: (event) => feed.take(event),
    onResync: () => feed.endAll(),
    backfill: BACKFILL,
  });
}

main();
