// The gifts of a stream as a list of streaks, newest first: one row per streak (the
// same sender tapping the same gift), its counter climbing with each `gift` event,
// closed by the streak's end event. Shared by the studio's activity feed and the
// feed overlay; it does no drawing.

const KEEP = 500; // rows kept; older ones fall off the end

export class StreakFeed {
  constructor({ onChange }) {
    this.rows = []; // newest first
    this.open = new Map(); // `${sender}|${gift}` → the row of a running streak
    this.onChange = onChange || (() => {});
  }

  // Takes one event of the stream; returns the row it made or changed, if any.
  take(event) {
    if (event.kind !== "gift") return null;
    if (event.test) {
      // Apart from any streak: it only shows what an alert looks like.
      return this.add(event, { test: true, ended: true });
    }
    const key = `${event.sender.id}|${event.gift.id}`;
    const row = this.open.get(key);
    if (event.streak_end) {
      if (!row) {
        // Its start is older than what the page saw: the end alone makes the row.
        return this.add(event, { ended: true });
      }
      this.open.delete(key);
      return this.change(row, event, { ended: true, endEventId: event.event_id });
    }
    if (row) return this.change(row, event, {});
    const added = this.add(event, { ended: false });
    this.open.set(key, added);
    return added;
  }

  add(event, { test = false, ended }) {
    const row = {
      key: `${event.event_id}`,
      sender: event.sender,
      gift: event.gift,
      combo: event.combo,
      message: event.message || "",
      test,
      ended,
      firstEventId: event.event_id,
      lastEventId: event.event_id,
      endEventId: ended ? event.event_id : null,
      ts: event.ts || Date.now(),
    };
    row.coins = row.gift.coins * row.combo;
    this.rows.unshift(row);
    if (this.rows.length > KEEP) {
      for (const old of this.rows.splice(KEEP)) {
        if (this.open.get(`${old.sender.id}|${old.gift.id}`) === old) {
          this.open.delete(`${old.sender.id}|${old.gift.id}`);
        }
      }
    }
    this.onChange(row, true);
    return row;
  }

  change(row, event, { ended = false, endEventId = null }) {
    row.combo = Math.max(row.combo, event.combo);
    row.coins = row.gift.coins * row.combo;
    if (event.message) row.message = event.message;
    row.lastEventId = event.event_id;
    row.ts = event.ts || row.ts;
    if (ended) row.ended = true;
    if (endEventId !== null) row.endEventId = endEventId;
    this.onChange(row, false);
    return row;
  }

  // The server could not replay a gap: running streaks may have ended in it.
  endAll() {
    for (const row of this.open.values()) row.ended = true;
    this.open.clear();
  }
}

// The event to replay for a row: its streak's end (the final count) when seen.
export const replayEventId = (row) => row.endEventId || row.lastEventId;
