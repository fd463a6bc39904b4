/*
 * replay.c - runs a libFuzzer target without libFuzzer: every file of its
 * corpus, then deterministic mutations of them (byte flips, truncations,
 * splices). Built into the default suite (and its ASan run); `make fuzz`
 * builds the same targets with -fsanitize=fuzzer for open-ended runs.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern const char *lm_fuzz_name;

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int load(const char *path, uint8_t **out, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = malloc((size_t)len + 1);
    *n = fread(*out, 1, (size_t)len, f);
    fclose(f);
    return 0;
}

static void run_mutations(const uint8_t *seed, size_t n, int rounds)
{
    uint8_t *buf = malloc(n + 64);
    for (int r = 0; r < rounds; r++) {
        size_t len = n;
        memcpy(buf, seed, n);
        switch (next() % 4) {
        case 0: /* flip bytes */
            for (int k = 0; k < 4 && len; k++)
                buf[next() % len] ^= (uint8_t)(1u << (next() % 8));
            break;
        case 1: /* truncate */ len = len ? next() % len : 0; break;
        case 2: /* special bytes */
            if (len) {
                const uint8_t specials[] = {'\n', '\r', ':',  '{', '}', '[',
                                            ']',  '"',  '\\', 0,   0xff};
                buf[next() % len] = specials[next() % sizeof(specials)];
            }
            break;
        default: /* duplicate a slice at the end */
            if (len) {
                size_t off = next() % len, k = next() % 64;
                if (off + k > len)
                    k = len - off;
                memcpy(buf + len, buf + off, k);
                len += k;
            }
        }
        LLVMFuzzerTestOneInput(buf, len);
    }
    free(buf);
}

int main(int argc, char **argv)
{
    char dir[512];
    int rounds = argc > 1 ? atoi(argv[1]) : 5000;
    snprintf(dir, sizeof(dir), "tests/fuzz/corpus/%s", lm_fuzz_name);
    DIR *d = opendir(dir);
    if (d == NULL) {
        printf("FAIL fuzz_%s_replay: no corpus at %s\n", lm_fuzz_name, dir);
        return 1;
    }
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d)) != NULL) {
        char path[1024];
        uint8_t *data;
        size_t n;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (load(path, &data, &n) < 0)
            continue;
        LLVMFuzzerTestOneInput(data, n);
        run_mutations(data, n, rounds);
        free(data);
        files++;
    }
    closedir(d);
    printf("PASS fuzz_%s_replay (%d seeds x %d mutations)\n", lm_fuzz_name, files, rounds);
    return files ? 0 : 1;
}
