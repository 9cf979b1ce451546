// The operator's status page (CONTRACT §8): asks GET /admin/v1/status every
// second and draws the answer. Every text goes in through textContent, never
// as markup: a log line or a sender ID cannot become part of the page.
"use strict";

const SOURCE = "/admin/v1/status";
const REFRESH_MS = 1000;

const byId = (id) => document.getElementById(id);

function text(id, value) {
  byId(id).textContent = value;
}

function rate(value) {
  // null until the router has two looks at its counters to compare
  if (value === null || value === undefined) return "…";
  return value < 10 ? value.toFixed(2) : value.toFixed(1);
}

function count(value) {
  return Number(value).toLocaleString("en");
}

function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "";
}

function cell(content, className) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  if (className) td.className = className;
  return td;
}

function badge(label, className) {
  const span = document.createElement("span");
  span.className = "badge " + className;
  span.textContent = label;
  return span;
}

function health(value) {
  const wrap = document.createElement("span");
  const meter = document.createElement("meter");
  Object.assign(meter, { min: 0, max: 1, low: 0.5, high: 0.9, optimum: 1, value });
  wrap.append(meter, " " + value.toFixed(2));
  return wrap;
}

function fill(tableId, rows, emptyText) {
  const body = byId(tableId).tBodies[0];
  const width = byId(tableId).tHead.rows[0].cells.length;
  if (rows.length === 0) {
    const td = cell(emptyText, "muted");
    td.colSpan = width;
    const tr = document.createElement("tr");
    tr.append(td);
    body.replaceChildren(tr);
    return;
  }
  body.replaceChildren(...rows);
}

function row(cells, attributes) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  for (const [name, value] of Object.entries(attributes || {})) tr.setAttribute(name, value);
  return tr;
}

function carrierRow(c) {
  const binds = `${c.binds_up}/${c.binds_total}`;
  const bindState = c.binds_up === 0 ? "bad" : c.binds_up < c.binds_total ? "warn" : "ok";
  const breakerState = { closed: "ok", half_open: "warn", open: "bad" }[c.breaker] || "warn";
  return row(
    [
      cell(c.name, "name"),
      cell(badge(binds, bindState)),
      cell(health(c.health)),
      cell(badge(c.breaker.replace("_", "-"), breakerState)),
      cell(rate(c.submit_per_second), "num submit-rate"),
      cell(rate(c.errors_per_second), "num"),
      cell(c.submitted_total > 0 ? `${c.latency_ms.toFixed(1)} ms` : "–", "num"),
      cell(count(c.submitted_total), "num"),
      cell(count(c.errors_total), "num"),
    ],
    { "data-carrier": c.name },
  );
}

function queueRow(q) {
  const drains = q.drain_seconds === null ? "held" : `${q.drain_seconds} s`;
  return row([
    cell(q.sender, "name"),
    cell(q.country || "any"),
    cell(count(q.depth), "num"),
    cell(String(q.rate), "num"),
    cell(drains, "num"),
  ]);
}

function senderRow(s) {
  return row([
    cell(s.number, "name"),
    cell(s.account),
    cell(badge(s.state, s.state === "suspended" ? "bad" : "warn")),
    cell(`${(s.rate * 100).toFixed(1)} %`, "num"),
    cell(`${count(s.opt_outs)} / ${count(s.recipients)}`, "num"),
    cell(new Date(s.since).toLocaleString()),
  ]);
}

function errorRow(e) {
  const details = Object.entries(e.details)
    .map(([name, value]) => `${name}=${value}`)
    .join("  ");
  return row([
    cell(clock(e.at)),
    cell(badge(e.level, e.level === "warning" || e.level === "info" ? "warn" : "bad")),
    cell(e.event, "name"),
    cell(count(e.count), "num"),
    cell(details, "details"),
  ]);
}

function draw(s) {
  text("instance", `${s.instance} · ${s.version} (${s.build})`);
  const db = byId("database");
  db.textContent = s.database.reachable ? "database up" : "database DOWN";
  db.className = "badge " + (s.database.reachable ? "ok" : "bad");
  text("updated", "updated " + clock(s.at));

  const m = s.messages;
  for (const name of ["in", "out", "rejected", "receipts"]) {
    text(`rate-${name}`, rate(m[`${name}_per_second`]));
    text(`total-${name}`, `${count(m[`${name}_total`])} since start`);
  }
  text("queue-depth", count(s.queues.depth));
  text("queue-active", `${count(s.queues.active)} sender queues`);

  fill("carriers", s.carriers.map(carrierRow), "no carrier configured");
  fill("queues", s.queues.busiest.map(queueRow), "every sender queue is empty");
  const senders = s.senders;
  text("sender-counts", `${senders.flagged_count} flagged, ${senders.suspended_count} suspended`);
  fill("senders", senders.suspended.concat(senders.flagged).map(senderRow), "none");
  fill("errors", s.errors.map(errorRow), "no errors since start");
}

function trouble(message) {
  const banner = byId("problem");
  banner.hidden = message === null;
  banner.textContent = message || "";
  document.body.classList.toggle("stale", message !== null);
}

async function refresh() {
  try {
    const answer = await fetch(SOURCE, {
      cache: "no-store",
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (answer.status === 401) {
      trouble("The operator token was refused: reload the page to sign in again.");
    } else if (!answer.ok) {
      trouble(`The router answered ${answer.status}; retrying.`);
    } else {
      draw(await answer.json());
      trouble(null);
    }
  } catch (error) {
    trouble("The router does not answer; retrying.");
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
