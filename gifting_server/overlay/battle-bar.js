// The split score bar of a live battle (docs/battles.md): each side's colour, points
// and share, the time left until `ends_at`, each side's top contributors and, at the
// end, the winner (or a draw). One component for the battle overlay, the viewer
// client and the studio; it draws what the server's battle body says, nothing more.

import { avatar, compactCoins, el, formatCoins } from "./common.js";

export const DEFAULT_COLOURS = Object.freeze(["#ff3d7f", "#2f8cff"]);
const FINAL = new Set(["ended", "declined", "cancelled"]);
// A battle only moves forward: a state of the same battle ranked below the one shown
// is an older one (an HTTP answer overtaken by an event, or a replay after a reconnect).
const RANK = { invited: 0, live: 1, ended: 2, declined: 2, cancelled: 2 };
const TICK_MS = 250;
const ENDING_S = 10; // the timer pulses for the last seconds

export const isFinal = (battle) => Boolean(battle) && FINAL.has(battle.status);

// Whether `next` may replace `shown` (both battle bodies; `shown` may be null).
export function isNewer(shown, next) {
  if (!next || !Array.isArray(next.sides) || next.sides.length !== 2) return false;
  if (!shown || shown.battle_id !== next.battle_id) return true;
  return (RANK[next.status] ?? 0) >= (RANK[shown.status] ?? 0);
}

// The sides as shown: the page's own stream on the left when it is one of them.
export function orderedSides(battle, ownStreamId) {
  const [a, b] = battle.sides;
  return b.stream_id === ownStreamId ? [b, a] : [a, b];
}

// The left side's share of the points, in percent (even while nobody scored).
export function shareOf(left, right) {
  return left + right > 0 ? (left * 100) / (left + right) : 50;
}

