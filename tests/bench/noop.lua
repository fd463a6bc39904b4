-- noop.lua - the bench's Lua variant (BENCH_LUA=noop): every stage defined,
-- none of them reading or changing anything, so `make bench` shows what the
-- hooks themselves cost. Same content as scripts/noop.lua, kept here so the
-- bench does not change when the shipped example does.
function on_request(req) end
function on_route(req, candidates) end
function on_upstream_request(req, up) end
function on_event(ev) end
function on_response(body) end
function on_usage(usage, price, charge) end
function on_error(err) end
function on_log(record) end
