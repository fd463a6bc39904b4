-- group_channels.lua - 渠道只对某些分组开放（One API / New API 渠道的“分组”字段）。
-- A channel open to some key groups only (the "group" field of a One API
-- channel). Used by docs/zh-CN/migrate-from-one-api.md.
--
-- Stage: on_route. args:
--   channels  { ["qwen-vip"] = { "vip", "svip" }, ... }: the groups that may
--             use each listed channel; channels not listed are open to all
--   default   the group of a key without one (default "default")
-- A request left without a channel is refused with 403 model_not_allowed.
local args = ... or {}
local CHANNELS = args.channels or {}
local DEFAULT = args.default or "default"

local function allowed(name, group)
  local groups = CHANNELS[name]
  if groups == nil then return true end
  for _, g in ipairs(groups) do
    if g == group then return true end
  end
  return false
end

function on_route(req, candidates)
  local group = req.group or DEFAULT
  local names = {}
  for _, c in ipairs(candidates) do
    if allowed(c.name, group) then names[#names + 1] = c.name end
  end
  if #names == 0 then
    return lm.reject(403, "model " .. tostring(req.model) .. " is not available to group " .. group,
                     "model_not_allowed")
  end
  return names
end
