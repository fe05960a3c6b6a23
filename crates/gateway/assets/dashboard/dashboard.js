// idlegrid dashboard: polls the gateway's JSON API and follows its event
// stream (/v1/events). Plain ES2020, no dependencies, no network beyond the
// gateway that served this page. Everything from the server is written with
// textContent, never parsed as HTML: labels and accounts come from the network.
"use strict";

const NETWORK_POLL_MS = 1000;
const LOCAL_JOBS_POLL_MS = 1000;
const LEDGER_JOBS_POLL_MS = 3000;
const GATEWAY_POLL_MS = 3000;
const STATUS_POLL_MS = 2000;
const EVENT_REFRESH_DEBOUNCE_MS = 250;
const EVENTS_RECONNECT_MS = 5000;
const REQUEST_TIMEOUT_MS = 8000;
const BLOCKS_SHOWN_MAX = 12;
const BLOCKS_FETCHED_MAX = 10; // how far below the tip we look for missing blocks
const LEDGER_JOBS_SHOWN_MAX = 15;
const TILE_FETCHES_IN_FLIGHT_MAX = 6;
const TILE_ATTEMPTS_MAX = 3;

const DASH = "—";

// ---- small helpers ----

const byId = (id) => document.getElementById(id);

/** Creates an element; `props` sets className, text, title and data-*. */
function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  if (props.className) node.className = props.className;
  if (props.text !== undefined) node.textContent = props.text;
  if (props.title) node.title = props.title;
  for (const [key, value] of Object.entries(props.data || {})) node.dataset[key] = value;
  node.append(...children);
  return node;
}

const isNumber = (value) => typeof value === "number" && Number.isFinite(value);
const int = (value) => (isNumber(value) ? Math.round(value).toLocaleString("en-US") : DASH);
const count = (value) => (Array.isArray(value) ? value.length : value);

/** 1234567 -> "1.23 M": fuel counts are too long to read digit by digit. */
function si(value) {
  if (!isNumber(value)) return DASH;
  const units = ["", " k", " M", " G", " T", " P"];
  let scaled = value;
  let unit = 0;
  while (Math.abs(scaled) >= 1000 && unit < units.length - 1) {
    scaled /= 1000;
    unit += 1;
  }
  return unit === 0 ? String(Math.round(scaled)) : scaled.toPrecision(3) + units[unit];
}

/** Millijoules -> "12.3 J", "4.56 kJ". */
function joules(millijoules) {
  if (!isNumber(millijoules)) return DASH;
  const value = millijoules / 1000;
  return value < 1000 ? `${value.toPrecision(3)} J` : `${si(value)}J`;
}

