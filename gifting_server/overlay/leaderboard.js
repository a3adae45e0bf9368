// /overlay/leaderboard: the top gifters of a period, live, with a smooth
// reorder (FLIP: each row slides from where it was to where it now is).
//
// period=stream follows the `leaderboard` events the server publishes (at most
// once a second); day/week/all are refetched after gifts and every `refresh` s.
// Every period starts from GET /v1/streams/{id}/leaderboard, so a refresh of the
// browser source shows the board at once.

import {
  applyLook,
  avatar,
  choiceOption,
  el,
  fetchRetrying,
  formatCoins,
  numberOption,
  streamId,
  textOption,
  token,
} from "./common.js";
import { followStream } from "./hub.js";

// The leaderboard periods (gifting_server/ledger/streams.py:PERIODS; a test keeps them equal).
const PERIOD_LABEL = { stream: "This stream", day: "Today", week: "This week", all: "All time" };
const PERIOD = choiceOption("period", Object.keys(PERIOD_LABEL), "stream");
const LIMIT = Math.round(numberOption("limit", 5, 1, 100));
const REFRESH_MS = numberOption("refresh", 15, 2, 3600) * 1000;
const EVENTS_CARRY = 10; // `leaderboard` events hold the top 10
const MOVE_MS = 700;

const board = document.getElementById("board");
const list = document.getElementById("rows");
const empty = document.getElementById("empty");
const rows = new Map(); // user id → its <li>, reused so that it can glide
let refetchTimer = null;

// Test and debugging hook: the entries on screen.
window.__leaderboard = [];

function render(entries) {
  entries = entries.slice(0, LIMIT);
  window.__leaderboard = entries;
  const before = new Map([...rows].map(([id, row]) => [id, row.getBoundingClientRect().top]));
  const oldRank = new Map([...rows].map(([id, row]) => [id, Number(row.dataset.rank)]));
  const keep = new Set();
  for (const entry of entries) {
    keep.add(entry.user_id);
    let row = rows.get(entry.user_id);
    if (!row) {
      row = createRow(entry);
      rows.set(entry.user_id, row);
    }
    row.className = `row rank-${entry.rank}`;
    row.dataset.rank = String(entry.rank);
    row.querySelector(".rank").textContent = String(entry.rank);
    row.querySelector(".name").textContent = entry.name;
    row.querySelector(".amount").textContent = formatCoins(entry.coins);
    list.append(row); // appending in rank order moves existing rows into place
  }
  for (const [id, row] of rows) {
    if (!keep.has(id)) {
      row.remove();
      rows.delete(id);
    }
  }
  empty.hidden = entries.length > 0;
  // FLIP: play each row from its old position to its new one.
  for (const entry of entries) {
    const row = rows.get(entry.user_id);
    const top = before.get(entry.user_id);
    if (top === undefined) {
      row.animate(
        [{ opacity: 0, transform: "translateX(-1.5em)" }, { opacity: 1, transform: "none" }],
        { duration: 450, easing: "ease-out" },
      );
      continue;
    }
    const shift = top - row.getBoundingClientRect().top;
    if (shift) {
      row.animate([{ transform: `translateY(${shift}px)` }, { transform: "none" }], {
        duration: MOVE_MS,
        easing: "cubic-bezier(.2,.8,.2,1)",
      });
    }
    if (entry.rank < oldRank.get(entry.user_id)) {
      row.animate(
        [{ boxShadow: "0 0 0 2px #ffc940, 0 0 1em rgba(255, 201, 64, 0.7)" }, { boxShadow: "none" }],
        { duration: 1400, easing: "ease-out" },
      );
    }
  }
}

function createRow(entry) {
  const row = el("li", "row");
  row.dataset.userId = entry.user_id;
  const coins = el("span", "coins");
  coins.append(el("span", "amount"), el("span", "unit", "🪙"));
  row.append(el("span", "rank"), avatar({ id: entry.user_id, name: entry.name }), el("span", "name"), coins);
  return row;
}

async function refetch() {
  const query = `period=${PERIOD}&limit=${LIMIT}`;
  const answer = await fetchRetrying(`/v1/streams/${encodeURIComponent(streamId)}/leaderboard?${query}`);
  if (answer.ok) render(answer.data.entries || []);
}

// Gifts arrive in bursts: refetch once they settle, not once per gift.
function refetchSoon() {
  clearTimeout(refetchTimer);
  refetchTimer = setTimeout(refetch, 800);
}

function onEvent(event) {
  const fromEvents = PERIOD === "stream" && LIMIT <= EVENTS_CARRY;
  if (event.kind === "leaderboard" && event.period === "stream" && fromEvents) {
    render(event.entries);
  } else if (event.kind === "gift" && !event.streak_end && !event.test && !fromEvents) {
    refetchSoon();
  }
}

async function main() {
  applyLook(22);
  document.getElementById("title").textContent = textOption("title", "Top gifters");
  document.getElementById("period").textContent = PERIOD_LABEL[PERIOD];
  board.hidden = false;
  await refetch();
  setInterval(refetch, PERIOD === "stream" ? Math.max(REFRESH_MS, 60_000) : REFRESH_MS);
  followStream(streamId, token, { onEvent, onResync: refetch });
}

main();
