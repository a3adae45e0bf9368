// /overlay/battle: the stream's live battle (docs/battles.md) as a split score bar,
// the time left, each side's top contributors and the winner at the end. Nothing
// shows while the stream is not in a battle. The state where the page starts comes
// with `subscribed` (its `battle`), every change after it in `battle` events.

import { applyLook, colourOption, flagOption, numberOption, streamId, token } from "./common.js";
import { followStream } from "./hub.js";
import { BattleBar, DEFAULT_COLOURS } from "./battle-bar.js";

const compact = flagOption("compact", false);
applyLook(compact ? 20 : 24);
document.body.classList.toggle("compact", compact);

const bar = new BattleBar(document.getElementById("battle"), {
  ownStreamId: streamId,
  colours: [colourOption("color", DEFAULT_COLOURS[0]), colourOption("opponent_color", DEFAULT_COLOURS[1])],
  top: compact ? 0 : Math.round(numberOption("top", 3, 0, 3)),
  winnerMs: numberOption("winner_s", 10, 1, 3600) * 1000,
});

// Test and debugging hook: what the overlay shows.
window.__battle = () => bar.snapshot();

followStream(streamId, token, {
  onEvent: (event) => {
    if (event.kind === "battle") bar.take(event);
  },
  onSubscribed: (message) => {
    if (message.battle) bar.take(message.battle, { fresh: false });
  },
});
