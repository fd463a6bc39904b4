/*
 * channels.c - /admin/channels: the file's channels (read-only) and the
 * stored ones, checked like longmen -t before they are stored, then applied
 * by a reload. Admin thread only (it blocks on the control thread's check
 * and reload); secrets never reach a reply.
 */
#include "admin/channels.h"
#include "conf/chanconf.h"
#include "core/log.h"
#include "relay/rt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_RELOAD_WAIT_MS 30000

/* Outcome of a check: status, code, param and message for the reply. */
typedef struct chk_s {
    int status;
    const char *code;
    char param[96];
    char msg[1024];
} chk_t;

static int chk_fail(chk_t *k, int status, const char *code, const char *param)
{
    k->status = status;
    k->code = code;
    if (param != k->param)
        snprintf(k->param, sizeof(k->param), "%s", param ? param : "");
    return -1;
}

static void send_chk(lm_admin_ctx_t *a, chk_t *k)
{
    lm_admin_http_error(a->req, k->status, k->code, k->param[0] ? k->param : NULL, "%s", k->msg);
}

/* Replace every secret this process knows (the serving configuration, the
 * stored channels, rec) in text with "***" (AU-8). */
static void scrub_secrets(lm_admin_ctx_t *a, const lm_chan_rec_t *rec, char *text)
{
    lm_chan_secrets_t sec;
    lm_rt_t *rt = a->env->ctl.acquire_rt(a->env->ctl.arg);
    if (lm_chan_secrets_collect(rt->conf, &sec) == 0) {
        lm_chan_secrets_scrub(&sec, text);
        lm_chan_secrets_free(&sec);
    }
    lm_rt_unref(rt);
    lm_chan_rec_t **v = NULL;
    size_t n = 0;
    if (lm_store_chan_list(a->env->store, &v, &n) == LM_STORE_OK)
        for (size_t i = 0; i < n; i++)
            lm_chan_rec_scrub(v[i], text);
    lm_store_chan_list_free(v, n);
    if (rec)
        lm_chan_rec_scrub(rec, text);
}

static const lm_chan_conf_t *conf_chan(const lm_conf_t *c, const char *name)
{
    for (size_t i = 0; c && i < c->nchans; i++)
        if (!strcmp(c->chans[i].name, name))
            return &c->chans[i];
    return NULL;
}

/* Does msg (from lm_rt_build) speak of channel `name`? */
static int mentions_channel(const char *msg, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = msg; (p = strstr(p, "channel ")) != NULL; p += 8)
        if (!strncmp(p + 8, name, n) && (p[8 + n] == ':' || p[8 + n] == '\0'))
            return 1;
    return 0;
}

/* "PATH:LINE: message" -> "message"; returns LINE (0 if not that form). */
static int strip_location(char *msg, const char *path)
{
    size_t pl = strlen(path);
    char *end;
    if (strncmp(msg, path, pl) != 0 || msg[pl] != ':')
        return 0;
    long line = strtol(msg + pl + 1, &end, 10);
    if (end == msg + pl + 1 || strncmp(end, ": ", 2) != 0)
        return 0;
    memmove(msg, end + 2, strlen(end + 2) + 1);
    return (int)line;
}

/* A failed candidate build: about rec (400, the field if known) or about
 * the rest of the configuration (409). */
static int build_failed(const lm_chan_rec_t *rec, const char *path, chk_t *k)
{
    if (!mentions_channel(k->msg, rec->name))
        return chk_fail(k, 409, "conflict", NULL);
    int line = strip_location(k->msg, path);
    char buf[96];
    const char *f = lm_chan_line_field(rec, line, buf, sizeof(buf));
    if (f == NULL)
        f = strstr(k->msg, " requires \"") ? "settings" : strstr(k->msg, ".so") ? "plugin" : NULL;
    return chk_fail(k, 400, "invalid_value", f);
}

/* Load and init every plugin of conf (consumed) strictly, like longmen -t,
 * on the control thread (plugin.h), then throw the generation away. 0 or
 * -1 with k->msg. */
static int build_check(lm_admin_ctx_t *a, lm_conf_t *conf, chk_t *k)
{
    lm_chan_secrets_t sec;
    if (lm_chan_secrets_collect(conf, &sec) != 0) {
        lm_conf_free(conf);
        snprintf(k->msg, sizeof(k->msg), "out of memory");
        return -1;
    }
    int rc = a->env->ctl.check_conf(a->env->ctl.arg, conf, k->msg, sizeof(k->msg));
    lm_chan_secrets_scrub(&sec, k->msg);
    lm_chan_secrets_free(&sec);
    return rc;
}

