/* redis_lua.c - the Lua scripts Redis runs atomically for the shared
 * counters (docs/redis.md). One script = one decision: N instances calling
 * ADMIT at once are serialised by Redis, so none admits past a limit or
 * the balance. Times are wall-clock milliseconds (every instance's clock;
 * keep them in NTP sync). Keys of a virtual key, by id:
 *   lm:k:ID:rl    hash  "<sec>r" / "<sec>t": requests / tokens admitted in that second
 *   lm:k:ID:conc  zset  request id -> expiry (in flight)
 *   lm:k:ID:q     hash  used: spend so far (seeded from the store if absent)
 *   lm:k:ID:holds zset  request id -> expiry (open quota holds)
 *   lm:k:ID:hamt  hash  request id -> amount held
 *   lm:s:REQ      string this request's spend is counted (10 min)
 *   lm:ag:ADDR    string failed authentications this minute; lm:agblock zset addr -> until
 *   lm:chhold     hash  channel -> held until (ejected or Retry-After) */
#include "gov/redis.h"

/* KEYS rl conc q holds hamt; ARGV now rpm tpm maxconc est unlimited quota
 * seed worst reqid hold_ms -> {0,0} admitted, {1,retry_s,why} limited,
 * {2,0} quota. */
static const char admit[] =
    "local now=tonumber(ARGV[1]) local rpm=tonumber(ARGV[2]) local tpm=tonumber(ARGV[3])\n"
    "local mc=tonumber(ARGV[4]) local est=tonumber(ARGV[5]) local unl=ARGV[6]=='1'\n"
    "local quota=tonumber(ARGV[7]) local seed=tonumber(ARGV[8]) local worst=tonumber(ARGV[9])\n"
    "local id=ARGV[10] local hold=tonumber(ARGV[11]) local sec=math.floor(now/1000)\n"
    "local r,t,reqs,toks={},{},0,0\n"
    "local all=redis.call('HGETALL',KEYS[1])\n"
    "for i=1,#all,2 do local f=all[i] local s=tonumber(string.sub(f,1,-2)) local "
    "v=tonumber(all[i+1])\n"
    "  if s<=sec-60 then redis.call('HDEL',KEYS[1],f)\n"
    "  elseif string.sub(f,-1)=='r' then r[s]=v reqs=reqs+v else t[s]=v toks=toks+v end end\n"
    "local function wait(tab,need) local freed=0\n"
    "  for s=sec-59,sec do freed=freed+(tab[s] or 0)\n"
    "    if freed>=need then local w=math.ceil(((s+60)*1000-now)/1000) if w<1 then w=1 end return "
    "w end end\n"
    "  return 60 end\n"
    "local retry,why=0,0\n"
    "if tpm>0 and est>tpm then return {1,60,4} end\n"
    "redis.call('ZREMRANGEBYSCORE',KEYS[2],'-inf',now)\n"
    "if mc>0 and redis.call('ZCARD',KEYS[2])>=mc then retry=1 why=3 end\n"
    "if rpm>0 and reqs>=rpm then local w=wait(r,reqs-rpm+1) if w>retry then retry=w why=1 end end\n"
    "if tpm>0 and toks+est>tpm then local w=wait(t,toks+est-tpm) if w>retry then retry=w why=2 end "
    "end\n"
    "if retry>0 then return {1,retry,why} end\n"
    "if not unl then\n"
    "  if redis.call('HEXISTS',KEYS[3],'used')==0 then redis.call('HSET',KEYS[3],'used',seed) end\n"
    "  local old=redis.call('ZRANGEBYSCORE',KEYS[4],'-inf',now)\n"
    "  for i=1,#old do redis.call('HDEL',KEYS[5],old[i]) end\n"
    "  redis.call('ZREMRANGEBYSCORE',KEYS[4],'-inf',now)\n"
    "  local held=0 for _,v in ipairs(redis.call('HVALS',KEYS[5])) do held=held+tonumber(v) end\n"
    "  local used=tonumber(redis.call('HGET',KEYS[3],'used'))\n"
    "  if quota-used-held<worst then return {2,0} end\n"
    "  redis.call('ZADD',KEYS[4],now+hold,id) redis.call('HSET',KEYS[5],id,worst)\n"
    "end\n"
    "redis.call('HINCRBY',KEYS[1],sec..'r',1) redis.call('HINCRBY',KEYS[1],sec..'t',est)\n"
    "redis.call('PEXPIRE',KEYS[1],120000)\n"
    "redis.call('ZADD',KEYS[2],now+hold,id) redis.call('PEXPIRE',KEYS[2],hold)\n"
    "return {0,0}\n";

