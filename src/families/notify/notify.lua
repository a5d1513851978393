-- The notify family: notify(channel, message, {fields, required, ...}) to a channel the config
-- names (slack, pagerduty, webhook), and the run's summary when it ends (notify.on_end).
-- Destinations, routing keys and signing keys are secrets: they go into the request only; the
-- audit records the channel's name and type (see src/families/notify/notify.md).
local host = require "rbl.host"
local prim = require "rbl.prim"
local http = require "rbl.http"
local json = require "rbl.json"
local nc = require "rbl.notify.c"

local M = {}
local type, tostring, pcall, error, ipairs, next, rawget = type, tostring, pcall, error, ipairs, next, rawget
local fmt, concat, sort, floor = string.format, table.concat, table.sort, math.floor

local PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
local TYPES = { slack = true, pagerduty = true, webhook = true }
local ACTIONS = { trigger = true, acknowledge = true, resolve = true }
local SEVERITIES = { critical = true, error = true, warning = true, info = true }
local DEFAULTS = { attempts = 4, max_time = 30, backoff = 1, timeout = 10 }
local MAX_MESSAGE = 64 * 1024
local OPTS = { fields = true, required = true, action = true, severity = true, source = true }

local function notify_cfg()
  local c = host.config()
  local n = type(c) == "table" and rawget(c, "notify") or nil
  return type(n) == "table" and n or {}
end

local function num(v, def, lo, hi)
  if type(v) ~= "number" or v ~= v then return def end
  if v < lo then return lo end
  if v > hi then return hi end
  return v
end

-- The channel's settings, read raw from the config; raises invalid for a channel that does not
-- exist or is malformed (a mistake in the runbook or the config, not a delivery failure).
local function channel(name)
  if type(name) ~= "string" or name == "" then host.raise("invalid", "notify: channel must be a non-empty string") end
  local chans = rawget(notify_cfg(), "channels")
  local c = type(chans) == "table" and rawget(chans, name) or nil
  if type(c) ~= "table" then
    host.raise("invalid", fmt("notify: no channel %q in the config's notify.channels", name))
  end
  local ty = rawget(c, "type")
  if not TYPES[ty] then
    host.raise("invalid", fmt("notify: channel %q: type must be \"slack\", \"pagerduty\" or \"webhook\"", name))
  end
  local function str(k)
    local v = rawget(c, k)
    if v ~= nil and type(v) ~= "string" then host.raise("invalid", fmt("notify: channel %q: %s must be a string", name, k)) end
    return v
  end
  local ch = { name = name, type = ty, url = str("url"), webhook = str("webhook"),
    routing_key = str("routing_key"), hmac_key = str("hmac_key"),
    attempts = floor(num(rawget(c, "attempts"), DEFAULTS.attempts, 1, 10)),
    max_time = num(rawget(c, "max_time"), DEFAULTS.max_time, 1, 600),
    backoff = num(rawget(c, "backoff"), DEFAULTS.backoff, 0.05, 60),
    timeout = num(rawget(c, "timeout"), DEFAULTS.timeout, 1, 120) }
  if ty == "slack" and not ch.url and not ch.webhook then
    host.raise("invalid", fmt("notify: channel %q: a slack channel needs webhook (a secret name) or url", name))
  elseif ty == "pagerduty" and not ch.routing_key then
    host.raise("invalid", fmt("notify: channel %q: a pagerduty channel needs routing_key (a secret name)", name))
  elseif ty == "webhook" and (not (ch.url or ch.webhook) or not ch.hmac_key) then
    host.raise("invalid", fmt("notify: channel %q: a webhook channel needs url (or webhook, a secret name) and hmac_key (a secret name)", name))
  end
  return ch
end

-- A secret's value, resolved in C exactly as secret() and the gate resolve it, and registered
-- for masking before it is used anywhere.
local function secret_value(ch, what, name)
  local v, why = nc.secret(name)
  if not v then host.raise("not_found", fmt("notify: channel %q: %s: %s", ch.name, what, tostring(why))) end
  if v == "" then host.raise("not_found", fmt("notify: channel %q: %s: secret %s is empty", ch.name, what, name)) end
  host.record("secret", { name = name })
  host.secret(name, v)
  return v
end

local function destination(ch)
  if ch.url then return ch.url end
  if ch.type == "pagerduty" then return PAGERDUTY_URL end
  return secret_value(ch, "webhook", ch.webhook)
end

