-- prompt_decorator.lua - inject a system prompt chosen by the caller's key
-- group.
--
-- Stage: on_request. The group is req.group when the kernel knows it, else
-- the first `groups` rule whose pattern matches the key name, else
-- "default". The group's prompt is added as the first system message (or,
-- with mode = "merge", prepended to an existing first system message).
-- Injecting is idempotent. The group is recorded in req.meta.prompt_group.
--
-- Arguments:
--   prompts  { group = "system prompt", ... }  (a "default" entry is optional)
--   groups   { { match = "team-a-*", group = "support" }, ... }
--   mode     "prepend" (default) or "merge"
local args = ... or {}
local PROMPTS = args.prompts or {}
local GROUPS = args.groups or {}
local MODE = args.mode or "prepend"

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

function on_request(req)
  local group = group_of(req)
  local prompt = PROMPTS[group]
  if type(prompt) ~= "string" or type(req.messages) ~= "table" then return end
  local first = req.messages[1]
  if first and first.role == "system" and type(first.content) == "string" then
    if first.content == prompt or first.content:sub(1, #prompt) == prompt then return end
    if MODE == "merge" then
      first.content = prompt .. "\n\n" .. first.content
      req.meta.prompt_group = group
      return
    end
  end
  table.insert(req.messages, 1, { role = "system", content = prompt })
  req.meta.prompt_group = group
end
