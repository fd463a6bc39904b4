-- pii_mask.lua - mask personal data in requests before they leave the
-- gateway: Chinese resident ID numbers (18 characters), mainland mobile
-- numbers (11 digits, optional +86, spaces or dashes), and e-mail addresses.
--
-- Stage: on_request. Every text the provider will read is rewritten: string
-- content, every text-bearing content part ("text", "input_text", ...), an
-- http(s) image URL (never a data: URL, whose bytes are not text), the
-- message's name, and assistant tool-call arguments. req.meta.pii_masked
-- counts the replacements. With mode = "reject" a request containing PII is
-- refused with 400 instead.
--
-- Cost: one pattern pass over each text for digit runs, the rules only on
-- those short runs, and a plain search for '@', so a 100 KiB prompt stays
-- inside the default limits (lua_deadline 10 ms, lua_instructions 1M).
--
-- Arguments:
--   mode   "mask" (default) or "reject"
--   id, phone, email   replacement strings ("[ID]", "[PHONE]", "[EMAIL]")
local args = ... or {}
local MODE = args.mode or "mask"
local ID = args.id or "[ID]"
local PHONE = args.phone or "[PHONE]"
local EMAIL = args.email or "[EMAIL]"

local find, sub, match, gsub = string.find, string.sub, string.match, string.gsub
local concat = table.concat

-- The rules, applied to one digit run at a time (see digits).
local D = "%d"
local RULES = {
  -- 6 region digits, 8 birth-date digits, 3 sequence digits, check digit
  { "%f[%w]" .. D:rep(17) .. "[%dXx]%f[%W]", ID },
  { "%+86[ %-]?1[3-9]%d[ %-]?%d%d%d%d[ %-]?%d%d%d%d%f[%D]", PHONE },
  { "%f[%d]1[3-9]%d[ %-]?%d%d%d%d[ %-]?%d%d%d%d%f[%D]", PHONE },
}
-- A run that starts with a digit or '+' and may hold spaces and dashes:
-- the only places the rules can match.
local RUN = "^[%+%d][%d %-]*[%dXx]?"
-- Where a run of 11 such characters starts: every rule needs 11 digits, so
-- shorter numbers (years, counts) are skipped inside one find.
local LONG = "[%+%d]" .. ("[%d %-]"):rep(9) .. "[%dXx]"

-- The rules applied to one run, with a stand-in for a word character right
-- before it ("abc1101...": the ID rule's frontier must still see a letter).
local function mask_run(s, pos, run)
  local lead = (pos > 1 and find(sub(s, pos - 1, pos - 1), "^[%w_]")) and "a" or ""
  local t, total = lead .. run, 0
  for _, r in ipairs(RULES) do
    local k
    t, k = gsub(t, r[1], r[2])
    total = total + k
  end
  return sub(t, #lead + 1), total
end

-- Masks ID numbers and mobile numbers. find() jumps to each long run, so
-- the text is scanned once and copied only when something is masked.
local function digits(s)
  local parts, n, from, at = nil, 0, 1, 1
  while true do
    at = find(s, LONG, at)
    if not at then break end
    local run = match(s, RUN, at)
    local out, k = mask_run(s, at, run)
    if k > 0 then
      parts = parts or {}
      parts[#parts + 1] = sub(s, from, at - 1)
      parts[#parts + 1] = out
      from = at + #run
      n = n + k
    end
    at = at + #run
  end
  if not parts then return s, 0 end
  parts[#parts + 1] = sub(s, from)
  return concat(parts), n
end

local LOCAL = "^[%w%.%%%+%-_]+"        -- reversed local part, read leftwards
local DOMAIN = "^[%w%-]+%.[%w%.%-]*%a%a" -- the domain after '@'

-- Masks e-mail addresses: each '@' found by a plain search, its local part
-- read leftwards (at most 64 bytes), its domain rightwards.
local function emails(s)
  local parts, n, from, at = {}, 0, 1, 1
  while true do
    at = find(s, "@", at, true)
    if not at then break end
    local left = match(sub(s, math.max(from, at - 64), at - 1):reverse(), LOCAL)
    local domain = match(s, DOMAIN, at + 1)
    if left and domain then
      parts[#parts + 1] = sub(s, from, at - #left - 1)
      parts[#parts + 1] = EMAIL
      n = n + 1
      from = at + 1 + #domain
      at = from
    else
      at = at + 1
    end
  end
  if n == 0 then return s, 0 end
  parts[#parts + 1] = sub(s, from)
  return concat(parts), n
end

local function mask(s)
  local a, n1 = emails(s)
  local b, n2 = digits(a)
  return b, n1 + n2
end

-- Masks field k of table t when it is a string; returns the count.
local function mask_field(t, k)
  local v = t[k]
  if type(v) ~= "string" then return 0 end
  local out, n = mask(v)
  if n > 0 then t[k] = out end
  return n
end

local function mask_part(part)
  if type(part) ~= "table" then return 0 end
  local n = mask_field(part, "text")
  local img = part.image_url
  if type(img) == "table" and type(img.url) == "string" and not find(img.url, "^data:") then
    n = n + mask_field(img, "url")
  end
  return n
end

local function mask_message(m)
  local n = mask_field(m, "name")
  if type(m.content) == "string" then
    n = n + mask_field(m, "content")
  elseif type(m.content) == "table" then
    for _, part in ipairs(m.content) do n = n + mask_part(part) end
  end
  if type(m.tool_calls) == "table" then
    for _, call in ipairs(m.tool_calls) do
      if type(call) == "table" and type(call["function"]) == "table" then
        n = n + mask_field(call["function"], "arguments")
      end
    end
  end
  return n
end

function on_request(req)
  if type(req.messages) ~= "table" then return end
  local count = 0
  for _, m in ipairs(req.messages) do
    if type(m) == "table" then count = count + mask_message(m) end
  end
  if count > 0 and MODE == "reject" then
    return lm.reject(400, "the request contains personal data (" .. count .. " items)", "pii_detected")
  end
  if count > 0 then req.meta.pii_masked = count end
end
