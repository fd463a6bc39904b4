-- failover_content_filter.lua - when a Chinese model refuses a request with
-- a content-filter error, retry it once on an international model.
--
-- Stage: on_error. Only before anything reached the client (err.started is
-- false), only for models matching `domestic`, and only once per request.
-- A filter error is recognised by err.code / err.type / err.message
-- containing one of `markers` (case-insensitive).
--
-- Arguments (all optional):
--   fallback_model  model for the retry (default "gpt-4o-mini")
--   domestic        list of model name prefixes ending in "*", or exact names
--   markers         list of substrings that identify a filter error
local args = ... or {}
local FALLBACK = args.fallback_model or "gpt-4o-mini"
local DOMESTIC = args.domestic or {
  "qwen*", "glm*", "chatglm*", "ernie*", "deepseek*", "moonshot*", "kimi*", "doubao*",
  "hunyuan*", "spark*", "generalv*", "baichuan*", "abab*", "minimax*", "yi-*",
}
local MARKERS = args.markers or {
  "content_filter", "data_inspection_failed", "datainspectionfailed", "sensitive",
  "inappropriate", "content risk", "内容安全", "敏感", "不安全", "违规",
}

local function matches(name, patterns)
  name = string.lower(name or "")
  for _, p in ipairs(patterns) do
    p = string.lower(p)
    if p:sub(-1) == "*" then
      if name:sub(1, #p - 1) == p:sub(1, -2) then return true end
    elseif name == p then
      return true
    end
  end
  return false
end

local function is_filter(err)
  local fields = { err.code, err.type, err.message }
  for i = 1, 3 do
    local field = fields[i]
    if type(field) == "string" then
      local s = string.lower(field)
      for _, m in ipairs(MARKERS) do
        if s:find(string.lower(m), 1, true) then return true end
      end
    end
  end
  return false
end

function on_error(err)
  if err.started or lm.ctx.failed_over then return end
  local model = err.model
  if type(model) ~= "string" then model = lm.request.model end
  if not matches(model, DOMESTIC) or not is_filter(err) then return end
  lm.ctx.failed_over = true
  lm.log("info", "content filter on " .. tostring(model) .. ", retrying on " .. FALLBACK)
  lm.retry(FALLBACK)
end