function duration(ms) {
  if (!isNumber(ms) || ms < 0) return DASH;
  const seconds = Math.round(ms / 1000);
  const pad = (n) => String(n).padStart(2, "0");
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${pad(seconds % 60)}s`;
  return `${Math.floor(seconds / 3600)}h ${pad(Math.floor(seconds / 60) % 60)}m`;
}

/** "did:key:z6MkpTHR…Ab3d": enough to tell accounts apart; the full id goes in the title. */
function shortAccount(account) {
  if (typeof account !== "string") return DASH;
  return account.length > 24 ? `${account.slice(0, 12)}…${account.slice(-4)}` : account;
}

/** "job:1a2b3c4d…" from "job:<64 hex digits>". */
function shortJob(job) {
  if (typeof job !== "string") return DASH;
  return job.length > 16 ? `${job.slice(0, 12)}…` : job;
}

/** Job ids look like "job:<hex>"; a colon is legal in a path segment, so keep it readable. */
const segment = (text) => encodeURIComponent(text).replace(/%3A/gi, ":");

async function request(path, asBytes = false) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
  try {
    const response = await fetch(path, { signal: abort.signal, cache: "no-store" });
    if (!response.ok) {
      let message = response.statusText;
      try {
        message = (await response.json()).error.message || message;
      } catch (_) {
        // not the API's error shape; the status line will do
      }
      const error = new Error(`${path}: ${response.status} ${message}`);
      error.status = response.status;
      throw error;
    }
    return asBytes ? await response.arrayBuffer() : await response.json();
  } catch (error) {
    if (error.name === "AbortError") throw new Error(`${path}: no answer in ${REQUEST_TIMEOUT_MS} ms`);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

// ---- the error line: one message per source, cleared when that source works again ----

const errors = new Map();

function setError(source, error) {
  if (error) errors.set(source, error.message || String(error));
  else errors.delete(source);
  const line = byId("errors");
  line.hidden = errors.size === 0;
  line.textContent = [...errors].map(([name, message]) => `${name}: ${message}`).join(" · ");
}

/**
 * Runs `work` every `interval_ms`, never two at once; `soon()` runs it early
 * (debounced), which is how events trigger refreshes. A failure shows on the
 * error line and the next round tries again.
 */
function poller(source, interval_ms, work) {
  let timer = null;
  let debounce = null;
  let running = false;
  let again = false;
  async function run() {
    clearTimeout(timer);
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await work();
      setError(source, null);
    } catch (error) {
      setError(source, error);
    }
    running = false;
    if (again) {
      again = false;
      run();
    } else {
      timer = setTimeout(run, interval_ms);
    }
  }
  function soon() {
    if (debounce === null) {
      debounce = setTimeout(() => {
        debounce = null;
        run();
      }, EVENT_REFRESH_DEBOUNCE_MS);
    }
  }
  return { run, soon };
}

// ---- header and event stream ----

let latestHeight = null;

function noteHeight(height) {
  if (!isNumber(height) || (latestHeight !== null && height <= latestHeight)) return;
  latestHeight = height;
  byId("height").textContent = int(height);
}

function setStream(connected, why) {
  const dot = byId("stream-status");
  dot.classList.toggle("connected", connected);
  dot.classList.toggle("disconnected", !connected);
  dot.title = connected ? "event stream: connected" : `event stream: ${why || "disconnected"} (polling)`;
  byId("stream-label").textContent = connected ? "live" : "polling";
}

const EVENT_NAMES = ["block", "task", "job", "offer"];

/**
 * Follows /v1/events and hands each happening to `post` as a plain message:
 * {kind: "open"}, {kind: "error", closed}, {kind: "event", name, data}.
 * Runs in a worker when it can (see connectEvents), in the page otherwise.
 */
function followEvents(post) {
  if (typeof EventSource === "undefined") {
    post({ kind: "unsupported" });
    return;
  }
  const source = new EventSource("/v1/events");
  source.onopen = () => post({ kind: "open" });
  source.onerror = () => {
    // The browser retries by itself unless the answer was not an event stream.
    const closed = source.readyState === EventSource.CLOSED;
    post({ kind: "error", closed });
    if (closed) setTimeout(() => followEvents(post), EVENTS_RECONNECT_MS);
  };
  for (const name of EVENT_NAMES) {
    source.addEventListener(name, (event) => post({ kind: "event", name, data: event.data }));
  }
}

/**
 * The stream is held by a worker running this same file. Headless Chromium's
 * --virtual-time-budget (what a screenshot test uses) stops virtual time while
 * the page has a fetch pending, and an event stream is pending forever; a
 * worker's is not counted. Without workers the page holds the stream itself.
 */
function connectEvents() {
  let inPage = false;
  const fallBack = (why) => {
    if (inPage) return;
    inPage = true;
    followEvents(onStreamMessage);
    if (why) setStream(false, why);
  };
  try {
    const worker = new Worker("/dashboard.js");
    worker.onmessage = (message) => {
      if (message.data.kind === "unsupported") {
        worker.terminate();
        fallBack();
      } else {
        onStreamMessage(message.data);
      }
    };
    worker.onerror = () => {
      worker.terminate();
      fallBack("the stream worker failed");
    };
  } catch (_) {
    fallBack();
  }
}

function onStreamMessage(message) {
  if (message.kind === "unsupported") {
    setStream(false, "not supported by this browser");
  } else if (message.kind === "open") {
    setStream(true);
    // Whatever happened while we were disconnected, catch up now.
    statusPoll.soon();
    localJobsPoll.soon();
    networkPoll.soon();
  } else if (message.kind === "error") {
    setStream(false, message.closed ? "closed, retrying" : "reconnecting");
  } else if (message.kind === "event") {
    let data;
    try {
      data = JSON.parse(message.data);
    } catch (_) {
      setError("events", new Error(`a ${message.name} event was not JSON`));
      return;
    }
    onEvent(message.name, data);
  }
}

function onEvent(name, data) {
  if (name === "block") {
    addBlock({ height: data.height, digest: data.digest, transactions: data.transactions, kinds: data.kinds || {} });
    networkPoll.soon(); // balances, stake and earnings move with blocks
    ledgerJobsPoll.soon();
  } else if (name === "task") {
    queueTile(data.job, data.index);
    localJobsPoll.soon();
  } else if (name === "job") {
    localJobsPoll.soon();
    ledgerJobsPoll.soon();
  } else if (name === "offer") {
    networkPoll.soon();
  }
}

// ---- ledger: status, blocks, validators ----

const blocks = new Map(); // height -> {height, digest, transactions, kinds}
const blocksFetching = new Set();

// Blocks that carried transactions, kept after they scroll out of the
// newest-first list (most blocks of a quiet network are empty).
const ACTIVITY_SHOWN_MAX = 8;
const activity = new Map();

function addBlock(block) {
  if (!isNumber(block.height)) return;
  blocks.set(block.height, block);
  noteHeight(block.height);
  // Keep only what is shown.
  const heights = [...blocks.keys()].sort((a, b) => b - a);
  for (const old of heights.slice(BLOCKS_SHOWN_MAX)) blocks.delete(old);
  renderBlockList("blocks", blocks, "block", "no finalized blocks yet");
  if (block.transactions > 0) addActivity(block);
}

function addActivity(block) {
  if (!isNumber(block.height)) return;
  activity.set(block.height, block);
  const busy = [...activity.keys()].sort((a, b) => b - a);
  for (const old of busy.slice(ACTIVITY_SHOWN_MAX)) activity.delete(old);
  renderBlockList("activity", activity, "activity-block", "no transactions seen yet");
}

/** Blocks with transactions from before this page was opened (the gateway remembers some). */
async function loadActivity() {
  const view = await request("/v1/activity");
  for (const block of view.blocks || []) addActivity(block);
}

function renderBlockList(id, shown, className, emptyText) {
  const list = byId(id);
  const heights = [...shown.keys()].sort((a, b) => b - a);
  list.replaceChildren(
    ...heights.map((height) => {
      const block = shown.get(height);
      const kinds = h("span", { className: "kinds" });
      const entries = Object.entries(block.kinds).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
      entries.forEach(([kind, n], i) => {
        if (i > 0) kinds.append(" · ");
        // A dispute is a slashing: make it impossible to miss.
        kinds.append(h("span", { className: kind === "dispute" ? "kind dispute" : "kind", text: `${n} ${kind}` }));
      });
      if (entries.length === 0) kinds.append(h("span", { className: "muted", text: "empty" }));
      kinds.title = kinds.textContent; // the line may be cut short
      const item = h(
        "li",
        { className, data: { height: String(height) }, title: block.digest ? `digest ${block.digest}` : "" },
        h("span", { className: "block-height", text: `#${height}` }),
        h("span", { className: "block-txs", text: `${int(block.transactions)} tx` }),
        kinds,
      );
      if (block.kinds.dispute) item.classList.add("has-dispute");
      return item;
    }),
  );
  if (heights.length === 0) list.append(h("li", { className: "empty", text: emptyText }));
}

