/* test_netaddr.c - the outbound address classes (core/netaddr.h): every
 * notation of loopback a URL can carry, the metadata and link-local
 * addresses, private ranges, IPv6 and IPv4-mapped IPv6. */
#include "core/netaddr.h"
#include "t.h"

#include <arpa/inet.h>
#include <netinet/in.h>

typedef struct {
    const char *text;
    lm_netaddr_class_t want;
} case_t;

static void check_cases(const char *name, const case_t *c, size_t n)
{
    T_BEGIN(name);
    for (size_t i = 0; i < n; i++) {
        lm_netaddr_class_t got = lm_netaddr_classify_text(c[i].text);
        T_CHECK(got == c[i].want, "%s: %s, want %s", c[i].text, lm_netaddr_class_str(got),
                lm_netaddr_class_str(c[i].want));
    }
    T_END();
}

static void test_v4_notations(void)
{
    static const case_t c[] = {
        {"127.0.0.1", LM_NETADDR_LOOPBACK},
        {"2130706433", LM_NETADDR_LOOPBACK},
        {"0x7f.1", LM_NETADDR_LOOPBACK},
        {"127.1", LM_NETADDR_LOOPBACK},
        {"0177.0.0.1", LM_NETADDR_LOOPBACK},
        {"0x7f000001", LM_NETADDR_LOOPBACK},
        {"127.255.255.254", LM_NETADDR_LOOPBACK},
        {"0.0.0.0", LM_NETADDR_LOOPBACK},
        {"0", LM_NETADDR_LOOPBACK},
        {"2852039166", LM_NETADDR_METADATA},
        {"169.254.169.254", LM_NETADDR_METADATA},
        {"0xa9.0xfe.0xa9.0xfe", LM_NETADDR_METADATA},
        {"100.100.100.200", LM_NETADDR_METADATA},
        {"169.254.1.1", LM_NETADDR_LINKLOCAL},
        {"10.1.2.3", LM_NETADDR_PRIVATE},
        {"012.1", LM_NETADDR_PRIVATE},
        {"172.16.0.1", LM_NETADDR_PRIVATE},
        {"172.31.255.255", LM_NETADDR_PRIVATE},
        {"172.32.0.1", LM_NETADDR_PUBLIC},
        {"192.168.1.1", LM_NETADDR_PRIVATE},
        {"100.64.0.1", LM_NETADDR_PRIVATE},
        {"100.127.255.255", LM_NETADDR_PRIVATE},
        {"100.128.0.1", LM_NETADDR_PUBLIC},
        {"8.8.8.8", LM_NETADDR_PUBLIC},
        {"example.com", LM_NETADDR_INVALID},
        {"", LM_NETADDR_INVALID},
    };
    check_cases("netaddr_v4_notations", c, sizeof(c) / sizeof(c[0]));
}

static void test_v6(void)
{
    static const case_t c[] = {
        {"::1", LM_NETADDR_LOOPBACK},
        {"::", LM_NETADDR_LOOPBACK},
        {"0:0:0:0:0:0:0:1", LM_NETADDR_LOOPBACK},
        {"fd00:ec2::254", LM_NETADDR_METADATA},
        {"fd00:ec2::253", LM_NETADDR_PRIVATE},
        {"fe80::1", LM_NETADDR_LINKLOCAL},
        {"febf::1", LM_NETADDR_LINKLOCAL},
        {"fec0::1", LM_NETADDR_PUBLIC},
        {"fc00::1", LM_NETADDR_PRIVATE},
        {"fdff:1::1", LM_NETADDR_PRIVATE},
        {"2001:4860:4860::8888", LM_NETADDR_PUBLIC},
        {"::ffff:127.0.0.1", LM_NETADDR_LOOPBACK},
        {"::ffff:7f00:1", LM_NETADDR_LOOPBACK},
        {"::ffff:169.254.169.254", LM_NETADDR_METADATA},
        {"::ffff:10.0.0.1", LM_NETADDR_PRIVATE},
        {"::ffff:8.8.8.8", LM_NETADDR_PUBLIC},
    };
    check_cases("netaddr_v6_and_mapped", c, sizeof(c) / sizeof(c[0]));
}

static void test_sockaddr(void)
{
    T_BEGIN("netaddr_sockaddr");
    struct sockaddr_in s4 = {.sin_family = AF_INET};
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
    char buf[64];
    s4.sin_addr.s_addr = htonl(2130706433u);
    T_CHECK(lm_netaddr_classify((struct sockaddr *)&s4, sizeof(s4)) == LM_NETADDR_LOOPBACK, "v4");
    T_CHECK(!strcmp(lm_netaddr_format((struct sockaddr *)&s4, sizeof(s4), buf, sizeof(buf)),
                    "127.0.0.1"),
            "format %s", buf);
    T_CHECK(lm_netaddr_classify((struct sockaddr *)&s4, 4) == LM_NETADDR_INVALID, "short");
    inet_pton(AF_INET6, "::ffff:169.254.169.254", &s6.sin6_addr);
    T_CHECK(lm_netaddr_classify((struct sockaddr *)&s6, sizeof(s6)) == LM_NETADDR_METADATA,
            "mapped");
    T_CHECK(lm_netaddr_classify(NULL, 0) == LM_NETADDR_INVALID, "null");
    T_END();
}

static void test_allowed(void)
{
    T_BEGIN("netaddr_allowed");
    T_CHECK(lm_netaddr_allowed(LM_NETADDR_PUBLIC, 0), "public");
    T_CHECK(!lm_netaddr_allowed(LM_NETADDR_LOOPBACK, 0), "loopback off");
    T_CHECK(lm_netaddr_allowed(LM_NETADDR_LOOPBACK, 1), "loopback on");
    T_CHECK(!lm_netaddr_allowed(LM_NETADDR_PRIVATE, 0), "private off");
    T_CHECK(lm_netaddr_allowed(LM_NETADDR_PRIVATE, 1), "private on");
    T_CHECK(!lm_netaddr_allowed(LM_NETADDR_METADATA, 1), "metadata always refused");
    T_CHECK(!lm_netaddr_allowed(LM_NETADDR_LINKLOCAL, 1), "link-local always refused");
    T_CHECK(!lm_netaddr_allowed(LM_NETADDR_INVALID, 1), "invalid refused");
    T_END();
}

int main(void)
{
    test_v4_notations();
    test_v6();
    test_sockaddr();
    test_allowed();
    return t_failed_total ? 1 : 0;
}