/* Check rec before it is stored: the candidate configuration (the file,
 * the other enabled stored channels, rec) must parse, and when rec is
 * enabled every plugin must load and init as longmen -t checks it. A
 * disabled rec is only parsed (its plugin may be what is broken). conf is
 * the file's snapshot (consumed). 0, or -1 with k filled. */
static int chan_validate(lm_admin_ctx_t *a, const lm_chan_rec_t *rec, lm_conf_t *conf, chk_t *k)
{
    char path[512];
    snprintf(path, sizeof(path), "%s", conf->path);
    if (rec->enabled &&
        lm_chan_conf_apply(conf, a->env->store, rec->name, 1, k->msg, sizeof(k->msg)) < 0) {
        lm_conf_free(conf);
        scrub_secrets(a, rec, k->msg);
        return chk_fail(k, 409, "conflict", NULL);
    }
    if (lm_chan_conf_add(conf, rec, k->param, sizeof(k->param), k->msg, sizeof(k->msg)) < 0) {
        lm_conf_free(conf);
        scrub_secrets(a, rec, k->msg);
        return chk_fail(k, 400, "invalid_value", k->param);
    }
    if (!rec->enabled) {
        lm_conf_free(conf);
        return 0;
    }
    if (build_check(a, conf, k) == 0)
        return 0;
    scrub_secrets(a, rec, k->msg);
    return build_failed(rec, path, k);
}

/* The "reload" member of a write reply: wait for the reload that applies
 * the change. */
static json_t *reload_json(lm_admin_ctx_t *a)
{
    char err[1024] = "";
    uint64_t gen = 0;
    int rc = a->env->ctl.reload_wait(a->env->ctl.arg, ADMIN_RELOAD_WAIT_MS, &gen, err, sizeof(err));
    if (rc == 1)
        return json_pack("{s:b, s:I}", "applied", 1, "generation", (json_int_t)gen);
    scrub_secrets(a, NULL, err);
    lm_log(LM_LOG_WARN, "admin: a channel change is stored but not applied yet: %s", err);
    json_t *e = json_string(err);
    return json_pack("{s:b, s:o}", "applied", 0, "error", e ? e : json_string("reload failed"));
}

/* "active": the channel serves in the current generation; "shadowed": a
 * stored channel the file overrides. */
static void chan_status(json_t *o, const lm_rt_t *rt, const char *name, int stored, int shadowed)
{
    int active = 0;
    for (size_t i = 0; rt && i < rt->ninsts && !(stored && shadowed); i++)
        active |= !strcmp(rt->insts[i].chan->name, name);
    json_object_set_new(o, "active", json_boolean(active));
    if (stored)
        json_object_set_new(o, "shadowed", json_boolean(shadowed));
}

static json_t *stored_json(lm_admin_ctx_t *a, const lm_chan_rec_t *c, const lm_conf_t *file)
{
    json_t *o = lm_chan_to_json(c);
    lm_rt_t *rt = a->env->ctl.acquire_rt(a->env->ctl.arg);
    chan_status(o, rt, c->name, 1, conf_chan(file, c->name) != NULL);
    lm_rt_unref(rt);
    return o;
}

/* The file's snapshot, or NULL after replying: 500 for a read, 409 for a
 * change (which cannot be checked against a file that does not load). */
static lm_conf_t *file_conf(lm_admin_ctx_t *a, int write)
{
    chk_t k = {0};
    lm_conf_t *c = a->env->ctl.conf_file(a->env->ctl.arg, k.msg, sizeof(k.msg));
    if (c == NULL) {
        scrub_secrets(a, NULL, k.msg);
        lm_admin_http_error(a->req, write ? 409 : 500, write ? "conflict" : "config_error", NULL,
                            "the configuration file does not load: %s", k.msg);
    }
    return c;
}

static int chan_ready(lm_admin_ctx_t *a)
{
    if (a->env->ctl.arg != NULL)
        return 1;
    lm_admin_http_error(a->req, 503, "unavailable", NULL, "no server");
    return 0;
}