async function fetchBlock(height) {
  blocksFetching.add(height);
  try {
    const block = await request(`/v1/blocks/${height}`);
    const kinds = {};
    for (const tx of block.transactions || []) kinds[tx.kind] = (kinds[tx.kind] || 0) + 1;
    addBlock({ height: block.height, digest: block.digest, transactions: (block.transactions || []).length, kinds });
  } catch (error) {
    // 404: not finalized here yet; 503: the engine is starting. Both are normal.
    if (error.status !== 404 && error.status !== 503) throw error;
  } finally {
    blocksFetching.delete(height);
  }
}

/** Fetches the blocks near the tip that neither the stream nor an earlier poll gave us. */
async function fetchMissingBlocks(tip) {
  const wanted = [];
  for (let height = tip; height >= 1 && height > tip - BLOCKS_FETCHED_MAX; height -= 1) {
    if (!blocks.has(height) && !blocksFetching.has(height)) wanted.push(height);
  }
  await Promise.all(wanted.map(fetchBlock));
}

let ownValidator = null;

async function pollStatus() {
  const view = await request("/v1/status");
  ownValidator = view.validator;
  byId("chain-id").textContent = view.chain_id || DASH;
  byId("finalized-height").textContent = int(view.finalized_height);
  byId("epoch").textContent = int(view.epoch);
  noteHeight(view.height);
  // Cheap when the stream is healthy (nothing is missing); the only way to
  // get blocks when it is not.
  if (isNumber(view.height)) await fetchMissingBlocks(view.height);
}

