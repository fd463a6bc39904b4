-- pii_mask.lua - mask personal data in requests before they leave the
-- gateway: Chinese resident ID numbers (18 characters), mainland mobile
-- numbers (11 digits, optional +86, spaces or dashes), and e-mail addresses.
--
-- Stage: on_request. Every message's text (string content, or the "text"
-- parts of a content array) is rewritten; req.meta.pii_masked counts the
-- replacements. With mode = "reject" a request containing PII is refused
-- with 400 instead.
--
-- Arguments:
--   mode   "mask" (default) or "reject"
--   id, phone, email   replacement strings ("[ID]", "[PHONE]", "[EMAIL]")
local args = ... or {}
local MODE = args.mode or "mask"
local ID = args.id or "[ID]"
local PHONE = args.phone or "[PHONE]"
local EMAIL = args.email or "[EMAIL]"

local D = "%d"
local RULES = {
  -- 6 region digits, 8 birth-date digits, 3 sequence digits, check digit
  { "%f[%w]" .. D:rep(17) .. "[%dXx]%f[%W]", ID },
  { "[%w%.%%%+%-_]+@[%w%-]+%.[%w%.%-]*%a%a", EMAIL },
  { "%+86[ %-]?1[3-9]%d[ %-]?%d%d%d%d[ %-]?%d%d%d%d%f[%D]", PHONE },
  { "%f[%d]1[3-9]%d[ %-]?%d%d%d%d[ %-]?%d%d%d%d%f[%D]", PHONE },
}

local function mask(s)
  local total = 0
  for _, r in ipairs(RULES) do
    local n
    s, n = string.gsub(s, r[1], r[2])
    total = total + n
  end
  return s, total
end

function on_request(req)
  if type(req.messages) ~= "table" then return end
  local count = 0
  for _, m in ipairs(req.messages) do
    if type(m.content) == "string" then
      local n
      m.content, n = mask(m.content)
      count = count + n
    elseif type(m.content) == "table" then
      for _, part in ipairs(m.content) do
        if part.type == "text" and type(part.text) == "string" then
          local n
          part.text, n = mask(part.text)
          count = count + n
        end
      end
    end
  end
  if count > 0 and MODE == "reject" then
    return lm.reject(400, "the request contains personal data (" .. count .. " items)", "pii_detected")
  end
  if count > 0 then req.meta.pii_masked = count end
end