/* KEYS rl conc holds hamt; ARGV reqid sec est actual: the request ended. */
static const char finish[] =
    "redis.call('ZREM',KEYS[2],ARGV[1]) redis.call('ZREM',KEYS[3],ARGV[1])\n"
    "redis.call('HDEL',KEYS[4],ARGV[1])\n"
    "local f=ARGV[2]..'t' local v=redis.call('HGET',KEYS[1],f)\n"
    "if v then local n=tonumber(v)+tonumber(ARGV[4])-tonumber(ARGV[3]) if n<0 then n=0 end\n"
    "  redis.call('HSET',KEYS[1],f,n) end\n"
    "return {0}\n";

/* KEYS q holds hamt lm:s:REQ; ARGV reqid cost seed: bill cost, drop the
 * hold. Once per request: lm:s:REQ (10 min) makes a replay after a timeout
 * (the first call may have run) harmless. */
static const char settle[] =
    "redis.call('ZREM',KEYS[2],ARGV[1]) redis.call('HDEL',KEYS[3],ARGV[1])\n"
    "if not redis.call('SET',KEYS[4],'1','NX','PX',600000) then\n"
    "  return {tonumber(redis.call('HGET',KEYS[1],'used') or '0')} end\n"
    "if redis.call('HEXISTS',KEYS[1],'used')==0 then redis.call('HSET',KEYS[1],'used',ARGV[3]) "
    "end\n"
    "return {redis.call('HINCRBY',KEYS[1],'used',ARGV[2])}\n";

/* KEYS lm:ag:ADDR lm:agblock; ARGV addr limit now: one failed login. */
static const char authfail[] =
    "local n=redis.call('INCR',KEYS[1]) if n==1 then redis.call('PEXPIRE',KEYS[1],60000) end\n"
    "if n>=tonumber(ARGV[2]) then redis.call('ZADD',KEYS[2],tonumber(ARGV[3])+60000,ARGV[1]) end\n"
    "return {n}\n";

/* KEYS lm:chhold; ARGV channel until: keep the later hold. */
static const char hold[] = "local v=redis.call('HGET',KEYS[1],ARGV[1])\n"
                           "if not v or tonumber(v)<tonumber(ARGV[2]) then "
                           "redis.call('HSET',KEYS[1],ARGV[1],ARGV[2]) end\n"
                           "return {0}\n";

/* KEYS lm:agblock lm:chhold; ARGV now -> {nag, nch, addr, until, ..., chan, until, ...}
 * (nag, nch: how many strings of each list follow) */
static const char sync_[] =
    "local now=tonumber(ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE',KEYS[1],'-inf',now)\n"
    "local ag=redis.call('ZRANGEBYSCORE',KEYS[1],now,'+inf','WITHSCORES','LIMIT',0,100)\n"
    "local ch={} local all=redis.call('HGETALL',KEYS[2])\n"
    "for i=1,#all,2 do if tonumber(all[i+1])<=now then redis.call('HDEL',KEYS[2],all[i])\n"
    "  elseif #ch<300 then ch[#ch+1]=all[i] ch[#ch+1]=all[i+1] end end\n"
    "local out={#ag,#ch} for i=1,#ag do out[#out+1]=ag[i] end\n"
    "for i=1,#ch do out[#out+1]=ch[i] end return out\n";

const char *lm_redis_script(int id)
{
    static const char *const s[LM_RS_N] = {admit, finish, settle, authfail, hold, sync_};
    return id >= 0 && id < LM_RS_N ? s[id] : "";
}
