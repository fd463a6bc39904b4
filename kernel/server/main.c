/* main.c - command line: run the gateway, check a config, signal a running
 * one, print usage. Thread: the main thread (it becomes the control thread);
 * it owns lm.shared and the route health table until exit. */
#include "conf/conf.h"
#include "core/log.h"
#include "plugin/crash.h"
#include "relay/rt.h"
#include "server/server.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LM_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(
        f,
        "longmen " LM_VERSION " - a self-hosted AI gateway\n"
        "\n"
        "usage: longmen [-c FILE] [-p DIR] [-t] [-s reload|stop] [-h] [-v]\n"
        "  -c FILE   configuration file (default: plugins.conf; if it does not exist\n"
        "            and -c is not given, a built-in offline default is used)\n"
        "  -p DIR    plugin directory (overrides plugin_dir in the file)\n"
        "  -t        check the configuration (syntax, plugins, channels) and exit\n"
        "  -s SIG    signal the running gateway (pid_file of the config): reload\n"
        "            (load new plugins and config; in-flight requests finish on the\n"
        "            old generation) or stop (drain and exit)\n"
        "  -h        print this help and exit\n"
        "  -v        print the version and exit\n"
        "\n"
        "Signals: SIGHUP reloads; SIGTERM/SIGINT stop accepting and drain in-flight requests.\n");
}

static lm_conf_t *load_conf(const char *path, int explicit_path, int flags, char *err,
                            size_t errlen)
{
    lm_conf_t *conf = NULL;
    if (!explicit_path && access(path, F_OK) != 0) {
        lm_log(LM_LOG_INFO, "%s not found: using the built-in default (mock channel, demo key)",
               path);
        if (lm_conf_parse("(built-in)", lm_conf_default_text, strlen(lm_conf_default_text), &conf,
                          err, errlen) < 0)
            return NULL;
        return conf;
    }
    if (lm_conf_load_ex(path, flags, &conf, err, errlen) < 0)
        return NULL;
    return conf;
}

/* longmen -s reload|stop: signal the process named by the config's pid_file. */
static int send_signal(const char *path, int explicit_path, const char *name)
{
    char err[2048];
    int sig = !strcmp(name, "reload") ? SIGHUP : !strcmp(name, "stop") ? SIGTERM : 0;
    lm_conf_t *conf;
    if (sig == 0) {
        fprintf(stderr, "longmen: -s takes reload or stop\n");
        return 2;
    }
    /* Only pid_file is needed: the provider keys (env:NAME) are not read, so
     * an operator's shell without them can still reload or stop. */
    if ((conf = load_conf(path, explicit_path, LM_CONF_KEEP_ENV, err, sizeof(err))) == NULL) {
        fprintf(stderr, "longmen: %s\n", err);
        return 1;
    }
    FILE *f = conf->pid_file ? fopen(conf->pid_file, "r") : NULL;
    long pid = 0;
    if (f == NULL || fscanf(f, "%ld", &pid) != 1 || pid <= 1) {
        fprintf(stderr, "longmen: no running gateway: cannot read pid_file %s\n",
                conf->pid_file ? conf->pid_file : "(pid_file is not set in the configuration)");
        if (f)
            fclose(f);
        lm_conf_free(conf);
        return 1;
    }
    fclose(f);
    lm_conf_free(conf);
    if (kill((pid_t)pid, sig) < 0) {
        fprintf(stderr, "longmen: cannot signal pid %ld: %s\n", pid, strerror(errno));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = "plugins.conf", *plugin_dir = NULL, *signal_name = NULL;
    int explicit_path = 0, test_only = 0, opt;
    char err[2048];

    while ((opt = getopt(argc, argv, "c:p:s:thv")) != -1) {
        switch (opt) {
        case 's': signal_name = optarg; break;
        case 'c':
            path = optarg;
            explicit_path = 1;
            break;
        case 'p': plugin_dir = optarg; break;
        case 't': test_only = 1; break;
        case 'h': usage(stdout); return 0;
        case 'v':
            printf("longmen %s (plugin ABI %d.%d)\n", LM_VERSION, LM_ABI_MAJOR, LM_ABI_MINOR);
            return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "longmen: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    int conf_from_file = explicit_path || access(path, F_OK) == 0;
    if (signal_name)
        return send_signal(path, explicit_path, signal_name);
    lm_conf_t *conf = load_conf(path, explicit_path, 0, err, sizeof(err));
    if (conf == NULL) {
        fprintf(stderr, "longmen: %s\n", err);
        return 1;
    }
    if (conf->supervise && !test_only) {
        lm_conf_free(conf);
        lm_crash_supervise(); /* returns in the gateway process */
        if ((conf = load_conf(path, explicit_path, 0, err, sizeof(err))) == NULL) {
            fprintf(stderr, "longmen: %s\n", err);
            return 1;
        }
    }
    if (!test_only) {
        char journal[4096];
        if (conf->data_dir) {
            mkdir(conf->data_dir, 0700);
            snprintf(journal, sizeof(journal), "%s/crashes.log", conf->data_dir);
        }
        lm_crash_install(conf->data_dir ? journal : NULL);
    }
    lm_log_set_level(conf->log_level);
    lm_lua_shared_t *shared = lm_lua_shared_new(0);  /* lm.shared outlives every generation */
    lm_route_table_t *routes = lm_route_table_new(); /* health state outlives generations */
    lm_rt_t *rt = lm_rt_build(conf, plugin_dir, test_only, shared, routes, err, sizeof(err));
    if (rt == NULL) {
        fprintf(stderr, "longmen: %s\n", err);
        lm_lua_shared_free(shared);
        lm_route_table_free(routes);
        return 1;
    }
    if (test_only) {
        printf("longmen: configuration %s is ok (%zu channels, %zu models, %zu keys)\n",
               rt->conf->path, rt->ninsts, rt->nroutes, rt->conf->nkeys);
        lm_rt_free(rt);
        lm_lua_shared_free(shared);
        lm_route_table_free(routes);
        return 0;
    }
    lm_server_opts_t opts = {conf_from_file ? path : NULL, plugin_dir, shared, routes};
    int rc = lm_server_run(rt, &opts, err, sizeof(err));
    lm_lua_shared_free(shared);
    lm_route_table_free(routes);
    if (rc < 0) {
        fprintf(stderr, "longmen: %s\n", err);
        return 1;
    }
    return 0;
}