function uptime(validator) {
  const of = validator.finalizations_in_set;
  if (!isNumber(of) || of === 0) return DASH;
  return `${Math.floor((100 * validator.finalizations_signed) / of)}%`;
}

// Own and delegated stake, commission, power and uptime, from
// /v1/validators (the current set first).
async function pollValidators() {
  const view = await request("/v1/validators");
  const validators = view.validators || [];
  byId("validators").replaceChildren(
    ...validators.map((validator) =>
      h(
        "li",
        {
          title: `${validator.account}\nown ${int(validator.own_stake)}, delegated ${int(validator.delegated)} by ${int(validator.delegators)}\ncommission ${int(validator.commission_bps)} bps, power ${int(validator.power)}\nsigned ${int(validator.finalizations_signed)} of the last ${int(validator.finalizations_in_set)} finalizations`,
          className: validator.in_set ? "in-set" : "outside",
          data: {
            account: validator.account,
            delegated: String(validator.delegated),
            commission: String(validator.commission_bps),
          },
        },
        h("span", { className: "account", text: shortAccount(validator.account) }),
        validator.account === ownValidator ? h("span", { className: "tag", text: "this gateway's" }) : "",
        validator.in_set ? "" : h("span", { className: "tag", text: "not in set" }),
        h("span", { className: "num", text: `${int(validator.own_stake)} + ${int(validator.delegated)} delegated` }),
        h("span", { className: "num small", text: `${(validator.commission_bps / 100).toFixed(2)}%` }),
        h("span", { className: "num small", title: "share of recent finalizations signed", text: uptime(validator) }),
      ),
    ),
  );
}

async function pollGateway() {
  const view = await request("/v1/gateway");
  byId("peers").textContent = int(count(view.peers));
}

// ---- network: providers ----

function trust(provider) {
  const accepted = provider.results_accepted;
  const rejected = provider.results_rejected;
  if (!isNumber(accepted) || !isNumber(rejected)) return DASH;
  const total = accepted + rejected;
  if (total === 0) return { text: DASH, title: "no results checked yet" };
  const percent = Math.floor((100 * accepted) / total);
  return {
    text: `${percent}% of ${int(total)}`,
    title: `${int(accepted)} results accepted, ${int(rejected)} rejected`,
    className: rejected > 0 ? "num warn" : "num",
  };
}

// The speed the chain's capacity challenges (of the CPU, or of the GPU)
// proved, against the one the provider declared there, with how its
// challenges went.
function proven(capacity) {
  if (!capacity || !capacity.declared_fuel_per_second) return DASH;
  const mfuel = (value) => (value / 1e6).toFixed(1);
  const proof = isNumber(capacity.proven_fuel_per_second) ? mfuel(capacity.proven_fuel_per_second) : "?";
  return {
    text: `${proof} of ${mfuel(capacity.declared_fuel_per_second)}`,
    title: `Mfuel/s proven of those declared; challenges: ${int(capacity.challenges_passed)} passed, ` +
      `${int(capacity.challenges_late)} late, ${int(capacity.challenges_missed)} missed, ${int(capacity.challenges_wrong)} wrong`,
    className: capacity.challenges_late + capacity.challenges_wrong > 0 ? "num warn" : "num",
  };
}

