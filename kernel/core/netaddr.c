/* netaddr.c - classification of IP addresses for the outbound address
 * policy (netaddr.h). Pure functions on caller memory; any thread; returns
 * nothing to own. */
#include "core/netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* a in the IPv4 network net/bits (host byte order). */
static int in4(uint32_t a, uint32_t net, int bits)
{
    uint32_t mask = bits == 0 ? 0 : 0xffffffffu << (32 - bits);
    return (a & mask) == (net & mask);
}

#define V4(a, b, c, d) (((uint32_t)(a) << 24) | ((uint32_t)(b) << 16) | ((uint32_t)(c) << 8) | (d))

static lm_netaddr_class_t classify4(uint32_t a)
{
    if (a == V4(169, 254, 169, 254) || a == V4(100, 100, 100, 200))
        return LM_NETADDR_METADATA; /* AWS/GCP/Azure, Alibaba Cloud */
    if (in4(a, V4(169, 254, 0, 0), 16))
        return LM_NETADDR_LINKLOCAL;
    if (in4(a, V4(127, 0, 0, 0), 8) || in4(a, 0, 8))
        return LM_NETADDR_LOOPBACK; /* 0.0.0.0 reaches this host on Linux */
    if (in4(a, V4(10, 0, 0, 0), 8) || in4(a, V4(172, 16, 0, 0), 12) ||
        in4(a, V4(192, 168, 0, 0), 16) || in4(a, V4(100, 64, 0, 0), 10))
        return LM_NETADDR_PRIVATE;
    return LM_NETADDR_PUBLIC;
}

static lm_netaddr_class_t classify6(const unsigned char b[16])
{
    static const unsigned char ec2[16] = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0,    0,
                                          0,    0,    0,    0,    0, 0, 0x02, 0x54};
    static const unsigned char zero[12] = {0};
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(b, mapped, 12) == 0) /* ::ffff:a.b.c.d is a.b.c.d */
        return classify4(V4(b[12], b[13], b[14], b[15]));
    if (memcmp(b, ec2, 16) == 0)
        return LM_NETADDR_METADATA; /* fd00:ec2::254 */
    if (memcmp(b, zero, 12) == 0 && b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] <= 1)
        return LM_NETADDR_LOOPBACK; /* ::1, and :: (this host) */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return LM_NETADDR_LINKLOCAL; /* fe80::/10 */
    if ((b[0] & 0xfe) == 0xfc)
        return LM_NETADDR_PRIVATE; /* fc00::/7 */
    return LM_NETADDR_PUBLIC;
}

lm_netaddr_class_t lm_netaddr_classify(const struct sockaddr *sa, size_t len)
{
    if (sa == NULL)
        return LM_NETADDR_INVALID;
    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        return classify4(ntohl(s4->sin_addr.s_addr));
    }
    if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        return classify6(s6->sin6_addr.s6_addr);
    }
    return LM_NETADDR_INVALID;
}

lm_netaddr_class_t lm_netaddr_classify_text(const char *s)
{
    struct in6_addr a6;
    struct in_addr a4;
    if (s == NULL)
        return LM_NETADDR_INVALID;
    if (inet_pton(AF_INET6, s, &a6) == 1)
        return classify6(a6.s6_addr);
    if (inet_aton(s, &a4) != 0) /* the resolver's numeric-host forms */
        return classify4(ntohl(a4.s_addr));
    return LM_NETADDR_INVALID;
}

int lm_netaddr_allowed(lm_netaddr_class_t k, int allow_private)
{
    switch (k) {
    case LM_NETADDR_PUBLIC: return 1;
    case LM_NETADDR_LOOPBACK:
    case LM_NETADDR_PRIVATE: return allow_private != 0;
    default: return 0;
    }
}

const char *lm_netaddr_class_str(lm_netaddr_class_t k)
{
    static const char *const names[] = {"public",     "loopback",       "private",
                                        "link-local", "cloud metadata", "invalid"};
    return (unsigned)k < sizeof(names) / sizeof(names[0]) ? names[k] : "invalid";
}

char *lm_netaddr_format(const struct sockaddr *sa, size_t len, char *buf, size_t buflen)
{
    const void *src = NULL;
    if (buflen == 0)
        return buf;
    if (sa && sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in))
        src = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    else if (sa && sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6))
        src = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    if (src == NULL || inet_ntop(sa->sa_family, src, buf, (socklen_t)buflen) == NULL)
        snprintf(buf, buflen, "?");
    return buf;
}
