-- route_latency.lua - send each request to the fastest healthy channel whose
-- price is under a ceiling.
--
-- Stage: on_route. Candidates over the ceiling, unhealthy, or failing more
-- often than max_error_rate are dropped; the rest are ordered by average
-- latency (time to first token for stream requests, when known), then by
-- in-flight count, then by price. A channel with no figures yet (latency 0)
-- sorts first, so new channels get traffic and figures.
--
-- Arguments (plugins.conf `args`, all optional):
--   max_price       ceiling on price.input + price.output, micro-units per
--                   1M tokens (default: none)
--   max_error_rate  0..1 (default 0.5)
--   fallback        true: when nothing passes, keep every healthy candidate
--                   ordered by price instead of returning no channel
local args = ... or {}
local MAX_PRICE = args.max_price
local MAX_ERROR_RATE = args.max_error_rate or 0.5
local FALLBACK = args.fallback == true

local function num(v)
  if type(v) == "number" then return v end
  return 0
end

local function price(c)
  local p = c.price
  if type(p) ~= "table" then return num(p) end
  return num(p.input) + num(p.output)
end

local function latency(c, stream)
  if stream and num(c.ttft_ms) > 0 then return num(c.ttft_ms) end
  return num(c.latency_ms)
end

function on_route(req, candidates)
  local stream = req.params.stream == true
  local keep, healthy = {}, {}
  for _, c in ipairs(candidates) do
    if c.healthy ~= false then
      healthy[#healthy + 1] = c
      if num(c.error_rate) <= MAX_ERROR_RATE and (not MAX_PRICE or price(c) <= MAX_PRICE) then
        keep[#keep + 1] = c
      end
    end
  end
  if #keep == 0 and FALLBACK then
    keep = healthy
    table.sort(keep, function(a, b) return price(a) < price(b) end)
  else
    table.sort(keep, function(a, b)
      local la, lb = latency(a, stream), latency(b, stream)
      if la ~= lb then return la < lb end
      if num(a.inflight) ~= num(b.inflight) then return num(a.inflight) < num(b.inflight) end
      return price(a) < price(b)
    end)
  end
  local names = {}
  for i, c in ipairs(keep) do names[i] = c.name end
  return names
end
