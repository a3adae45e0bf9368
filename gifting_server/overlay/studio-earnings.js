// The studio's earnings: diamonds available and held (GET /v1/wallet), the cash-out
// rules (GET /v1/cashouts/rules), the cash-out form (POST /v1/cashouts) with every
// refusal said in words, and the cash-outs asked for so far (GET /v1/cashouts).

import { api, el, formatCoins, newId } from "./common.js";

let ctx = null;
let rules = null;
let wallet = null;
const $ = (id) => document.getElementById(id);

function money(amount) {
  if (!amount) return "";
  return new Intl.NumberFormat("en-US", { style: "currency", currency: amount.currency }).format(
    amount.amount / 100,
  );
}

function valueOf(diamonds) {
  if (!rules) return "";
  const units = Math.floor(diamonds / rules.diamonds_per_unit);
  return money({ amount: units * rules.unit_value.amount, currency: rules.unit_value.currency });
}

const when = (ms) =>
  new Date(ms).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });

function explainCashout(answer, diamonds) {
  const code = answer.data.error?.code;
  const available = wallet ? wallet.diamonds_available ?? wallet.diamonds : null;
  switch (code) {
    case "cashout_below_minimum":
      return `The minimum cash-out is ${formatCoins(rules?.min_diamonds ?? 0)} diamonds (${valueOf(rules?.min_diamonds ?? 0)}).`;
    case "cashout_daily_cap":
      return `That would go over the daily cap of ${money(rules?.daily_cap)} per UTC day (counting today's cash-outs). Ask for less, or again tomorrow.`;
    case "insufficient_diamonds":
      return `You have ${formatCoins(available ?? 0)} diamonds available, fewer than ${formatCoins(diamonds)}. Diamonds earned in the last ${rules?.holding_period_days ?? "few"} days are held until their date below.`;
    case "invalid_request":
      return answer.data.error.message.replace(/^diamonds/, "The diamonds");
    default:
      return ctx.explain(answer);
  }
}

function renderRules() {
  if (!rules) return;
  $("cashout-rules").textContent =
    `Cash-outs: at least ${formatCoins(rules.min_diamonds)} diamonds (${valueOf(rules.min_diamonds)}), ` +
    `in multiples of ${rules.diamonds_per_unit}, at most ${money(rules.daily_cap)} a day (UTC). ` +
    `${rules.diamonds_per_unit} diamonds are worth ${money(rules.unit_value)}. ` +
    `Diamonds are held ${rules.holding_period_days} days after they are earned.`;
  $("cashout-diamonds").min = String(rules.min_diamonds);
  $("cashout-diamonds").step = String(rules.diamonds_per_unit);
}

async function loadWallet() {
  const answer = await api("/v1/wallet", { auth: ctx.token });
  if (!answer.ok) return;
  wallet = answer.data;
  const available = wallet.diamonds_available ?? wallet.diamonds;
  const held = wallet.diamonds_held || [];
  $("diamonds-available").textContent = `💎 ${formatCoins(available)}`;
  $("available-value").textContent = valueOf(available);
  $("diamonds-held").textContent = `💎 ${formatCoins(held.reduce((sum, h) => sum + h.diamonds, 0))}`;
  $("held-list").replaceChildren(
    ...held.map((h) => el("li", "", `💎 ${formatCoins(h.diamonds)} until ${when(h.until)}`)),
  );
}

async function loadHistory() {
  const answer = await api("/v1/cashouts", { auth: ctx.token });
  const list = $("cashout-history");
  if (!answer.ok) {
    list.replaceChildren(el("li", "muted small", "No cash-out history on this server yet."));
    return;
  }
  const cashouts = answer.data.cashouts || [];
  if (cashouts.length === 0) {
    list.replaceChildren(el("li", "muted small", "No cash-outs yet."));
    return;
  }
  list.replaceChildren(
    ...cashouts.map((c) => {
      const item = el("li", "cashout");
      item.dataset.status = c.status;
      item.append(
        el("span", "", `💎 ${formatCoins(c.diamonds)} → ${money(c.amount)}`),
        el("span", `status status-${c.status}`, c.status),
        el("span", "muted small", c.created_at ? when(c.created_at) : ""),
      );
      return item;
    }),
  );
}

async function cashOut(event) {
  event.preventDefault();
  const diamonds = Number($("cashout-diamonds").value);
  const answer = await api("/v1/cashouts", {
    method: "POST",
    auth: ctx.token,
    body: { diamonds, idempotency_key: newId("cashout") },
  });
  if (!answer.ok) {
    ctx.note("cashout-note", explainCashout(answer, diamonds), "error");
    return;
  }
  ctx.note(
    "cashout-note",
    `Asked for ${money(answer.data.amount)} (${formatCoins(diamonds)} diamonds): pending until the platform pays it.`,
  );
  $("cashout-diamonds").value = "";
  await Promise.all([loadWallet(), loadHistory()]);
}

// A gift just earned diamonds: read the wallet once the gifts settle.
let walletTimer = null;
export function walletSoon() {
  clearTimeout(walletTimer);
  walletTimer = setTimeout(loadWallet, 1_500);
}

export async function startEarnings(context) {
  ctx = context;
  $("cashout-form").onsubmit = cashOut;
  const answer = await api("/v1/cashouts/rules");
  if (answer.ok) rules = answer.data;
  renderRules();
  await Promise.all([loadWallet(), loadHistory()]);
  // Held diamonds come free over time, and gifts keep earning: read again now and then.
  setInterval(loadWallet, 30_000);
}
