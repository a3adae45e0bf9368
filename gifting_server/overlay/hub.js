// One WebSocket to /v1/ws on this page's origin, following one stream.
//
// It reconnects with exponential backoff and resubscribes with `since` (the
// last event id it handed on), so neither a server restart nor a network drop
// loses an event; and since a stream's event ids only grow, dropping every
// event at or below that id hands each event to `onEvent` exactly once, in order.

import { showRefused } from "./common.js";

const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 5_000;
const PING_EVERY_MS = 10_000;
const SILENT_LIMIT_MS = 25_000; // no frame for this long: the link is dead, start over
// Every close code the server sends and what to do next: "since" = reconnect with
// backoff and resubscribe with `since`; "new_token" = retrying with this token
// cannot help. The one mirror of gifting_server/errors.py:CloseCode (a test checks).
const CLOSE_RULES = Object.freeze({
  1002: "since",
  1007: "since",
  1009: "since",
  1011: "since",
  1012: "since",
  4001: "new_token",
  4003: "new_token",
  4008: "since",
  4009: "since",
});

export class StreamHub {
  // `backfill`: on the first subscribe, also hand on up to this many of the stream's
  // latest events from its history (a page that lists what happened before it opened).
  constructor({ streamId, token, onEvent, onMessage, onState, onResync, onSubscribed, backfill = 0 }) {
    this.backfill = backfill;
    this.backfilling = false;
    this.streamId = streamId;
    this.token = token;
    this.onEvent = onEvent || (() => {});
    // Every `subscribed` of this stream: it carries the stream's state where the page
    // starts (alerts_paused, goal; docs/websocket.md), which the events after it change.
    this.onSubscribed = onSubscribed || (() => {});
    this.onMessage = onMessage || (() => {});
    this.onState = onState || (() => {});
    this.onResync = onResync || (() => {});
    this.lastEventId = null; // null until the first `subscribed` says where we start
    this.state = "connecting"; // connecting | live | offline | refused
    this.viewers = 0;
    this.attempts = 0;
    this.socket = null;
    this.retryTimer = null;
    this.lastFrameAt = 0;
    setInterval(() => this.heartbeat(), PING_EVERY_MS);
    addEventListener("online", () => this.reconnectNow());
  }

  start() {
    if (!this.streamId || !this.token) {
      this.setState("refused", "the page URL needs stream_id and token");
      return this;
    }
    this.connect();
    return this;
  }

  get live() {
    return this.state === "live";
  }

  send(message) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/v1/ws?token=${encodeURIComponent(this.token)}`;
    let socket;
    try {
      socket = new WebSocket(url, "gifting.v1.json");
    } catch {
      this.retry();
      return;
    }
    this.socket = socket;
    this.lastFrameAt = Date.now();
    socket.onopen = () => {
      this.backfilling = false;
      const subscribe = { type: "subscribe", stream_id: this.streamId };
      if (this.lastEventId !== null) subscribe.since = this.lastEventId;
      socket.send(JSON.stringify(subscribe));
    };
    socket.onmessage = (frame) => {
      this.lastFrameAt = Date.now();
      let message;
      try {
        message = JSON.parse(frame.data);
      } catch {
        return;
      }
      this.receive(message);
    };
    socket.onclose = (close) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (CLOSE_RULES[close.code] === "new_token") {
        this.setState("refused", close.reason);
        return;
      }
      this.retry();
    };
  }

  receive(message) {
    if (message.type === "subscribed" && message.stream_id === this.streamId) {
      this.viewers = message.viewers;
      if (this.lastEventId === null && this.backfill > 0 && message.last_event_id > 0) {
        // Subscribe again from a little before where the stream is: the history
        // replays those events, then live ones follow. Events of the first subscription
        // that arrive meanwhile are dropped: the second one replays them in order.
        this.lastEventId = Math.max(0, message.last_event_id - this.backfill);
        this.backfilling = true;
        this.send({ type: "subscribe", stream_id: this.streamId, since: this.lastEventId });
        return;
      }
      if (this.backfilling) {
        this.backfilling = false;
        // Older than the history: no backfill, only what comes from now on.
        if (!message.recovered) this.lastEventId = message.last_event_id;
      } else if (this.lastEventId === null) {
        this.lastEventId = message.last_event_id;
      } else if (!message.recovered) {
        // The gap is older than the server's history: after a reconnect, or sent
        // unasked when the server itself lost events it cannot replay (or this is
        // another deployment). Start from here and let the page refetch its state.
        this.lastEventId = message.last_event_id;
        this.onResync();
      }
      this.attempts = 0;
      try {
        this.onSubscribed(message);
      } catch (error) {
        console.error("subscribed handler failed", message, error);
      }
      this.setState("live");
    } else if (message.type === "events" && message.stream_id === this.streamId) {
      if (this.backfilling) return;
      for (const event of message.events) {
        if (this.lastEventId !== null && event.event_id <= this.lastEventId) continue;
        this.lastEventId = event.event_id;
        if (event.kind === "viewers") this.viewers = event.count;
        try {
          this.onEvent(event);
        } catch (error) {
          console.error("event handler failed", event, error);
        }
      }
      return;
    } else if (message.type === "error" && !message.id) {
      // An answer to our subscribe: a token for another stream, or a server
      // that could not subscribe just now (try again).
      console.warn(`stream hub: ${message.code}: ${message.message}`);
      if (message.code === "forbidden") {
        this.drop();
        this.setState("refused", message.message);
        return;
      }
      if (message.code === "service_unavailable") {
        this.drop();
        this.retry();
        return;
      }
    }
    this.onMessage(message);
  }

  drop() {
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onclose = null;
      socket.close();
    }
  }

  retry() {
    this.setState("offline");
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempts);
    this.attempts += 1;
    // Jitter, so that a restarted server is not hit by every overlay at once.
    this.retryTimer = setTimeout(() => this.connect(), delay * (0.75 + Math.random() * 0.5));
  }

  reconnectNow() {
    if (this.state === "offline" && this.retryTimer !== null) this.connect();
  }

  heartbeat() {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastFrameAt > SILENT_LIMIT_MS) {
      // A half-open link can take minutes to report its close: drop it now.
      this.drop();
      this.retry();
      return;
    }
    this.send({ type: "ping" });
  }

  setState(state, detail = "") {
    if (this.state === state) return;
    this.state = state;
    this.onState(state, detail);
  }
}

// An overlay's link to its stream. Offline it just shows nothing new (no error
// text on the stream); a refused token shows how to get a working link.
export function followStream(streamId, token, { onEvent, onResync, onSubscribed, backfill }) {
  const hub = new StreamHub({
    streamId,
    token,
    onEvent,
    onResync,
    onSubscribed,
    backfill,
    onState: (state, detail) => {
      document.body.dataset.state = state;
      if (state === "refused") showRefused(detail);
    },
  });
  window.__hub = hub; // for the tests
  hub.start();
  return hub;
}