function earned(provider) {
  if (!isNumber(provider.earned)) return DASH;
  const owed = isNumber(provider.owed) && provider.owed > 0 ? ` (+${int(provider.owed)} owed)` : "";
  return { text: int(provider.earned) + owed, title: "paid on the ledger (+ vouchers not yet redeemed)" };
}

// One entry per column: heading, and the cell as text or {text, title, className}.
const PROVIDER_COLUMNS = [
  ["account", (p) => ({ text: shortAccount(p.account), title: p.account, className: "account" })],
  ["label", (p) => p.label ?? DASH],
  ["status", (p) => ({ text: p.online ? "online" : "offline", className: p.online ? "status online" : "status offline" })],
  ["cores", (p) => ({
    text: int(p.cores),
    title: [isNumber(p.concurrency) ? `runs ${p.concurrency} at once` : "", p.idle_only ? "only while idle" : ""].filter(Boolean).join(", "),
  })],
  ["memory", (p) => (isNumber(p.memory_bytes) ? `${(p.memory_bytes / 2 ** 30).toFixed(1)} GiB` : DASH)],
  ["GPU", (p) => (p.gpu ? {
    text: p.gpu.name,
    title: `${(p.gpu.fuel_per_second / 1e6).toFixed(1)} Mfuel/s, from ${p.gpu.price_floor_per_million_fuel} per Mfuel`,
  } : DASH)],
  ["GPU proven", (p) => proven(p.gpu_capacity)],
  ["Mfuel/s", (p) => (isNumber(p.benchmark_fuel_per_second) ? (p.benchmark_fuel_per_second / 1e6).toFixed(1) : DASH)],
  ["proven", (p) => proven(p.capacity)],
  ["price / Mfuel", (p) => int(p.price_floor_per_million_fuel)],
  ["stake", (p) => int(p.stake)],
  ["balance", (p) => int(p.balance)],
  ["tasks done", (p) => int(p.tasks_done)],
  ["fuel", (p) => si(p.fuel_used)],
  ["earned", earned],
  ["track record", trust],
];
const TEXT_COLUMNS = new Set(["account", "label", "status", "GPU"]);

function setCell(cell, value, column) {
  const spec = typeof value === "object" && value !== null ? value : { text: String(value) };
  const className = spec.className || (TEXT_COLUMNS.has(column) ? "" : "num");
  if (cell.textContent !== spec.text) cell.textContent = spec.text;
  if (cell.title !== (spec.title || "")) cell.title = spec.title || "";
  if (cell.className !== className) cell.className = className;
}

const providerRows = new Map(); // account -> tr

/** A row spanning the whole table, for "nothing here (yet)". */
function noteRow(text, columns, className = "empty") {
  const cell = h("td", { text });
  cell.colSpan = columns;
  return h("tr", { className }, cell);
}

function startProviders() {
  const table = byId("providers");
  table.tHead.replaceChildren(
    h("tr", {}, ...PROVIDER_COLUMNS.map(([name]) => h("th", { text: name, className: TEXT_COLUMNS.has(name) ? "" : "num" }))),
  );
  table.tBodies[0].replaceChildren(noteRow("asking the gateway…", PROVIDER_COLUMNS.length));
}

async function pollNetwork() {
  const view = await request("/v1/network");
  const body = byId("providers").tBodies[0];
  const seen = new Set();
  const rows = [];
  for (const provider of view.providers || []) {
    if (typeof provider.account !== "string" || seen.has(provider.account)) continue;
    seen.add(provider.account);
    let row = providerRows.get(provider.account);
    if (!row) {
      row = h("tr", { className: "provider", data: { account: provider.account } });
      for (let i = 0; i < PROVIDER_COLUMNS.length; i += 1) row.append(h("td"));
      providerRows.set(provider.account, row);
    }
    PROVIDER_COLUMNS.forEach(([name, cell], i) => setCell(row.cells[i], cell(provider), name));
    row.classList.toggle("is-offline", !provider.online);
    rows.push(row);
  }
  for (const account of [...providerRows.keys()]) if (!seen.has(account)) providerRows.delete(account);
  if (rows.length === 0) rows.push(noteRow("no providers seen yet", PROVIDER_COLUMNS.length));
  body.replaceChildren(...rows); // moves existing rows, so nothing flickers
}

// ---- local jobs: cards, progress, tiles ----

