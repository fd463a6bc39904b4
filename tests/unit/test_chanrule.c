/* test_chanrule.c - the outbound-safety rules on admin channel records
 * (conf/chanrule.h, conf/outbound.h): env: names against admin_env_allow,
 * stored secrets bound to their host on update (SS-2), and the policy marks
 * stored channels get (SS-7). */
#include "conf/chanconf.h"
#include "conf/outbound.h"
#include "t.h"

#include <stdlib.h>

/* cur as stored: mock plugin, base_url, a literal api_key. */
static lm_chan_rec_t *stored(void)
{
    lm_chan_rec_t *c = lm_chan_rec_new();
    const char *p = NULL;
    char err[512];
    json_t *b = json_pack("{s:s, s:s, s:[s], s:{s:s, s:s, s:s}}", "name", "c1", "plugin", "mock",
                          "models", "m1", "settings", "base_url", "http://a.example/v1", "api_key",
                          "sk-stored-secret-1", "region", "eu");
    int rc = lm_chan_from_json(c, b, 0, NULL, &p, err, sizeof(err));
    json_decref(b);
    if (rc != 0) {
        lm_chan_rec_free(c);
        return NULL;
    }
    return c;
}

/* PATCH (merge) or PUT body text on cur: the rc, err and param. */
static int update(const lm_chan_rec_t *cur, int merge, const char *body, const char **param,
                  char *err, size_t errlen)
{
    lm_chan_rec_t *c = merge ? lm_chan_rec_dup(cur) : lm_chan_rec_new();
    json_t *b = json_loads(body, 0, NULL);
    int rc = c && b ? lm_chan_from_json(c, b, merge, cur, param, err, errlen) : -2;
    json_decref(b);
    lm_chan_rec_free(c);
    return rc;
}

static void test_rebind(void)
{
    T_BEGIN("chanrule_secret_bound_to_host");
    lm_chan_rec_t *cur = stored();
    const char *p = NULL;
    char err[512] = "";
    T_CHECK(cur != NULL, "stored");
    if (cur == NULL)
        return;
    /* the same host: the secret stays */
    T_CHECK(update(cur, 1, "{\"weight\": 3}", &p, err, sizeof(err)) == 0, "weight: %s", err);
    T_CHECK(update(cur, 1, "{\"settings\": {\"region\": \"us\"}}", &p, err, sizeof(err)) == 0,
            "region: %s", err);
    /* another host without the secret: refused, naming it, not showing it */
    int rc = update(cur, 1, "{\"settings\": {\"base_url\": \"http://b.example/v1\"}}", &p, err,
                    sizeof(err));
    T_CHECK(rc == -1 && !strcmp(p, "settings") && strstr(err, "settings.api_key") &&
                !strstr(err, "sk-stored"),
            "patch base_url: %d %s", rc, err);
    /* "***" keeps the stored value: not a new one */
    rc = update(cur, 1,
                "{\"settings\": {\"base_url\": \"http://b.example/v1\", \"api_key\": \"***\"}}", &p,
                err, sizeof(err));
    T_CHECK(rc == -1 && strstr(err, "settings.api_key"), "masked kept: %s", err);
    rc = update(cur, 0,
                "{\"plugin\": \"mock\", \"models\": [\"m1\"], \"settings\": {\"base_url\": "
                "\"http://b.example/v1\", \"api_key\": \"***\"}}",
                &p, err, sizeof(err));
    T_CHECK(rc == -1 && strstr(err, "settings.api_key"), "put masked: %s", err);
    /* given again, removed, or env: - accepted */
    T_CHECK(
        update(cur, 1,
               "{\"settings\": {\"base_url\": \"http://b.example/v1\", \"api_key\": \"sk-new\"}}",
               &p, err, sizeof(err)) == 0,
        "given again: %s", err);
    T_CHECK(update(cur, 1,
                   "{\"settings\": {\"base_url\": \"http://b.example/v1\", \"api_key\": null}}", &p,
                   err, sizeof(err)) == 0,
            "removed: %s", err);
    T_CHECK(update(cur, 1,
                   "{\"settings\": {\"base_url\": \"http://b.example/v1\", \"api_key\": "
                   "\"env:LM_UP_KEY\"}}",
                   &p, err, sizeof(err)) == 0,
            "env: %s", err);
    /* the other settings that choose the host */
    T_CHECK(update(cur, 1, "{\"plugin\": \"openai\"}", &p, err, sizeof(err)) == -1, "plugin");
    T_CHECK(update(cur, 1, "{\"settings\": {\"preset\": \"deepseek\"}}", &p, err, sizeof(err)) ==
                -1,
            "preset");
    T_CHECK(update(cur, 1, "{\"settings\": {\"oauth_url\": \"http://o.example\"}}", &p, err,
                   sizeof(err)) == -1,
            "oauth_url");
    T_CHECK(update(cur, 1, "{\"settings\": {\"base_url\": null}}", &p, err, sizeof(err)) == -1,
            "base_url removed (the plugin's default host)");
    lm_chan_rec_free(cur);
    T_END();
}

