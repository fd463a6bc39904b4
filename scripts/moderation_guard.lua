-- moderation_guard.lua - refuse a request that a moderation channel flags,
-- failing closed: no verdict, no answer.
--
-- THE GAP (read before use). Scripts cannot make side calls today: the
-- lm API has no call to another channel, and a blocking HTTP call on a
-- worker's event loop is not allowed. A verdict needs a non-blocking side
-- call (park the request like a credential fetch, resume on the answer),
-- which the kernel does not have yet. So this guard asks for `lm.moderate`
-- and, while the kernel does not provide it, refuses every request it is
-- configured for with 503 moderation_unavailable (fail closed). Use
-- /v1/moderations from the application meanwhile, or set "fail_open": true
-- to let requests through with a warning. Once a kernel provides
-- lm.moderate(model, text) -> {flagged = bool, categories = {...}} (or nil,
-- err), the guard works unchanged.
--
-- args: {"model": "omni-moderation-latest"  -- the moderation model to ask
--        "fail_open": false}                 -- true: pass when no verdict
local args = ... or {}
local MODEL = args.model or "omni-moderation-latest"
local FAIL_OPEN = args.fail_open == true

-- Every text the provider will see, joined (string content and text parts).
local function texts(req)
    local out = {}
    for _, m in ipairs(req.messages or {}) do
        local c = m.content
        if type(c) == "string" then
            out[#out + 1] = c
        elseif type(c) == "table" then
            for _, p in ipairs(c) do
                if type(p) == "table" and type(p.text) == "string" then
                    out[#out + 1] = p.text
                end
            end
        end
    end
    return table.concat(out, "\n")
end

local function unavailable(why)
    if FAIL_OPEN then
        lm.log("warn", "moderation_guard: no verdict (" .. why .. "); passing (fail_open)")
        return nil
    end
    return lm.reject(503, "content moderation is unavailable: " .. why, "moderation_unavailable")
end

function on_request(req)
    local text = texts(req)
    if text == "" then
        return nil
    end
    local moderate = lm.moderate
    if moderate == nil then
        return unavailable("this gateway has no side-call API for scripts")
    end
    local verdict, err = moderate(MODEL, text)
    if verdict == nil then
        return unavailable(tostring(err or "no answer"))
    end
    if verdict.flagged then
        req.meta.moderation = "flagged"
        return lm.reject(400, "the request was flagged by content moderation", "content_flagged")
    end
    req.meta.moderation = "passed"
end