const jobCards = new Map(); // job id -> {card, fields, tiles}

function jobCard(id) {
  const field = (name) => {
    const value = h("dd", { text: DASH });
    return [h("div", {}, h("dt", { text: name }), value), value];
  };
  const stats = h("dl", { className: "job-stats" });
  const fields = {};
  for (const [key, name] of [
    ["inFlight", "in flight"], ["providers", "providers"], ["fuel", "fuel"], ["energy", "energy"], ["paid", "paid / budget"],
    ["elapsed", "elapsed"], ["eta", "ETA"], ["failed", "failed tasks"], ["rate", "rate"],
  ]) {
    const [wrapper, value] = field(name);
    stats.append(wrapper);
    fields[key] = value;
  }
  fields.name = h("span", { className: "job-name" });
  fields.state = h("span", { className: "state" });
  fields.fill = h("div", { className: "progress-fill" });
  fields.progressText = h("span", { className: "progress-text" });
  fields.error = h("p", { className: "job-error" });
  fields.error.hidden = true;
  fields.waiting = h("p", { className: "job-waiting" });
  fields.waiting.hidden = true;
  const info = h(
    "div",
    { className: "job-info" },
    h("div", { className: "job-head" }, fields.name, fields.state, h("span", { className: "job-id", text: shortJob(id), title: id })),
    h("div", { className: "progress" }, fields.fill, fields.progressText),
    stats,
    fields.waiting,
    fields.error,
  );
  const card = h("article", { className: "job", data: { job: id } }, info);
  return { card, fields, tiles: null };
}

/** Remaining time at the rate seen so far. */
function eta(job) {
  if (job.state === "done") return "done";
  if (job.state === "failed") return DASH;
  const remaining = job.tasks_total - job.accepted;
  if (!(job.accepted > 0) || !(job.elapsed_ms > 0) || !(remaining >= 0)) return DASH;
  return duration((remaining * job.elapsed_ms) / job.accepted);
}

function updateJob(entry, job) {
  const { card, fields } = entry;
  const total = isNumber(job.tasks_total) ? job.tasks_total : 0;
  const accepted = isNumber(job.accepted) ? job.accepted : 0;
  card.dataset.accepted = String(accepted);
  card.dataset.total = String(total);
  card.dataset.state = String(job.state);
  fields.name.textContent = job.name || shortJob(job.job);
  fields.name.title = job.module ? `module ${job.module}` : "";
  fields.state.textContent = job.state;
  fields.state.className = `state state-${job.state}`;
  const percent = total > 0 ? (100 * accepted) / total : 0;
  fields.fill.style.width = `${percent.toFixed(1)}%`;
  fields.progressText.textContent = `${int(accepted)} / ${int(total)} tasks · ${Math.floor(percent)}%`;
  fields.inFlight.textContent = int(job.in_flight);
  fields.providers.textContent = int(count(job.providers));
  fields.fuel.textContent = si(job.fuel_executed);
  fields.energy.textContent = joules(job.energy_executed_millijoules);
  fields.energy.title = "advisory: as providers measured or modeled it, replicas included";
  fields.paid.textContent = `${int(job.paid)} / ${int(job.budget)}`;
  fields.elapsed.textContent = duration(job.elapsed_ms);
  fields.eta.textContent = eta(job);
  fields.failed.textContent = int(job.failed);
  fields.rate.textContent = accepted > 0 && job.elapsed_ms > 0 ? `${((1000 * accepted) / job.elapsed_ms).toFixed(1)} tasks/s` : DASH;
  fields.waiting.hidden = typeof job.waiting !== "string";
  fields.waiting.textContent = typeof job.waiting === "string" ? `waiting: ${job.waiting}` : "";
  fields.error.hidden = !job.error;
  fields.error.textContent = job.error || "";
  if (job.image) syncImage(entry, job);
}

