/*
 * netaddr.h - what kind of host an IP address is, for the outbound address
 * policy (SS-7): an upstream connection is checked on the address it is
 * about to reach, whatever notation the URL used (2130706433, 0x7f.1,
 * 127.1 and 0177.0.0.1 all resolve to 127.0.0.1). Pure; any thread.
 */
#ifndef LM_NETADDR_H
#define LM_NETADDR_H
#include <stddef.h>
#include <sys/socket.h>

typedef enum {
    LM_NETADDR_PUBLIC = 0, /* anything below does not apply */
    LM_NETADDR_LOOPBACK,   /* 127/8, ::1, and 0/8, :: (Linux connects those locally) */
    LM_NETADDR_PRIVATE,    /* 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 */
    LM_NETADDR_LINKLOCAL,  /* 169.254/16, fe80::/10 */
    LM_NETADDR_METADATA,   /* 169.254.169.254, fd00:ec2::254, 100.100.100.200 */
    LM_NETADDR_INVALID     /* not an IPv4 or IPv6 address */
} lm_netaddr_class_t;

/* The class of a socket address (AF_INET or AF_INET6; an IPv4-mapped IPv6
 * address is classified as its IPv4 address). len is the size of sa. */
lm_netaddr_class_t lm_netaddr_classify(const struct sockaddr *sa, size_t len);
/* The class of a numeric address in text: IPv6, or IPv4 in any notation
 * the resolver accepts for a numeric host (inet_aton: decimal, octal,
 * hexadecimal, 1 to 4 parts). A name is LM_NETADDR_INVALID. */
lm_netaddr_class_t lm_netaddr_classify_text(const char *s);

/* Whether a connection may go to an address of class k. allow_private:
 * loopback and private ranges are allowed (channels of the configuration
 * file; admin-API channels when admin_private_upstreams is on). Metadata,
 * link-local and invalid addresses are never allowed. */
int lm_netaddr_allowed(lm_netaddr_class_t k, int allow_private);

/* "public", "loopback", "private", "link-local", "cloud metadata",
 * "invalid". Static. */
const char *lm_netaddr_class_str(lm_netaddr_class_t k);

/* The numeric text of sa ("127.0.0.1", "::1") into buf (NUL-terminated;
 * "?" when it cannot be written). Returns buf. */
char *lm_netaddr_format(const struct sockaddr *sa, size_t len, char *buf, size_t buflen);
#endif
