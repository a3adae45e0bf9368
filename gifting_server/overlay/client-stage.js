// What happens over the stream in /client: gift banners (one per streak, its
// counter climbing in place), emoji floating up, a spotlight for big gifts, the
// top gifters and the viewer count.

import { avatar, compactCoins, el, formatCoins, giftArt } from "./common.js";

const BANNERS_SHOWN = 3;
const BANNER_QUIET_MS = 4_000; // a banner leaves after this long without a new tap
const BANNER_END_MS = 1_500; // … or this long after its streak ended
const MEDALS = ["🥇", "🥈", "🥉"];
const RINGS = ["#ffc940", "#dfe6ee", "#e08a52"];

export class Stage {
  constructor({ catalog, me }) {
    this.catalog = catalog;
    this.me = me;
    this.banners = new Map(); // `${sender}|${gift}` → {node, timer}
    this.bannerBox = document.getElementById("banners");
    this.floaters = document.getElementById("floaters");
    this.spotlight = document.getElementById("spotlight");
    // Test and debugging hook: every gift event shown over the stream, in order.
    window.__floating = [];
  }

  gift(event) {
    const key = `${event.sender.id}|${event.gift.id}`;
    const gift = { ...this.catalog.get(event.gift.id), ...event.gift };
    const banner = this.banners.get(key);
    if (event.streak_end) {
      if (banner) this.hideLater(banner, BANNER_END_MS);
      return;
    }
    window.__floating.push({
      event_id: event.event_id,
      sender_id: event.sender.id,
      name: event.sender.name,
      gift_id: gift.id,
      combo: event.combo,
    });
    const before = banner ? banner.combo : 0;
    if (banner) {
      this.bump(banner, event.combo);
    } else {
      this.addBanner(key, event, gift);
      if (gift.tier >= 3) this.spot(event, gift);
    }
    this.float(gift, Math.min(6, Math.max(1, event.combo - before)));
  }

  addBanner(key, event, gift) {
    const node = el("div", "banner");
    if (event.sender.id === this.me.id) node.classList.add("mine");
    node.dataset.sender = event.sender.id;
    node.dataset.gift = gift.id;
    const text = el("span", "banner-text");
    text.append(el("b", "", event.sender.name), el("span", "", `sent ${gift.name}`));
    const times = el("span", "times", `x${event.combo}`);
    node.append(avatar(event.sender), text, giftArt(gift), times);
    this.bannerBox.append(node);
    const banner = { key, node, times, combo: event.combo, timer: null };
    this.banners.set(key, banner);
    this.hideLater(banner, BANNER_QUIET_MS);
    // Keep the newest few: the oldest banner makes room (a map keeps insertion order).
    if (this.banners.size > BANNERS_SHOWN) this.hideLater(this.banners.values().next().value, 0);
  }

  bump(banner, combo) {
    banner.combo = combo;
    banner.times.textContent = `x${combo}`;
    banner.times.animate([{ transform: "scale(1.6)" }, { transform: "none" }], {
      duration: 300,
      easing: "cubic-bezier(.2,1.6,.4,1)",
    });
    this.hideLater(banner, BANNER_QUIET_MS);
  }

  hideLater(banner, delay) {
    clearTimeout(banner.timer);
    banner.timer = setTimeout(() => {
      banner.node.classList.add("leaving");
      if (this.banners.get(banner.key) === banner) this.banners.delete(banner.key);
      setTimeout(() => banner.node.remove(), 400);
    }, delay);
  }

  float(gift, count) {
    for (let i = 0; i < count; i++) {
      const node = giftArt(gift, "art floater");
      node.style.left = `${10 + Math.random() * 60}%`;
      node.style.setProperty("--drift", `${(Math.random() - 0.5) * 6}em`);
      node.style.setProperty("--turn", `${(Math.random() - 0.5) * 60}deg`);
      node.style.setProperty("--rise", `${2.2 + Math.random() * 1.2}s`);
      node.style.animationDelay = `${i * 90}ms`;
      node.addEventListener("animationend", () => node.remove());
      this.floaters.append(node);
    }
  }

  spot(event, gift) {
    const node = el("div", `spot tier-${gift.tier}`);
    node.append(giftArt(gift), el("b", "", `${event.sender.name} sent ${gift.name}!`));
    node.addEventListener("animationend", (e) => e.target === node && node.remove());
    this.spotlight.replaceChildren(node);
  }

  topGifters(entries) {
    const list = document.getElementById("top-gifters");
    list.replaceChildren(
      ...entries.slice(0, 3).map((entry, i) => {
        const item = el("li");
        item.title = `${entry.name}: ${formatCoins(entry.coins)} coins`;
        item.dataset.userId = entry.user_id;
        const face = avatar({ id: entry.user_id, name: entry.name });
        face.style.setProperty("--ring", RINGS[i]);
        item.append(face, el("span", "medal", MEDALS[i]), el("span", "", compactCoins(entry.coins)));
        return item;
      }),
    );
  }

  viewers(count) {
    document.getElementById("viewers").textContent =
      `${formatCoins(count)} ${count === 1 ? "viewer" : "viewers"}`;
  }
}