async function pollLocalJobs() {
  const view = await request("/v1/local/jobs");
  const container = byId("jobs");
  const seen = new Set();
  const cards = [];
  for (const job of view.jobs || []) {
    if (typeof job.job !== "string" || seen.has(job.job)) continue;
    seen.add(job.job);
    let entry = jobCards.get(job.job);
    if (!entry) {
      entry = jobCard(job.job);
      jobCards.set(job.job, entry);
    }
    updateJob(entry, job);
    cards.push(entry.card);
  }
  for (const id of [...jobCards.keys()]) if (!seen.has(id)) jobCards.delete(id);
  if (cards.length === 0) {
    cards.push(h("p", { className: "empty", text: "no jobs yet — try " }, h("code", { text: "idlegrid submit examples/pi/job.toml" })));
  }
  container.replaceChildren(...cards);
}

// Tiles: each accepted task of an image job is one tile of the picture. A tile
// is fetched once; the `done` list on every poll catches tiles whose `task`
// event we missed.

function syncImage(entry, job) {
  const image = job.image;
  if (!isNumber(image.width) || !isNumber(image.height) || !Array.isArray(image.tiles)) return;
  let tiles = entry.tiles;
  if (!tiles || tiles.canvas.width !== image.width || tiles.canvas.height !== image.height) {
    const canvas = h("canvas", { className: "job-image", data: { job: job.job, tilesDrawn: "0" } });
    canvas.width = image.width;
    canvas.height = image.height;
    canvas.title = `${image.width}×${image.height}, ${image.tiles.length} tiles`;
    if (tiles) tiles.canvas.replaceWith(canvas);
    else entry.card.append(h("div", { className: "job-picture" }, canvas));
    entry.card.classList.add("has-image");
    tiles = { job: job.job, image, canvas, requested: new Set(), attempts: new Map(), drawn: 0 };
    entry.tiles = tiles;
  }
  tiles.image = image;
  for (const index of job.done || []) queueTile(job.job, index);
}

const tileQueue = [];
let tilesInFlight = 0;

function queueTile(job, index) {
  const tiles = jobCards.get(job)?.tiles;
  if (!tiles || !Number.isInteger(index) || index < 0 || index >= tiles.image.tiles.length) return;
  if (tiles.requested.has(index)) return;
  tiles.requested.add(index);
  tileQueue.push([tiles, index]);
  pumpTiles();
}

function pumpTiles() {
  while (tilesInFlight < TILE_FETCHES_IN_FLIGHT_MAX && tileQueue.length > 0) {
    const [tiles, index] = tileQueue.shift();
    if (jobCards.get(tiles.job)?.tiles !== tiles) continue; // the job or its canvas is gone
    tilesInFlight += 1;
    drawTile(tiles, index)
      .then(() => setError("tiles", null))
      .catch((error) => {
        const attempts = (tiles.attempts.get(index) || 0) + 1;
        tiles.attempts.set(index, attempts);
        // Let the next poll ask again, a few times; a tile that never parses stays blank.
        if (attempts < TILE_ATTEMPTS_MAX) tiles.requested.delete(index);
        setError("tiles", error);
      })
      .finally(() => {
        tilesInFlight -= 1;
        pumpTiles();
      });
  }
}

async function drawTile(tiles, index) {
  const bytes = await request(`/v1/local/jobs/${segment(tiles.job)}/tasks/${index}`, true);
  const picture = parsePpm(new Uint8Array(bytes));
  const [tileX, tileY] = tiles.image.tiles[index];
  const size = tiles.image.tile_size;
  if (picture.width > size || picture.height > size) {
    throw new Error(`tile ${index} is ${picture.width}×${picture.height}, more than the job's ${size}-pixel tiles`);
  }
  const pixels = new ImageData(picture.rgba, picture.width, picture.height);
  tiles.canvas.getContext("2d").putImageData(pixels, tileX * size, tileY * size);
  tiles.drawn += 1;
  tiles.canvas.dataset.tilesDrawn = String(tiles.drawn);
}

/**
 * Parses a binary PPM ("P6"): the header is magic, width, height and maxval,
 * separated by any whitespace, with '#' comments running to the end of a
 * line; exactly one whitespace byte then the raster. Returns RGBA pixels.
 */
