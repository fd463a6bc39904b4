-- token_budget.lua - a per-key token budget per day (or hour): requests of a
-- key that used its budget are refused with 429 until the period ends.
--
-- Stages: on_request (check), on_usage (count). Counters live in lm.shared,
-- so every worker sees the same figure. A request is refused when the
-- tokens already used plus a rough estimate of its prompt (bytes / 4) go
-- over the budget. Keys without a budget (and no "default") are not limited.
--
-- Arguments:
--   budgets           { ["key-name"] = tokens, default = tokens }
--   period            "day" (default) or "hour", in local time
--   utc_offset_hours  default 8
--   estimate          false: check only the tokens already used
local args = ... or {}
local BUDGETS = args.budgets or { default = 1000000 }
local PERIOD = args.period or "day"
local OFFSET = args.utc_offset_hours or 8
local ESTIMATE = args.estimate ~= false

local function counter(key)
  local fmt = PERIOD == "hour" and "!%Y%m%d%H" or "!%Y%m%d"
  return "token_budget:" .. key .. ":" .. os.date(fmt, os.time() + OFFSET * 3600)
end

local function ttl()
  return PERIOD == "hour" and 7200 or 172800
end

local function prompt_bytes(req)
  local n = 0
  for _, m in ipairs(req.messages or {}) do
    if type(m.content) == "string" then
      n = n + #m.content
    elseif type(m.content) == "table" then
      for _, part in ipairs(m.content) do
        if type(part.text) == "string" then n = n + #part.text end
      end
    end
  end
  return n
end

function on_request(req)
  local budget = BUDGETS[req.key] or BUDGETS.default
  if not budget then return end
  local used = lm.shared.get(counter(req.key)) or 0
  local need = ESTIMATE and prompt_bytes(req) // 4 or 0
  if used >= budget or used + need > budget then
    return lm.reject(429, string.format("token budget exceeded for this key: %d of %d tokens used this %s",
      used, budget, PERIOD), "token_budget_exceeded")
  end
end

function on_usage(usage)
  local key = lm.request.key
  if not (BUDGETS[key] or BUDGETS.default) then return end
  local total = usage.total_tokens
  if math.type(total) ~= "integer" then
    total = (usage.prompt_tokens or 0) + (usage.completion_tokens or 0)
  end
  lm.shared.incr(counter(key), math.floor(total), ttl())
end
