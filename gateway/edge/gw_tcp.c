/*
 * The kernel's TCP_INFO fields that glibc's struct tcp_info lacks. Its own
 * file: <linux/tcp.h> cannot be included next to <netinet/tcp.h>, which the
 * other gateway sources include (libuv's <uv.h> brings it), hence
 * no gateway header here either; its declaration in gateway/edge/gw_edge.h is
 * the same.
 */
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <stdint.h>
#include <sys/socket.h>

uint64_t gw_tcp_bytes_acked(int fd);

uint64_t gw_tcp_bytes_acked(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof(ti.tcpi_bytes_acked))
        return UINT64_MAX;
    return ti.tcpi_bytes_acked;
}
