-- noop.lua - every stage, doing nothing: measures the cost of the hooks
-- themselves (make bench).
function on_request(req) end
function on_route(req, candidates) end
function on_upstream_request(req, up) end
function on_event(ev) end
function on_response(body) end
function on_usage(usage, price, charge) end
function on_error(err) end
function on_log(record) end