function parsePpm(bytes) {
  let at = 0;
  const isSpace = (byte) => byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d || byte === 0x0b || byte === 0x0c;
  function token() {
    for (;;) {
      while (at < bytes.length && isSpace(bytes[at])) at += 1;
      if (bytes[at] !== 0x23) break; // '#'
      while (at < bytes.length && bytes[at] !== 0x0a && bytes[at] !== 0x0d) at += 1;
    }
    const start = at;
    while (at < bytes.length && !isSpace(bytes[at]) && bytes[at] !== 0x23) {
      at += 1;
      if (at - start > 10) throw new Error("a tile's PPM header has an overlong field");
    }
    return String.fromCharCode(...bytes.subarray(start, at));
  }
  if (token() !== "P6") throw new Error("a tile is not a binary PPM (P6)");
  const [width, height, maxval] = [token(), token(), token()].map(Number);
  if (![width, height, maxval].every((n) => Number.isInteger(n) && n > 0) || maxval > 65535) {
    throw new Error("a tile's PPM header is malformed");
  }
  if (!isSpace(bytes[at])) throw new Error("a tile's PPM header does not end in whitespace");
  at += 1;
  const sampleBytes = maxval < 256 ? 1 : 2;
  if (bytes.length - at < width * height * 3 * sampleBytes) throw new Error(`a ${width}×${height} tile is cut short`);
  const rgba = new Uint8ClampedArray(width * height * 4);
  for (let pixel = 0; pixel < width * height; pixel += 1) {
    for (let channel = 0; channel < 3; channel += 1) {
      const offset = at + (pixel * 3 + channel) * sampleBytes;
      const sample = sampleBytes === 1 ? bytes[offset] : (bytes[offset] << 8) | bytes[offset + 1];
      rgba[pixel * 4 + channel] = maxval === 255 ? sample : Math.round((sample * 255) / maxval);
    }
    rgba[pixel * 4 + 3] = 255;
  }
  return { width, height, rgba };
}

// ---- ledger jobs ----

async function pollLedgerJobs() {
  const view = await request("/v1/jobs");
  const jobs = view.jobs || [];
  const rows = jobs.slice(0, LEDGER_JOBS_SHOWN_MAX).map((job) => {
    const cell = (text, className = "num") => h("td", { text, className });
    return h(
      "tr",
      { className: "ledger-job", data: { job: String(job.job) } },
      h("td", { text: shortJob(job.job), title: `${job.job}\nrequestor ${job.requestor}\nmodule ${job.module}`, className: "account" }),
      h("td", {}, h("span", { className: `pill ${job.status === "open" ? "online" : "offline"}`, text: job.status || DASH })),
      cell(int(job.escrow)),
      cell(int(job.redeemed_total)),
      cell(int(job.price_per_million_fuel)),
      cell(int(job.deadline_height)),
    );
  });
  if (jobs.length > LEDGER_JOBS_SHOWN_MAX) {
    rows.push(noteRow(`and ${int(jobs.length - LEDGER_JOBS_SHOWN_MAX)} older`, 6, "more"));
  } else if (jobs.length === 0) {
    rows.push(noteRow("no jobs on the ledger yet", 6));
  }
  byId("ledger-jobs").tBodies[0].replaceChildren(...rows);
}

// ---- start ----

const statusPoll = poller("status", STATUS_POLL_MS, pollStatus);
const validatorsPoll = poller("validators", STATUS_POLL_MS, pollValidators);
const gatewayPoll = poller("gateway", GATEWAY_POLL_MS, pollGateway);
const networkPoll = poller("network", NETWORK_POLL_MS, pollNetwork);
const localJobsPoll = poller("jobs", LOCAL_JOBS_POLL_MS, pollLocalJobs);
const ledgerJobsPoll = poller("ledger jobs", LEDGER_JOBS_POLL_MS, pollLedgerJobs);

// This file also runs as the event-stream worker (see connectEvents); only
// the page has a document.
if (typeof document === "undefined") {
  followEvents((message) => self.postMessage(message));
} else {
  setStream(false, "connecting");
  startProviders();
  renderBlockList("blocks", blocks, "block", "no finalized blocks yet");
  loadActivity().catch(() => {}); // blocks with transactions come by events anyway
  for (const each of [statusPoll, validatorsPoll, gatewayPoll, networkPoll, localJobsPoll, ledgerJobsPoll]) each.run();
  connectEvents();
}
