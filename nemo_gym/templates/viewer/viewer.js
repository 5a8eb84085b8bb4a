"use strict";
// ng_viewer's page. Served, it asks the JSON API next to it; written to a file, it reads the JSON embedded in
// #viewer-data and filters it with the same rules as nemo_gym/viewer/records.py. Record text comes from models:
// it only ever becomes DOM text (text nodes, attributes), never markup.
(() => {
  const PAGE_SIZE = 100;
  const $ = (id) => document.getElementById(id);
  const embedded = JSON.parse($("viewer-data").textContent);

  // ------------------------------------------------------------ DOM and formatting helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = String(value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
  const count = (n) => (isNumber(n) ? n.toLocaleString("en-US") : "–");
  const reward = (r) => (isNumber(r) ? String(Math.round(r * 1000) / 1000) : "–");
  const seconds = (s) => (isNumber(s) ? s.toFixed(2) : "–");
  const plural = (n, word) => `${count(n)} ${word}${n === 1 ? "" : "s"}`;

  function usd(value) {
    // Three significant digits without scientific notation: a rollout often costs far below a cent.
    if (!isNumber(value)) return "–";
    if (value === 0) return "0.00";
    const decimals = Math.min(10, Math.max(2, 2 - Math.floor(Math.log10(Math.abs(value)))));
    return value.toFixed(decimals);
  }

  function rewardClass(r) {
    if (!isNumber(r)) return "";
    return r >= 1 ? "reward-hi" : r <= 0 ? "reward-lo" : "reward-mid";
  }

  function prettyJSON(value) {
    if (typeof value !== "string") return JSON.stringify(value, null, 2);
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }

  // ------------------------------------------------------------ data sources: the API, or the embedded file

  function apiSource() {
    async function getJSON(path) {
      const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
      let body = null;
      try {
        body = await response.json();
      } catch {
        body = null;
      }
      if (!response.ok) {
        throw new Error((body && body.error && body.error.message) || `HTTP ${response.status} for ${path}`);
      }
      return body;
    }
    function params(q) {
      const p = new URLSearchParams({ sort: q.sort, offset: String(q.offset), limit: String(PAGE_SIZE), error: q.error });
      if (q.reward_min !== null) p.set("reward_min", String(q.reward_min));
      if (q.reward_max !== null) p.set("reward_max", String(q.reward_max));
      if (q.model) p.set("model", q.model);
      if (q.search.trim()) p.set("search", q.search);
      return p;
    }
    return {
      live: true,
      meta: () => getJSON("api/meta"),
      list: (q) => getJSON(`api/rollouts?${params(q)}`),
      record: (index) => getJSON(`api/rollouts/${encodeURIComponent(index)}`),
    };
  }

  function matches(s, haystack, q, needle) {
    if (q.reward_min !== null && (!isNumber(s.reward) || s.reward < q.reward_min)) return false;
    if (q.reward_max !== null && (!isNumber(s.reward) || s.reward > q.reward_max)) return false;
    if (q.model && !s.models.includes(q.model)) return false;
    if (q.error === "failed" && !s.failed) return false;
    if (q.error === "succeeded" && s.failed) return false;
    return !needle || haystack.includes(needle);
  }

  function figure(s, key) {
    if (key === "row_index") return s.row_index === null ? null : [s.row_index, s.repeat_index || 0];
    return s[key] === undefined ? null : s[key];
  }

  function compare(a, b) {
    if (Array.isArray(a)) return compare(a[0], b[0]) || compare(a[1], b[1]);
    return a < b ? -1 : a > b ? 1 : 0;
  }

  function selectRows(summaries, haystacks, q) {
    const needle = q.search.trim().toLowerCase();
    const chosen = summaries.filter((s, i) => matches(s, haystacks[i], q, needle));
    const descending = q.sort.startsWith("-");
    const key = q.sort.replace(/^-/, "");
    let ordered;
    if (key === "index") {
      ordered = descending ? chosen.slice().reverse() : chosen;
    } else {
      const known = chosen.filter((s) => figure(s, key) !== null);
      known.sort((a, b) => (descending ? compare(figure(b, key), figure(a, key)) : compare(figure(a, key), figure(b, key))));
      ordered = known.concat(chosen.filter((s) => figure(s, key) === null));
    }
    return { total: summaries.length, matched: chosen.length, offset: q.offset, limit: PAGE_SIZE, sort: q.sort,
             rows: ordered.slice(q.offset, q.offset + PAGE_SIZE) };
  }

  function embeddedSource(doc) {
    return {
      live: false,
      meta: async () => doc.meta,
      list: async (q) => selectRows(doc.summaries, doc.search, q),
      record: async (index) => {
        const summary = doc.summaries[index];
        if (!summary) throw new Error(`There is no rollout ${index}: the file has ${doc.summaries.length}.`);
        return { index, line: summary.line, record: doc.records[index] };
      },
    };
  }

  const source = embedded ? embeddedSource(embedded) : apiSource();

  // ------------------------------------------------------------ state

  const state = { reward_min: null, reward_max: null, model: "", error: "all", search: "", sort: "index", offset: 0 };
  let meta = null;
  let selected = null;
  let listToken = 0;
  let detailToken = 0;

  function showError(error) {
    $("load-error").textContent = error instanceof Error ? error.message : String(error);
    $("load-error").hidden = false;
  }

  function readFilters() {
    const number = (id) => {
      const text = $(id).value.trim();
      const value = text === "" ? NaN : Number(text);
      return Number.isFinite(value) ? value : null;
    };
    state.reward_min = number("reward-min");
    state.reward_max = number("reward-max");
    state.model = $("model").value;
    state.error = $("error").value;
    state.search = $("search").value;
    state.offset = 0;
  }

  // ------------------------------------------------------------ header: file, models, warnings

  function costSummary(cost, judge) {
    // The file's spend; with an LLM judge, its part of it (every cost shown includes the judge's).
    if (!isNumber(cost)) return "";
    return ` · cost $${usd(cost)}` + (isNumber(judge) ? ` (judge $${usd(judge)})` : "");
  }

  function renderMeta() {
    $("file-path").textContent = `${meta.path} · ${plural(meta.total, "rollout")}, ${count(meta.failed)} failed`
      + costSummary(meta.cost_usd, meta.judge_cost_usd);
    const models = $("model");
    const current = models.value;
    models.replaceChildren(el("option", { value: "" }, "all models"),
      ...meta.models.map((m) => el("option", { value: m.model }, `${m.model} (${count(m.rollouts)})`)));
    models.value = meta.models.some((m) => m.model === current) ? current : "";
    const skipped = meta.warnings_total;
    $("warnings").hidden = skipped === 0;
    if (skipped) {
      const parts = [];
      if (meta.duplicated_rollouts) parts.push(`${plural(meta.duplicated_rollouts, "rollout")} recorded more than once`);
      if (meta.skipped_lines) parts.push(`${plural(meta.skipped_lines, "line")} skipped: not rollout records`);
      $("warnings-summary").textContent = parts.join("; ");
      const items = meta.warnings.map((w) => el("li", { "data-line": w.line }, `line ${w.line}: ${w.message}`));
      if (skipped > meta.warnings.length) items.push(el("li", {}, `… and ${count(skipped - meta.warnings.length)} more`));
      $("warnings-list").replaceChildren(...items);
      $("warnings").querySelector("details").open = true;
    }
  }

  async function loadMeta() {
    meta = await source.meta();
    renderMeta();
  }

  // ------------------------------------------------------------ the table

  function rowElement(s) {
    const failed = s.failed;
    return el("tr", { "data-index": s.index, tabindex: "0", class: s.index === selected ? "selected" : "" },
      el("td", {}, s.index),
      el("td", {}, s.row_index ?? "–"),
      el("td", {}, s.repeat_index ?? "–"),
      el("td", { class: `reward ${rewardClass(s.reward)}` }, failed ? "–" : reward(s.reward)),
      el("td", { class: "models", title: s.models.join(", ") }, s.models.join(", ")),
      el("td", { class: "error", title: s.error || "" }, failed ? (s.error || "failed") : ""),
      el("td", { class: "cost", title: isNumber(s.judge_cost_usd) ? `judge $${usd(s.judge_cost_usd)} of it` : null,
                 "data-judge-cost": isNumber(s.judge_cost_usd) ? s.judge_cost_usd : null },
        usd(s.cost_usd) + (s.cost_estimated ? "*" : "")),
      el("td", {}, count(s.input_tokens)),
      el("td", {}, count(s.output_tokens)),
      el("td", {}, seconds(s.latency_s)),
      el("td", { class: "question", title: s.question }, s.question));
  }

  function renderTable(page) {
    $("rollouts").tBodies[0].replaceChildren(...page.rows.map(rowElement));
    $("count").textContent = `${count(page.matched)} of ${plural(page.total, "rollout")}`;
    const first = page.offset + 1;
    const last = page.offset + page.rows.length;
    $("page-info").textContent = page.matched ? `${count(first)}–${count(last)} of ${count(page.matched)}`
      : "no rollout matches the filters";
    $("prev").disabled = page.offset === 0;
    $("next").disabled = page.offset + PAGE_SIZE >= page.matched;
    for (const th of document.querySelectorAll("th[data-sort]")) {
      th.classList.toggle("sorted-asc", state.sort === th.dataset.sort);
      th.classList.toggle("sorted-desc", state.sort === `-${th.dataset.sort}`);
    }
  }

  async function refresh() {
    const token = ++listToken;
    let page;
    try {
      page = await source.list(state);
    } catch (error) {
      if (token === listToken) showError(error);
      return;
    }
    if (token !== listToken) return;
    $("load-error").hidden = true;
    if (meta && page.total !== meta.total) await loadMeta().catch(showError); // the file grew meanwhile
    renderTable(page);
  }

  // ------------------------------------------------------------ one rollout

  function fact(key, label, ...value) {
    return [el("dt", {}, label), el("dd", { "data-key": key }, ...value)];
  }

  function valueNode(value) {
    if (value === null || value === undefined) return el("span", { class: "placeholder" }, "null");
    if (typeof value === "string") return el("span", { class: "text" }, value);
    if (typeof value !== "object") return el("span", {}, String(value));
    if (Array.isArray(value) && value.every((v) => typeof v === "string" || typeof v === "number")) {
      if (!value.length) return el("span", { class: "placeholder" }, "(none)");
      return el("ul", {}, value.map((v) => el("li", {}, String(v))));
    }
    return el("pre", {}, JSON.stringify(value, null, 2));
  }

  function tokensText(usage) {
    if (!usage || typeof usage !== "object") return "–";
    const cached = usage.input_tokens_details && usage.input_tokens_details.cached_tokens;
    const reasoning = usage.output_tokens_details && usage.output_tokens_details.reasoning_tokens;
    const parts = [`input ${count(usage.input_tokens)}` + (isNumber(cached) ? ` (cached ${count(cached)})` : ""),
      `output ${count(usage.output_tokens)}` + (isNumber(reasoning) ? ` (reasoning ${count(reasoning)})` : "")];
    if (isNumber(usage.total_tokens)) parts.push(`total ${count(usage.total_tokens)}`);
    if (isNumber(usage.calls)) parts.push(plural(usage.calls, "model call"));
    return parts.join(" · ");
  }

  function costSplit(r) {
    // A judged rollout's cost is the policy's plus the judge's: say which is which.
    if (!isNumber(r.judge_cost_usd)) return null;
    const policy = r.usage && isNumber(r.usage.cost) ? r.usage.cost : null;
    return el("span", { class: "cost-split" }, ` (policy $${usd(policy)} + judge $${usd(r.judge_cost_usd)})`);
  }

  function factsList(r) {
    const failed = r.error !== null && r.error !== undefined;
    const costByModel = r.cost_by_model && typeof r.cost_by_model === "object" ? Object.entries(r.cost_by_model) : [];
    const judged = r.judge_usage && typeof r.judge_usage === "object";
    return el("dl", { class: "facts", id: "facts" },
      fact("reward", "reward", failed ? "– (the rollout failed)" : reward(r.reward)),
      failed ? fact("error", "error", el("pre", { class: "error-text" }, String(r.error))) : null,
      fact("models", "models", Array.isArray(r.models) && r.models.length ? r.models.join(", ") : "–"),
      fact("tokens", judged ? "policy tokens" : "tokens", tokensText(r.usage)),
      judged ? fact("judge_tokens", "judge tokens", tokensText(r.judge_usage)) : null,
      fact("cost", "cost", isNumber(r.cost_usd) ? `$${usd(r.cost_usd)}` : "unknown", costSplit(r),
        r.cost_estimated ? el("span", { class: "estimated" }, " (estimated from catalog prices)") : null),
      costByModel.length ? fact("cost_by_model", "cost by model",
        el("ul", {}, costByModel.map(([model, cost]) => el("li", {}, `${model}: $${usd(cost)}`)))) : null,
      fact("retries", "retries", r.retries ?? "–"),
      fact("latency", "latency", isNumber(r.latency_s) ? `${seconds(r.latency_s)} s` : "–"),
      fact("agent", "agent", r.agent_name ?? "–"),
      fact("row_hash", "row hash", r.row_hash ?? "–"),
      fact("fingerprint", "settings fingerprint", r.fingerprint ?? "–"));
  }

  function verifierSection(r) {
    const own = new Set(meta ? meta.record_keys : []);
    const keys = Object.keys(r).filter((k) => !own.has(k));
    keys.sort((a, b) => (b === "reasons") - (a === "reasons")); // the verifier's own words first
    if (!keys.length) return el("p", { class: "placeholder", id: "verifier" }, "The verifier added no fields.");
    return el("dl", { class: "facts", id: "verifier" }, keys.map((k) => fact(k, k, valueNode(r[k]))));
  }

  function contentText(content) {
    if (typeof content === "string") return content;
    if (!Array.isArray(content)) return content === undefined || content === null ? "" : prettyJSON(content);
    return content.map((part) => {
      if (typeof part === "string") return part;
      if (part && typeof part.text === "string") return part.text;
      if (part && typeof part.refusal === "string") return `[refusal] ${part.refusal}`;
      return part && part.type ? `[${part.type}]` : "";
    }).filter((text) => text !== "").join("\n");
  }

  function turnHead(label, where, callId) {
    return el("div", { class: "turn-head" }, el("span", {}, label), el("span", {}, where === "input" ? "· input" : ""),
      callId ? el("span", { class: "call-id" }, callId) : null);
  }

  function turn(item, where) {
    if (typeof item === "string") item = { role: "user", content: item };
    if (!item || typeof item !== "object") {
      return el("li", { class: "turn kind-other", "data-kind": "other" }, el("pre", {}, prettyJSON(item)));
    }
    const kind = typeof item.type === "string" ? item.type : item.role ? "message" : "other";
    if (kind === "message") {
      const role = String(item.role || "assistant");
      return el("li", { class: `turn kind-message role-${role.replace(/[^a-z0-9_-]/gi, "")}`, "data-kind": "message",
                        "data-role": role, "data-where": where },
        turnHead(role, where), el("div", { class: "turn-body" }, contentText(item.content)));
    }
    if (kind === "function_call") {
      return el("li", { class: "turn kind-function_call", "data-kind": kind, "data-where": where },
        turnHead("tool call", where, item.call_id),
        el("div", {}, el("span", { class: "fn-name" }, String(item.name ?? "?"))),
        el("pre", { class: "fn-args" }, prettyJSON(item.arguments ?? "")));
    }
    if (kind === "function_call_output") {
      return el("li", { class: "turn kind-function_call_output", "data-kind": kind, "data-where": where },
        turnHead("tool result", where, item.call_id), el("pre", { class: "fn-output" }, prettyJSON(item.output ?? "")));
    }
    if (kind === "reasoning") {
      const texts = [...(item.summary || []), ...(item.content || [])]
        .map((part) => (part && typeof part.text === "string" ? part.text : "")).filter(Boolean);
      const body = texts.length ? texts.join("\n\n") : item.encrypted_content ? "(encrypted reasoning)" : "(empty)";
      return el("li", { class: "turn kind-reasoning", "data-kind": kind, "data-where": where },
        turnHead("reasoning", where), el("div", { class: "turn-body" }, body));
    }
    return el("li", { class: "turn kind-other", "data-kind": kind, "data-where": where },
      turnHead(kind, where), el("pre", {}, JSON.stringify(item, null, 2)));
  }

  function conversation(r) {
    const params = r.input && typeof r.input === "object" ? r.input.responses_create_params : null;
    const given = params && typeof params === "object" ? params.input : undefined;
    const inputs = typeof given === "string" ? [{ role: "user", content: given }] : Array.isArray(given) ? given : [];
    const outputs = r.response && Array.isArray(r.response.output) ? r.response.output : [];
    const failed = r.error !== null && r.error !== undefined;
    const list = el("ol", { class: "conversation", id: "conversation" }, inputs.map((m) => turn(m, "input")),
      el("li", { class: "divider" }, "trajectory (response.output)"),
      outputs.length ? outputs.map((item) => turn(item, "output"))
        : el("li", { class: "placeholder" }, failed ? "No trajectory: the rollout failed." : "No trajectory."));
    const tools = params && Array.isArray(params.tools) ? params.tools : [];
    const offered = tools.length ? el("details", { class: "tools" }, el("summary", {}, `Tools offered (${tools.length})`),
      el("ul", {}, tools.map((t) => el("li", {}, el("span", { class: "fn-name" }, String(t.name ?? t.type ?? "?")),
        t.description ? ` — ${t.description}` : "")))) : null;
    return offered ? [list, offered] : [list];
  }

  function rawRecord(r) {
    const pre = el("pre", {});
    const details = el("details", { class: "raw" }, el("summary", {}, "Raw record (JSON)"), pre);
    details.addEventListener("toggle", () => {
      if (details.open && !pre.textContent) pre.textContent = JSON.stringify(r, null, 2);
    });
    return details;
  }

  function renderDetail(doc) {
    const r = doc.record;
    const failed = r.error !== null && r.error !== undefined;
    const badge = failed ? el("span", { class: "badge failed", id: "detail-reward" }, "failed")
      : el("span", { class: `badge ${rewardClass(r.reward)}`, id: "detail-reward" }, `reward ${reward(r.reward)}`);
    return [
      el("h2", {}, `Rollout ${doc.index}`, badge),
      el("p", { class: "file" }, `row ${r.row_index ?? "?"} · repeat ${r.repeat_index ?? "?"} · line ${doc.line}`),
      factsList(r),
      el("h3", {}, "Verifier"), verifierSection(r),
      el("h3", {}, "Conversation"), ...conversation(r),
      rawRecord(r),
    ];
  }

  function markSelected() {
    for (const tr of $("rollouts").tBodies[0].rows) tr.classList.toggle("selected", Number(tr.dataset.index) === selected);
  }

  async function showRollout(index) {
    selected = index;
    markSelected();
    history.replaceState(null, "", `#rollout-${index}`);
    const token = ++detailToken;
    const detail = $("detail");
    detail.replaceChildren(el("p", { class: "placeholder" }, `Loading rollout ${index}…`));
    let doc;
    try {
      doc = await source.record(index);
    } catch (error) {
      if (token === detailToken) detail.replaceChildren(el("p", { class: "load-error" }, error.message));
      return;
    }
    if (token !== detailToken) return;
    detail.replaceChildren(...renderDetail(doc));
    detail.dataset.index = String(doc.index);
    detail.scrollTop = 0;
  }

  // ------------------------------------------------------------ wiring

  function wire() {
    let timer = null;
    const later = () => {
      clearTimeout(timer);
      timer = setTimeout(() => { readFilters(); refresh(); }, 250);
    };
    const now = () => { clearTimeout(timer); readFilters(); refresh(); };
    for (const id of ["reward-min", "reward-max", "search"]) $(id).addEventListener("input", later);
    for (const id of ["reward-min", "reward-max", "search"]) $(id).addEventListener("change", now);
    for (const id of ["model", "error"]) $(id).addEventListener("change", now);
    $("filters").addEventListener("submit", (event) => { event.preventDefault(); now(); });
    $("filters").addEventListener("reset", () => setTimeout(now, 0));
    $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); refresh(); });
    $("next").addEventListener("click", () => { state.offset += PAGE_SIZE; refresh(); });
    for (const th of document.querySelectorAll("th[data-sort]")) {
      th.addEventListener("click", () => {
        state.sort = state.sort === th.dataset.sort ? `-${th.dataset.sort}` : th.dataset.sort;
        state.offset = 0;
        refresh();
      });
    }
    const body = $("rollouts").tBodies[0];
    body.addEventListener("click", (event) => {
      const tr = event.target.closest("tr[data-index]");
      if (tr) showRollout(Number(tr.dataset.index));
    });
    body.addEventListener("keydown", (event) => {
      const tr = event.target.closest("tr[data-index]");
      if (!tr) return;
      const next = event.key === "ArrowDown" ? tr.nextElementSibling : event.key === "ArrowUp" ? tr.previousElementSibling
        : event.key === "Enter" ? tr : null;
      if (!next) return;
      event.preventDefault();
      next.focus();
      showRollout(Number(next.dataset.index));
    });
  }

  async function start() {
    wire();
    try {
      await loadMeta();
    } catch (error) {
      showError(error);
      return;
    }
    await refresh();
    const linked = /^#rollout-(\d+)$/.exec(location.hash);
    if (linked) showRollout(Number(linked[1]));
    document.body.dataset.ready = "true";
  }

  start();
})();
