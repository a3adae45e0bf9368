// Reading gift messages aloud on /overlay/alerts (`tts=on`). OBS does not capture
// the browser's speechSynthesis when it controls a source's audio, so the page
// plays audio the server rendered (GET /v1/streams/{id}/speech/{event_id}, WAV).
// The server decides whether a message is read (the stream's `tts` setting and
// `tts_min_coins`): a refusal leaves the alert silent. One message plays at a time.

import { flagOption, numberOption, streamId, token } from "./common.js";

const TTS = flagOption("tts", false);
const VOLUME = numberOption("volume", 50, 0, 100) / 100;

let playing = null; // { controller, audio, url } of the message being read

export function speak(eventId) {
  stopSpeech();
  if (!TTS || VOLUME === 0 || !eventId) return;
  const current = { controller: new AbortController(), audio: new Audio(), url: null };
  playing = current;
  const path = `/v1/streams/${encodeURIComponent(streamId)}/speech/${eventId}`;
  // With the token in a header, not the URL: fetched, then played from a blob.
  fetch(path, { headers: { Authorization: `Bearer ${token}` }, signal: current.controller.signal })
    .then((response) => (response.ok ? response.blob() : null))
    .then((blob) => {
      if (!blob || playing !== current) return undefined;
      current.url = URL.createObjectURL(blob);
      current.audio.src = current.url;
      current.audio.volume = VOLUME;
      return current.audio.play();
    })
    .catch(() => {
      // Aborted (skip, clear, the next message) or autoplay refused: stay silent.
    });
}

export function stopSpeech() {
  if (!playing) return;
  playing.controller.abort();
  playing.audio.pause();
  if (playing.url) URL.revokeObjectURL(playing.url);
  playing = null;
}
