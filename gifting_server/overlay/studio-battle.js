// The studio's battle card (docs/battles.md): invite another live stream to a battle,
// answer an invite (accept, decline), cancel one's own before it starts, and follow
// the battle live. The state comes from the stream's `battle` events (and
// `subscribed`), both streams get them; the answers of the HTTP calls show at once.

import { api, newId } from "./common.js";
import { BattleBar, isFinal, isNewer, outcome, sideName } from "./battle-bar.js";

const RANGE_FALLBACK = [60, 600]; // seconds, as config/default.toml sets them

// Each refusal of the battle endpoints, in words: the server's message says which
// rule was met (not live, already in a battle, …).
const REFUSALS = {
  battle_conflict: (m) => `The battle cannot go ahead: ${m}.`,
  unknown_battle: () => "That battle does not exist any more.",
  unknown_stream: () =>
    "There is no stream with that id: ask the other streamer for the stream id they go live with.",
  forbidden: (m) => `Not allowed: ${m}.`,
  invalid_request: (m) => `Check the battle's settings: ${m}.`,
  idempotency_conflict: () => "That invite was already sent with other settings: try again.",
};

let ctx = null;
let bar = null;
let battle = null; // the battle shown (a body), or null
let range = RANGE_FALLBACK;
const $ = (id) => document.getElementById(id);

function explain(answer) {
  const error = answer.data.error || {};
  const words = REFUSALS[error.code];
  return words && answer.status !== 0 ? words(error.message || error.code) : ctx.explain(answer);
}

const mine = (b) => b.sides[0].stream_id === ctx.streamId; // this stream invited
const other = (b) => (mine(b) ? b.sides[1] : b.sides[0]);

function secondsUntil(ms) {
  return Math.max(0, Math.ceil((ms - Date.now()) / 1000));
}

// What the card says about the battle, for each of its states.
function describe(b) {
  const them = sideName(other(b));
  switch (b.status) {
    case "invited":
      return mine(b)
        ? `Waiting for ${them} to accept your ${b.duration_s}-second battle…`
        : `${them} invites you to a ${b.duration_s}-second battle.`;
    case "live":
      return `Battle against ${them}: every coin gifted to either stream counts.`;
    case "ended":
      return `Battle over: ${outcome(b)}`;
    case "declined":
      return mine(b) ? `${them} declined your battle.` : `You declined ${them}'s battle.`;
    case "cancelled":
      return {
        expired: `The invite to ${them} expired unanswered.`,
        stream_ended: `The battle with ${them} was called off: a stream ended.`,
        failed: `The invite to ${them} could not be set up: try again.`,
      }[b.reason] || `The battle with ${them} was cancelled.`;
    default:
      return "";
  }
}

function render() {
  const b = battle;
  const status = b ? b.status : "none";
  window.__studio.battle = b ? { battle_id: b.battle_id, status, winner: b.winner } : null;
  $("battle-state").dataset.status = status;
  $("battle-state").textContent = { none: "none", invited: "invite", live: "LIVE", ended: "over" }[status] || status;
  $("battle-text").textContent = b ? describe(b) : "Invite another live stream: for the time you choose, every coin gifted to either stream scores for it.";
  $("battle-answer").hidden = !(b && status === "invited" && !mine(b));
  $("battle-waiting").hidden = !(b && status === "invited" && mine(b));
  $("battle-form").hidden = Boolean(b) && !isFinal(b);
}

export function takeBattle(body, { fresh = true, keepNote = false } = {}) {
  if (!isNewer(battle, body)) return;
  // A note about the last step is stale once the battle moved on.
  if (ctx && !keepNote && battle && battle.status !== body.status) ctx.note("battle-note", "");
  battle = body;
  if (bar) {
    bar.take(body, { fresh });
    render();
  }
}

async function act(path, body) {
  const answer = await api(path, { method: "POST", auth: ctx.token, body });
  if (!answer.ok) {
    ctx.note("battle-note", explain(answer), "error");
    // The battle moved on unseen (a dropped connection): show where it stands now.
    if (battle && answer.data.error?.code === "battle_conflict" && path.startsWith(battlePath())) {
      const now = await api(battlePath());
      if (now.ok) takeBattle(now.data, { keepNote: true });
    }
    return null;
  }
  ctx.note("battle-note", "");
  takeBattle(answer.data);
  return answer.data;
}

async function invite(event) {
  event.preventDefault();
  const opponent = $("battle-opponent").value.trim();
  const duration = Number($("battle-duration").value);
  if (!opponent) {
    ctx.note("battle-note", "Write the stream id of the stream you want to battle.", "error");
    return;
  }
  if (!Number.isInteger(duration) || duration < range[0] || duration > range[1]) {
    ctx.note("battle-note", `A battle lasts ${range[0]} to ${range[1]} seconds.`, "error");
    return;
  }
  const sent = await act("/v1/battles", {
    stream_id: ctx.streamId,
    opponent_stream_id: opponent,
    duration_s: duration,
    idempotency_key: newId("battle"),
  });
  if (sent) ctx.note("battle-note", `Invite sent to ${sideName(other(sent))}.`);
}

const battlePath = () => (battle ? `/v1/battles/${encodeURIComponent(battle.battle_id)}` : "");
const answerPath = (action) => `${battlePath()}/${action}`;

// The lengths this server allows, from its OpenAPI document (config [battles]).
async function loadRange() {
  const answer = await api("/openapi.json");
  const duration = answer.data?.components?.schemas?.BattleRequest?.properties?.duration_s;
  if (Number.isInteger(duration?.minimum) && Number.isInteger(duration?.maximum)) {
    range = [duration.minimum, duration.maximum];
  }
  $("battle-range").textContent = `${range[0]}–${range[1]}`;
  const input = $("battle-duration");
  input.min = String(range[0]);
  input.max = String(range[1]);
  const value = Number(input.value);
  if (!(value >= range[0] && value <= range[1])) input.value = String(Math.min(range[1], Math.max(range[0], 120)));
}

export function startBattle(context) {
  ctx = context;
  bar = new BattleBar($("battle-bar"), { ownStreamId: ctx.streamId, top: 3, winnerMs: Infinity });
  $("battle-form").onsubmit = invite;
  $("battle-accept").onclick = () => act(answerPath("accept"));
  $("battle-decline").onclick = () => act(answerPath("decline"));
  $("battle-cancel").onclick = () => act(answerPath("cancel"));
  // While an invite waits, say how long it has left.
  setInterval(() => {
    if (battle?.status === "invited" && battle.expires_at) {
      $("battle-expiry").textContent = `The invite expires in ${secondsUntil(battle.expires_at)} s.`;
    } else {
      $("battle-expiry").textContent = "";
    }
  }, 500);
  loadRange();
  render();
}
