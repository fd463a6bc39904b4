/* main.c - command line: run the gateway, check a config, print usage. */
#include "conf.h"
#include "log.h"
#include "rt.h"
#include "server.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LM_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f, "longmen " LM_VERSION " - a self-hosted AI gateway\n"
               "\n"
               "usage: longmen [-c FILE] [-p DIR] [-t] [-h] [-v]\n"
               "  -c FILE   configuration file (default: plugins.conf; if it does not exist\n"
               "            and -c is not given, a built-in offline default is used)\n"
               "  -p DIR    plugin directory (overrides plugin_dir in the file)\n"
               "  -t        check the configuration (syntax, plugins, channels) and exit\n"
               "  -h        print this help and exit\n"
               "  -v        print the version and exit\n"
               "\n"
               "Signals: SIGTERM/SIGINT stop accepting and drain in-flight requests.\n");
}

static lm_conf_t *load_conf(const char *path, int explicit_path, char *err, size_t errlen)
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
    if (lm_conf_load(path, &conf, err, errlen) < 0)
        return NULL;
    return conf;
}

int main(int argc, char **argv)
{
    const char *path = "plugins.conf", *plugin_dir = NULL;
    int explicit_path = 0, test_only = 0, opt;
    char err[2048];

    while ((opt = getopt(argc, argv, "c:p:thv")) != -1) {
        switch (opt) {
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
    lm_conf_t *conf = load_conf(path, explicit_path, err, sizeof(err));
    if (conf == NULL) {
        fprintf(stderr, "longmen: %s\n", err);
        return 1;
    }
    lm_log_set_level(conf->log_level);
    lm_rt_t *rt = lm_rt_build(conf, plugin_dir, test_only, err, sizeof(err));
    if (rt == NULL) {
        fprintf(stderr, "longmen: %s\n", err);
        return 1;
    }
    if (test_only) {
        printf("longmen: configuration %s is ok (%zu channels, %zu models, %zu keys)\n",
               rt->conf->path, rt->ninsts, rt->nroutes, rt->conf->nkeys);
        lm_rt_free(rt);
        return 0;
    }
    if (lm_server_run(rt, err, sizeof(err)) < 0) {
        fprintf(stderr, "longmen: %s\n", err);
        return 1;
    }
    return 0;
}