static void test_env_and_marks(void)
{
    T_BEGIN("chanrule_env_allow_and_policy_marks");
    const char *text = "admin_env_allow LM_UP_* OTHER\nadmin_env_allow THIRD\n"
                       "channel f {\n plugin mock\n models f1\n}\n";
    lm_conf_t *conf = NULL;
    char err[512] = "", param[96] = "";
    T_CHECK(lm_conf_parse("f.conf", text, strlen(text), &conf, err, sizeof(err)) == 0, "%s", err);
    if (conf == NULL)
        return;
    T_CHECK(conf->nadmin_env_allow == 3 && !conf->admin_private_upstreams, "parsed");
    T_CHECK(lm_outbound_env_allowed(conf, "LM_UP_KEY") && lm_outbound_env_allowed(conf, "THIRD") &&
                !lm_outbound_env_allowed(conf, "HOME") && !lm_outbound_env_allowed(conf, "LM_UPX"),
            "globs");
    lm_chan_rec_t *c = stored();
    free(c->settings[1].vals[0]);
    c->settings[1].vals[0] = strdup("env:HOME");
    T_CHECK(lm_chan_conf_add(conf, c, param, sizeof(param), err, sizeof(err)) == -1 &&
                !strcmp(param, "settings.api_key") && strstr(err, "variable HOME may not") &&
                (getenv("HOME") == NULL || !strstr(err, getenv("HOME"))) && conf->nchans == 1,
            "refused: %s / %s", param, err);
    free(c->settings[1].vals[0]);
    c->settings[1].vals[0] = strdup("literal-key-1234");
    T_CHECK(lm_chan_conf_add(conf, c, param, sizeof(param), err, sizeof(err)) == 0, "%s", err);
    T_CHECK(conf->nchans == 2 && !conf->chans[0].from_admin && !conf->chans[0].private_refused &&
                conf->chans[1].from_admin && conf->chans[1].private_refused,
            "marks");
    lm_conf_free(conf);
    /* admin_private_upstreams on: stored channels may use private addresses */
    const char *on = "admin_private_upstreams on\nchannel f {\n plugin mock\n models f1\n}\n";
    T_CHECK(lm_conf_parse("f.conf", on, strlen(on), &conf, err, sizeof(err)) == 0, "%s", err);
    T_CHECK(conf && lm_chan_conf_add(conf, c, param, sizeof(param), err, sizeof(err)) == 0 &&
                conf->chans[1].from_admin && !conf->chans[1].private_refused,
            "allowed: %s", err);
    lm_conf_free(conf);
    const char *bad = "admin_private_upstreams maybe\n";
    conf = NULL;
    T_CHECK(lm_conf_parse("f.conf", bad, strlen(bad), &conf, err, sizeof(err)) < 0 &&
                strstr(err, "f.conf:1: admin_private_upstreams must be on or off"),
            "bad value: %s", err);
    lm_conf_free(conf);
    const char *empty = "admin_env_allow\n";
    conf = NULL;
    T_CHECK(lm_conf_parse("f.conf", empty, strlen(empty), &conf, err, sizeof(err)) < 0 &&
                strstr(err, "usage: admin_env_allow"),
            "no glob: %s", err);
    lm_conf_free(conf);
    lm_chan_rec_free(c);
    T_END();
}

int main(void)
{
    test_rebind();
    test_env_and_marks();
    return t_failed_total ? 1 : 0;
}
