-- tiered_billing.lua - price by time of day and by key group, with cached
-- prompt tokens discounted.
--
-- Stage: on_usage. The charge in micro-units is
--   ((prompt - cached) * input + cached * cached_input + completion * output)
--     / 1,000,000 * time_percent/100 * group_percent/100
-- rounded half up, where prices are micro-units per 1M tokens
-- (price.cached_input defaults to cached_percent of price.input).
--
-- Arguments:
--   utc_offset_hours  local time for the peak window (default 8, China)
--   peak              { from = 9, to = 18 }: local hours [from, to); a window
--                     with from > to wraps midnight; from == to never matches
--   peak_percent      default 100;  offpeak_percent  default 50
--   group_percent     { default = 100, vip = 80, internal = 0 }
--   groups            { { match = "vip-*", group = "vip" }, ... } (req.group wins)
--   cached_percent    default 10
local args = ... or {}
local OFFSET = args.utc_offset_hours or 8
local PEAK = args.peak or { from = 9, to = 18 }
local PEAK_PCT = args.peak_percent or 100
local OFF_PCT = args.offpeak_percent or 50
local GROUP_PCT = args.group_percent or { default = 100, vip = 80, internal = 0 }
local GROUPS = args.groups or {}
local CACHED_PCT = args.cached_percent or 10

local function int(v)
  if math.type(v) == "integer" and v > 0 then return v end
  if type(v) == "number" and v > 0 then return math.floor(v) end
  return 0
end

local function glob(name, pat)
  if pat:sub(-1) == "*" then return name:sub(1, #pat - 1) == pat:sub(1, -2) end
  return name == pat
end

local function group_of(req)
  if type(req.group) == "string" then return req.group end
  for _, rule in ipairs(GROUPS) do
    if glob(req.key or "", rule.match) then return rule.group end
  end
  return "default"
end

local function in_peak(hour)
  local from, to = PEAK.from, PEAK.to
  if from < to then return hour >= from and hour < to end
  if from > to then return hour >= from or hour < to end
  return false
end

function on_usage(usage, price, charge)
  local prompt = int(usage.prompt_tokens)
  local completion = int(usage.completion_tokens)
  local details = usage.prompt_tokens_details
  local cached = type(details) == "table" and int(details.cached_tokens) or 0
  if cached > prompt then cached = prompt end
  local pin, pout = int(price.input), int(price.output)
  local pcached = price.cached_input ~= nil and int(price.cached_input) or pin * CACHED_PCT // 100
  local base = (prompt - cached) * pin + cached * pcached + completion * pout
  local hour = tonumber(os.date("!%H", os.time() + OFFSET * 3600))
  local tpct = in_peak(hour) and PEAK_PCT or OFF_PCT
  local group = group_of(lm.request)
  local gpct = GROUP_PCT[group] or GROUP_PCT.default or 100
  local den = 1000000 * 100 * 100
  lm.ctx.billing = { group = group, hour = hour, time_percent = tpct, group_percent = gpct }
  return (base * tpct * gpct + den // 2) // den
end

function on_log(record)
  if lm.ctx.billing then record.billing = lm.ctx.billing end
end