export function clock(ms) {
  const seconds = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

export const sideName = (side) => side.streamer?.name || side.streamer?.id || side.stream_id;

// The end in words: who won, or a draw.
export function outcome(battle) {
  if (battle.winner === null || battle.winner === undefined) return "Draw!";
  const side = battle.sides.find((s) => s.stream_id === battle.winner);
  const how = battle.reason === "forfeit" ? " (the other stream ended)" : "";
  return `${side ? sideName(side) : battle.winner} wins!${how}`;
}

export class BattleBar {
  // `winnerMs`: how long an ended battle's banner stays before the bar hides
  // (Infinity: it stays). `top`: contributors listed per side (0: none).
  // `onVisible(visible)`: called whenever the bar shows or hides.
  constructor(root, { ownStreamId = "", colours = DEFAULT_COLOURS, top = 3, winnerMs = 10_000, onVisible } = {}) {
    this.root = root;
    this.ownStreamId = ownStreamId;
    this.top = top;
    this.winnerMs = winnerMs;
    this.onVisible = onVisible || (() => {});
    this.battle = null;
    this.bannerUntil = 0;
    this.timer = null;
    this.hideTimer = null;
    root.classList.add("battle");
    root.style.setProperty("--battle-left", colours[0]);
    root.style.setProperty("--battle-right", colours[1]);
    this.build();
    root.hidden = true;
  }

  build() {
    const side = (where) => {
      const name = el("span", `battle-name ${where}`);
      const points = el("b", `battle-points ${where}`, "0");
      return { name, points };
    };
    this.left = side("left");
    this.right = side("right");
    this.timerNode = el("span", "battle-timer", "0:00");
    const head = el("div", "battle-head");
    head.append(this.left.name, this.timerNode, this.right.name);
    this.fill = el("div", "battle-fill");
    this.track = el("div", "battle-track");
    this.track.setAttribute("role", "meter");
    this.track.setAttribute("aria-valuemin", "0");
    this.track.setAttribute("aria-valuemax", "100");
    this.vs = el("span", "battle-vs", "VS");
    this.track.append(this.fill, this.left.points, this.vs, this.right.points);
    this.tops = [el("ol", "battle-top left"), el("ol", "battle-top right")];
    const tops = el("div", "battle-tops");
    tops.append(...this.tops);
    tops.hidden = this.top === 0;
    this.banner = el("div", "battle-banner");
    this.banner.setAttribute("role", "status");
    this.banner.hidden = true;
    this.root.replaceChildren(head, this.track, tops, this.banner);
  }

  // A battle body (an event, an HTTP answer, or `subscribed`'s `battle`). `fresh`:
  // it just happened; false for a state found on arrival, whose end is only
  // celebrated while it is recent.
  take(battle, { fresh = true } = {}) {
    if (!isNewer(this.battle, battle)) return;
    const endedNow = battle.status === "ended" && !(this.battle?.battle_id === battle.battle_id && this.battle.status === "ended");
    this.battle = battle;
    if (endedNow) {
      const recent = fresh || Date.now() < (battle.ends_at || 0) + this.winnerMs;
      this.bannerUntil = recent ? Date.now() + this.winnerMs : 0;
      clearTimeout(this.hideTimer);
      if (recent && Number.isFinite(this.winnerMs)) {
        this.hideTimer = setTimeout(() => this.render(), this.winnerMs + 50);
      }
    }
    this.render();
  }

  get visible() {
    const battle = this.battle;
    if (!battle) return false;
    if (battle.status === "live") return true;
    return battle.status === "ended" && Date.now() < this.bannerUntil;
  }

  render() {
    const battle = this.battle;
    const visible = this.visible;
    const changed = this.root.hidden === visible;
    this.root.hidden = !visible;
    this.root.dataset.status = battle ? battle.status : "none";
    if (battle && visible) this.draw(battle);
    this.runTimer(visible && battle.status === "live");
    if (changed) this.onVisible(visible);
  }

  draw(battle) {
    const [left, right] = orderedSides(battle, this.ownStreamId);
    const share = shareOf(left.points, right.points);
    this.fill.style.width = `${share}%`;
    this.fill.classList.toggle("is-edge", share === 0 || share === 100); // no divider to show
    this.track.setAttribute("aria-valuenow", String(Math.round(share)));
    this.track.dataset.share = String(Math.round(share));
    for (const [node, side] of [[this.left, left], [this.right, right]]) {
      node.name.textContent = sideName(side);
      node.points.textContent = compactCoins(side.points);
      node.points.dataset.points = String(side.points);
      node.points.title = `${formatCoins(side.points)} points`;
    }
    [left, right].forEach((side, i) => this.drawTop(this.tops[i], side.top || []));
    const ended = battle.status === "ended";
    this.banner.hidden = !ended;
    if (ended) {
      this.banner.textContent = `${battle.winner === null || battle.winner === undefined ? "🤝" : "🏆"} ${outcome(battle)}`;
      this.banner.dataset.winner = battle.winner ?? "";
      const winnerSide = battle.winner === left.stream_id ? "left" : battle.winner === right.stream_id ? "right" : "draw";
      this.root.dataset.winner = winnerSide;
    } else {
      delete this.root.dataset.winner;
    }
    this.tickClock();
  }

  drawTop(list, top) {
    list.replaceChildren(
      ...top.slice(0, this.top).map((entry) => {
        const item = el("li", "battle-contributor");
        item.append(
          avatar({ id: entry.user_id, name: entry.name }),
          el("span", "battle-contributor-name", entry.name),
          el("span", "battle-contributor-coins", compactCoins(entry.coins)),
        );
        return item;
      }),
    );
  }

  runTimer(on) {
    if (on && this.timer === null) this.timer = setInterval(() => this.tickClock(), TICK_MS);
    if (!on && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  tickClock() {
    const battle = this.battle;
    if (!battle) return;
    if (battle.status === "ended") {
      this.timerNode.textContent = "FINAL";
      this.timerNode.classList.remove("is-ending");
      return;
    }
    const left = (battle.ends_at || 0) - Date.now();
    this.timerNode.textContent = clock(left);
    this.timerNode.classList.toggle("is-ending", left <= ENDING_S * 1000);
  }

  // What the bar shows, for tests and debugging.
  snapshot() {
    const battle = this.battle;
    if (!battle) return { visible: false, status: "none" };
    const [left, right] = orderedSides(battle, this.ownStreamId);
    return {
      visible: this.visible,
      battle_id: battle.battle_id,
      status: battle.status,
      left: { stream_id: left.stream_id, points: left.points },
      right: { stream_id: right.stream_id, points: right.points },
      share: Math.round(shareOf(left.points, right.points)),
      timer: this.timerNode.textContent,
      banner: this.banner.hidden ? null : this.banner.textContent,
      winner: battle.status === "ended" ? (battle.winner ?? null) : undefined,
    };
  }
}