-- Copies a runbook value with raw access only (no runbook metamethod runs in host code).
local function copy(v, depth, budget)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" then return v end
  if t == "userdata" then return tostring(v) == "[redacted]" and "[redacted]" or nil end -- a secret stays opaque
  if t ~= "table" then host.raise("invalid", "notify: fields may hold strings, numbers, booleans and tables") end
  if depth > 8 then host.raise("invalid", "notify: fields nested too deeply (limit 8)") end
  local out = {}
  for k, x in next, v do
    budget[1] = budget[1] - 1
    if budget[1] < 0 then host.raise("invalid", "notify: fields too large (limit 1000 values)") end
    if type(k) ~= "string" and math.type(k) ~= "integer" then host.raise("invalid", "notify: field names must be strings") end
    out[k] = copy(x, depth + 1, budget)
  end
  return out
end

local function scalar_text(v)
  if type(v) == "table" then
    local s = json.encode(v)
    return s or "?"
  end
  return tostring(v)
end

-- Fields as a sorted list of {name, text}.
local function field_list(fields)
  local list = {}
  for k, v in next, fields or {} do list[#list + 1] = { name = tostring(k), value = v, text = scalar_text(v) } end
  sort(list, function(a, b) return a.name < b.name end)
  return list
end

local function slack_escape(s) return (s:gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;")) end

local function clip(s, n)
  if #s <= n then return s end
  return s:sub(1, n - 3) .. "..."
end

local function run_info()
  local info = host.info() or {}
  return { incident = info.incident, run = info.run, tenant = host.tenant() or info.tenant_label,
    runbook = M.book and M.book.meta and M.book.meta.id or info.default_id }
end

-- Slack incoming webhook: `text` (the notification's fallback) and Block Kit `blocks`.
local function slack_body(message, fields, meta)
  local blocks = { { type = "section", text = { type = "mrkdwn", text = clip(message, 3000) } } }
  local list = field_list(fields)
  for i = 1, #list, 10 do -- a section holds at most 10 fields
    local fs = {}
    for j = i, math.min(i + 9, #list) do
      local f = list[j]
      fs[#fs + 1] = { type = "mrkdwn", text = clip("*" .. slack_escape(f.name) .. "*\n" .. slack_escape(f.text), 2000) }
    end
    blocks[#blocks + 1] = { type = "section", fields = fs }
  end
  local ctx = { "rbl", "runbook " .. tostring(meta.runbook), "incident " .. tostring(meta.incident) }
  if meta.tenant then ctx[#ctx + 1] = "tenant " .. meta.tenant end
  blocks[#blocks + 1] = { type = "context", elements = { { type = "mrkdwn", text = slack_escape(concat(ctx, " | ")) } } }
  return { text = clip(message, 40000), blocks = blocks }
end

-- PagerDuty Events API v2.
local function pagerduty_body(key, message, fields, meta, o)
  local action = o.action or "trigger"
  local body = { routing_key = key, event_action = action, dedup_key = meta.incident }
  if action == "trigger" then
    local details = {}
    for k, v in next, fields or {} do details[k] = v end
    details.incident, details.run, details.runbook, details.tenant = meta.incident, meta.run, meta.runbook, meta.tenant
    body.payload = { summary = clip(message, 1024), source = o.source or meta.tenant or "rbl",
      severity = o.severity or "error", custom_details = details }
    body.client = "rbl"
  end
  return body
end

local function webhook_body(chname, message, fields, meta, extra)
  local body = { channel = chname, message = message, fields = json.object(fields or {}),
    incident = meta.incident, run = meta.run, runbook = meta.runbook, tenant = meta.tenant, sent_at = os.time() }
  for k, v in next, extra or {} do body[k] = v end
  return body
end

-- Text safe for the audit, the report and errors: no URL, no secret.
local function safe(s, url)
  s = tostring(s or "")
  if url and url ~= "" then
    local i = 1
    while true do
      local a, b = s:find(url, i, true)
      if not a then break end
      s = s:sub(1, a - 1) .. "<channel url>" .. s:sub(b + 1)
      i = a + 13
    end
  end
  s = s:gsub("%a[%w+.-]*://[^%s\"']*", "<url>")
  return host.mask(s)
end

local function retry_after(v)
  if type(v) ~= "string" then return nil end
  local n = v:match("^%s*(%d+)%s*$")
  if n then return tonumber(n) end
  local t = nc.http_date(v)
  if t then return math.max(0, t - os.time()) end
  return nil
end

local function attempt_text(a)
  local s = a.status and tostring(a.status) or (a.error_code or "error")
  if a.wait_ms then s = s .. fmt(" (waited %.1f s)", a.wait_ms / 1000) end
  return s
end

-- Sends one prepared request with retries: 429 and 5xx (honouring Retry-After, seconds or an
-- HTTP date) and connection failures, with exponential backoff, within ch.attempts and
-- ch.max_time. Returns the final status and the attempts; raises with every attempt named.
local function send(call, ch, req)
  local attempts, t0 = {}, host.now_ms()
  local what = fmt("notify %s (%s)", ch.name, ch.type)
  local last
  for n = 1, ch.attempts do
    local hdrs = req.headers
    if req.sign then hdrs = req.sign() end
    local ok, res = pcall(http.request, call, { method = "POST", url = req.url, headers = hdrs, body = req.body,
      timeout = ch.timeout, connect_timeout = math.min(ch.timeout, 10), max_response = 64 * 1024 })
    local a = { n = n }
    attempts[#attempts + 1] = a
    local retry, wait
    if ok then
      a.status = res.status
      if res.status >= 200 and res.status < 300 then return res, attempts end
      local body = (res.body or ""):gsub("%s+$", "")
      last = fmt("HTTP %d%s", res.status, body ~= "" and (": " .. clip(safe(body, req.url), 200)) or "")
      if res.status == 429 or res.status >= 500 then
        retry = true
        wait = retry_after(res.headers and res.headers["retry-after"])
        a.retry_after = wait
      end
    else
      local code = type(res) == "table" and res.code or "failed"
      if code == "refused" or code == "canceled" then error(res, 0) end
      a.error_code = code
      last = code .. ": " .. safe(type(res) == "table" and res.message or res, req.url)
      retry = code == "unavailable"
    end
    a.error = last
    if not retry or n == ch.attempts then break end
    wait = wait or ch.backoff * 2 ^ (n - 1)
    local left = ch.max_time - (host.now_ms() - t0) / 1000
    if wait > left then
      last = last .. fmt("; next attempt in %g s would pass the channel's max_time (%g s)", wait, ch.max_time)
      a.error = last
      break
    end
    a.wait_ms = floor(wait * 1000 + 0.5)
    host.sleep(call, wait)
  end
  local seq = {}
  for _, a in ipairs(attempts) do seq[#seq + 1] = attempt_text(a) end
  error(host.error("unavailable", fmt("%s: not delivered after %d attempt%s [%s]: %s", what, #attempts,
    #attempts == 1 and "" or "s", concat(seq, ", "), last or "failed"), { attempts = attempts }), 0)
end

-- Builds the request for a channel: url, headers, body (and a signer for webhooks, so every
-- attempt carries a fresh timestamp).
local function build(ch, message, fields, o, extra)
  local meta = run_info()
  local url = destination(ch)
  local headers = { "Content-Type: application/json", "User-Agent: rbl-notify" }
  local body
  if ch.type == "slack" then
    body = json.encode(slack_body(message, fields, meta))
  elseif ch.type == "pagerduty" then
    local key = secret_value(ch, "routing_key", ch.routing_key)
    body = json.encode(pagerduty_body(key, message, fields, meta, o))
  else
    local key = secret_value(ch, "hmac_key", ch.hmac_key)
    body = json.encode(webhook_body(ch.name, message, fields, meta, extra))
    return { url = url, body = body, sign = function()
      local ts = tostring(os.time())
      local h = { headers[1], headers[2], "X-Rbl-Timestamp: " .. ts,
        "X-Rbl-Signature: sha256=" .. nc.hmac_sha256_hex(key, ts .. "." .. body) }
      return h
    end }
  end
  return { url = url, headers = headers, body = body }
end

local function note(rec)
  local book = M.book
  if book and book.note_notification then book.note_notification(rec) end
end

-- One audited delivery: a primitive named "notify" whose intent records the channel's name and
-- type only. Returns {sent = true, ...} or raises (the result record carries the error).
local function deliver(ch, message, fields, o, extra)
  local p = prim.define("notify", {
    scope = function() return { channel = ch.name, type = ch.type } end,
    effect = function(call)
      if host.dry_run() then
        return { sent = false, dry_run = true, channel = ch.name, type = ch.type },
          { channel = ch.name, type = ch.type, sent = false, dry_run = true }
      end
      local req = build(ch, message, fields, o, extra)
      local res, attempts = send(call, ch, req)
      local summary_attempts = {}
      for i, a in ipairs(attempts) do
        summary_attempts[i] = { status = a.status, error = a.error, retry_after = a.retry_after, wait_ms = a.wait_ms }
      end
      return { sent = true, channel = ch.name, type = ch.type, status = res.status, attempts = #attempts },
        { channel = ch.name, type = ch.type, sent = true, status = res.status, attempts = summary_attempts }
    end,
  })
  return p(ch.name, ch.type)
end

local function errtext(e)
  if type(e) == "table" then
    local c, m = rawget(e, "code"), rawget(e, "message")
    return (type(c) == "string" and (c .. ": ") or "") .. tostring(m)
  end
  return tostring(e)
end

-- notify(channel, message, {fields, required, action, severity, source})
function M.notify(name, message, opts)
  if host.check_mode() then return prim.inert end
  if opts ~= nil and type(opts) ~= "table" then host.raise("invalid", "notify: options must be a table") end
  opts = opts or {}
  for k in next, opts do
    if not OPTS[k] then host.raise("invalid", fmt("notify: unknown option %q", tostring(k))) end
  end
  local required = rawget(opts, "required") == true
  local ch = channel(name)
  if type(message) ~= "string" or message == "" then host.raise("invalid", "notify: message must be a non-empty string") end
  if #message > MAX_MESSAGE then host.raise("invalid", "notify: message over 64 KiB") end
  local fields = rawget(opts, "fields")
  if fields ~= nil and type(fields) ~= "table" then host.raise("invalid", "notify: fields must be a table") end
  fields = fields and copy(fields, 0, { 1000 }) or nil
  local o = {}
  for _, k in ipairs({ "action", "severity", "source" }) do
    local v = rawget(opts, k)
    if v ~= nil and type(v) ~= "string" then host.raise("invalid", "notify: " .. k .. " must be a string") end
    o[k] = v
  end
  if o.action and not ACTIONS[o.action] then host.raise("invalid", "notify: action must be trigger, acknowledge or resolve") end
  if o.severity and not SEVERITIES[o.severity] then host.raise("invalid", "notify: severity must be critical, error, warning or info") end
  if (o.action or o.severity or o.source) and ch.type ~= "pagerduty" then
    host.raise("invalid", fmt("notify: action, severity and source apply to pagerduty channels (%q is %s)", ch.name, ch.type))
  end
  local ok, r = pcall(deliver, ch, message, fields, o)
  if ok then
    note({ channel = ch.name, type = ch.type, sent = r.sent, dry_run = r.dry_run, status = r.status, attempts = r.attempts })
    return r
  end
  local text = safe(errtext(r))
  note({ channel = ch.name, type = ch.type, sent = false, error = text })
  local code = type(r) == "table" and rawget(r, "code") or "failed"
  if required or code == "refused" or code == "canceled" or host.killed() then error(r, 0) end
  host.progress("  " .. text)
  return { sent = false, channel = ch.name, type = ch.type, error = text, code = code }
end

-- The run's summary to config notify.on_end = {channel, when = "failed" | "always"}: outcome,
-- tenant, incident, steps (name and status) and the audit head. Never raises.
function M.on_end(book, outcome)
  local cfg = rawget(notify_cfg(), "on_end")
  if type(cfg) ~= "table" or host.check_mode() or host.killed() then return end
  local when = rawget(cfg, "when") or "failed"
  if when ~= "always" and when ~= "failed" then
    host.progress("notify.on_end: when must be \"failed\" or \"always\"; nothing sent")
    return
  end
  if when == "failed" and outcome == "resolved" then return end
  local name = rawget(cfg, "channel")
  local ok, err = pcall(function()
    local ch = channel(name)
    local meta = run_info()
    local steps, lines = {}, {}
    for _, e in ipairs(book.trace or {}) do
      steps[#steps + 1] = { name = e.name, status = e.status }
      lines[#lines + 1] = fmt("%s: %s", e.name, e.status)
    end
    local head = nc.audit_head()
    local message = fmt("rbl: runbook %s %s (incident %s%s)", tostring(meta.runbook), outcome,
      tostring(meta.incident), meta.tenant and (", tenant " .. meta.tenant) or "")
    local fields = { outcome = outcome, tenant = meta.tenant, incident = meta.incident, audit_head = head,
      steps = #lines > 0 and concat(lines, "\n") or "(none)" }
    local o, extra = {}, nil
    if ch.type == "pagerduty" then
      o.action = outcome == "resolved" and "resolve" or "trigger"
      fields.steps = steps
    elseif ch.type == "webhook" then
      fields = nil
      extra = { event = "run_end", outcome = outcome, audit_head = head, steps = json.array(steps) }
    end
    local r = deliver(ch, message, fields, o, extra)
    note({ channel = ch.name, type = ch.type, sent = r.sent, dry_run = r.dry_run, status = r.status,
      attempts = r.attempts, on_end = true })
  end)
  if not ok then
    local text = safe(errtext(err))
    note({ channel = type(name) == "string" and name or "?", sent = false, error = text, on_end = true })
    host.progress("notify.on_end: " .. text)
  end
end

function M.globals(book)
  M.book = book
  book.on_end = M.on_end
  return { notify = M.notify }
end

return M