void lm_admin_channels_list(lm_admin_ctx_t *a)
{
    if (!lm_admin_no_query(a) || !chan_ready(a))
        return;
    lm_conf_t *file = file_conf(a, 0);
    if (file == NULL)
        return;
    lm_chan_rec_t **v = NULL;
    size_t n = 0;
    int rc = lm_store_chan_list(a->env->store, &v, &n);
    if (rc != LM_STORE_OK) {
        lm_conf_free(file);
        lm_admin_store_error(a->req, rc, NULL);
        return;
    }
    json_t *data = json_array();
    lm_rt_t *rt = a->env->ctl.acquire_rt(a->env->ctl.arg);
    for (size_t i = 0; i < file->nchans; i++) {
        json_t *o = lm_chan_conf_to_json(&file->chans[i]);
        chan_status(o, rt, file->chans[i].name, 0, 0);
        json_array_append_new(data, o);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = lm_chan_to_json(v[i]);
        chan_status(o, rt, v[i]->name, 1, conf_chan(file, v[i]->name) != NULL);
        json_array_append_new(data, o);
    }
    lm_rt_unref(rt);
    lm_store_chan_list_free(v, n);
    lm_conf_free(file);
    lm_admin_http_json(a->req, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

void lm_admin_channels_get(lm_admin_ctx_t *a)
{
    if (!lm_admin_no_query(a) || !chan_ready(a))
        return;
    lm_conf_t *file = file_conf(a, 0);
    if (file == NULL)
        return;
    lm_chan_rec_t *c = NULL;
    int rc = lm_store_chan_get(a->env->store, a->name, &c);
    const lm_chan_conf_t *fc = conf_chan(file, a->name);
    if (rc == LM_STORE_OK) {
        lm_admin_http_json(a->req, 200, stored_json(a, c, file));
    } else if (rc == LM_STORE_ENOTFOUND && fc) {
        json_t *o = lm_chan_conf_to_json(fc);
        lm_rt_t *rt = a->env->ctl.acquire_rt(a->env->ctl.arg);
        chan_status(o, rt, fc->name, 0, 0);
        lm_rt_unref(rt);
        lm_admin_http_json(a->req, 200, o);
    } else if (rc == LM_STORE_ENOTFOUND) {
        lm_admin_http_error(a->req, 404, "not_found", NULL, "no such channel");
    } else {
        lm_admin_store_error(a->req, rc, NULL);
    }
    lm_chan_rec_free(c);
    lm_conf_free(file);
}

/* 404, or 409 when the name belongs to the file. */
static void chan_missing(lm_admin_ctx_t *a)
{
    lm_conf_t *file = file_conf(a, 1);
    if (file == NULL)
        return;
    if (conf_chan(file, a->name))
        lm_admin_http_error(
            a->req, 409, "conflict", "name",
            "channel %s is defined in the configuration file %s and is read-only here", a->name,
            file->path);
    else
        lm_admin_http_error(a->req, 404, "not_found", NULL, "no such channel");
    lm_conf_free(file);
}

/* Validate rec, store it (create or replace), reload and reply. Takes
 * nothing; rec stays the caller's. */
static void chan_commit(lm_admin_ctx_t *a, const lm_chan_rec_t *rec, int create)
{
    chk_t k = {0};
    const char *param = NULL;
    if (lm_store_chan_check(rec, &param, k.msg, sizeof(k.msg)) != LM_STORE_OK ||
        lm_chan_check(rec, &param, k.msg, sizeof(k.msg)) != 0) {
        chk_fail(&k, 400, "invalid_value", param);
        send_chk(a, &k);
        return;
    }
    lm_conf_t *file = file_conf(a, 1);
    if (file == NULL)
        return;
    if (conf_chan(file, rec->name)) {
        lm_admin_http_error(a->req, 409, "conflict", "name",
                            "channel %s is defined in the configuration file %s", rec->name,
                            file->path);
        lm_conf_free(file);
        return;
    }
    if (chan_validate(a, rec, file, &k) != 0) {
        send_chk(a, &k);
        return;
    }
    char err[256] = "";
    int rc = create ? lm_store_chan_create(a->env->store, rec, NULL, err, sizeof(err))
                    : lm_store_chan_update(a->env->store, rec, err, sizeof(err));
    if (rc == LM_STORE_ECONFLICT) {
        lm_admin_http_error(a->req, 409, "conflict", "name", "%s", err);
        return;
    }
    if (rc == LM_STORE_ENOTFOUND) {
        lm_admin_http_error(a->req, 404, "not_found", NULL, "no such channel");
        return;
    }
    if (rc != LM_STORE_OK) {
        lm_admin_store_error(a->req, rc, err);
        return;
    }
    lm_log(LM_LOG_INFO, "admin: channel %s %s", rec->name, create ? "created" : "updated");
    json_t *reload = reload_json(a);
    lm_chan_rec_t *c = NULL;
    rc = lm_store_chan_get(a->env->store, rec->name, &c);
    if (rc != LM_STORE_OK) {
        json_decref(reload);
        lm_admin_store_error(a->req, rc, NULL);
        return;
    }
    json_t *o = stored_json(a, c, NULL);
    lm_chan_rec_free(c);
    json_object_set_new(o, "reload", reload);
    lm_admin_http_json(a->req, create ? 201 : 200, o);
}

/* The body as a record: base (the defaults or a copy of the stored one)
 * with the body's members applied. NULL after replying. */
static lm_chan_rec_t *chan_body(lm_admin_ctx_t *a, lm_chan_rec_t *base, int merge,
                                const lm_chan_rec_t *cur)
{
    json_t *body = base ? lm_admin_body(a) : NULL;
    if (base == NULL)
        lm_admin_http_error(a->req, 500, "internal_error", NULL, "out of memory");
    if (body == NULL) {
        lm_chan_rec_free(base);
        return NULL;
    }
    chk_t k = {0};
    const char *param = NULL;
    int rc = merge && json_object_size(body) == 0
                 ? (snprintf(k.msg, sizeof(k.msg), "nothing to update"), -1)
                 : lm_chan_from_json(base, body, merge, cur, &param, k.msg, sizeof(k.msg));
    json_decref(body);
    if (rc == 0 && a->name[0] && base->name && strcmp(base->name, a->name) != 0) {
        param = "name";
        snprintf(k.msg, sizeof(k.msg),
                 "the name cannot be changed (create a channel with the new name, then delete "
                 "this one)");
        rc = -1;
    }
    if (rc == 0 && (base->name == NULL || base->plugin == NULL || base->nmodels == 0)) {
        param = base->name == NULL ? "name" : base->plugin == NULL ? "plugin" : "models";
        snprintf(k.msg, sizeof(k.msg), "name, plugin and models are required");
        rc = -1;
    }
    if (rc != 0) {
        chk_fail(&k, 400, "invalid_value", param);
        send_chk(a, &k);
        lm_chan_rec_free(base);
        return NULL;
    }
    return base;
}

void lm_admin_channels_create(lm_admin_ctx_t *a)
{
    if (!chan_ready(a))
        return;
    lm_chan_rec_t *rec = chan_body(a, lm_chan_rec_new(), 0, NULL);
    if (rec == NULL)
        return;
    lm_chan_rec_t *old = NULL;
    if (lm_store_chan_name_ok(rec->name) &&
        lm_store_chan_get(a->env->store, rec->name, &old) == LM_STORE_OK)
        lm_admin_http_error(a->req, 409, "conflict", "name", "a channel named %s already exists",
                            rec->name);
    else
        chan_commit(a, rec, 1);
    lm_chan_rec_free(old);
    lm_chan_rec_free(rec);
}

/* PUT (replace: unnamed fields take their defaults) or PATCH (merge). */
static void chan_change(lm_admin_ctx_t *a, int merge)
{
    lm_chan_rec_t *cur = NULL;
    if (!chan_ready(a))
        return;
    int rc = lm_store_chan_get(a->env->store, a->name, &cur);
    if (rc == LM_STORE_ENOTFOUND) {
        chan_missing(a);
        return;
    }
    if (rc != LM_STORE_OK) {
        lm_admin_store_error(a->req, rc, NULL);
        return;
    }
    lm_chan_rec_t *base = merge ? lm_chan_rec_dup(cur) : lm_chan_rec_new();
    if (base && !merge && (base->name = strdup(a->name)) == NULL) {
        lm_chan_rec_free(base);
        base = NULL;
    }
    lm_chan_rec_t *rec = chan_body(a, base, merge, cur);
    if (rec)
        chan_commit(a, rec, 0);
    lm_chan_rec_free(rec);
    lm_chan_rec_free(cur);
}

void lm_admin_channels_put(lm_admin_ctx_t *a)
{
    chan_change(a, 0);
}

void lm_admin_channels_patch(lm_admin_ctx_t *a)
{
    chan_change(a, 1);
}

void lm_admin_channels_delete(lm_admin_ctx_t *a)
{
    if (!lm_admin_no_query(a) || !chan_ready(a))
        return;
    int rc = lm_store_chan_delete(a->env->store, a->name);
    if (rc == LM_STORE_ENOTFOUND) {
        chan_missing(a);
        return;
    }
    if (rc != LM_STORE_OK) {
        lm_admin_store_error(a->req, rc, NULL);
        return;
    }
    lm_log(LM_LOG_INFO, "admin: channel %s deleted", a->name);
    json_t *o = json_pack("{s:s, s:s, s:b}", "object", "channel", "name", a->name, "deleted", 1);
    json_object_set_new(o, "reload", reload_json(a));
    lm_admin_http_json(a->req, 200, o);
}
