-- moderation_guard.lua - refuse a request that a moderation channel flags,
-- failing closed: no verdict, no answer.
--
-- lm.moderate(model, text) asks a channel serving `model` (its plugin must
-- serve /v1/moderations) without blocking the worker: the request is parked
-- while the side call runs and this stage resumes with the verdict
-- {flagged = bool, categories = {...}, ...}, or nil, err when the channel
-- failed, timed out (10 s, or the channel's request_timeout when shorter),
-- is missing, or the key's quota does not cover the call. The call is billed
-- as its own ledger row under the same key (request id "<id>-mod1", api
-- "moderations", at the moderation channel's prices, e.g. per_1m_chars).
-- A flagged request never reaches the chat channel (400 content_flagged);
-- no verdict answers 503 moderation_unavailable, or passes with a warning
-- when "fail_open" is true.
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
