/*
 * escape: tries to get out of the sandbox and reports what happened. Never
 * crashes; always exits 0. One key=value line per attempt:
 *
 *   open_etc_passwd=denied|OPENED         fopen("/etc/passwd", "r")
 *   open_dotdot_etc_passwd=denied|OPENED  fopen("../../etc/passwd", "r")
 *   open_etc_hostname=denied|OPENED       fopen("/etc/hostname", "r")
 *   opendir_root=denied|OPENED            opendir("/")
 *   opendir_cwd=denied|OPENED             opendir(".")
 *   write_tmp=denied|OPENED               fopen("/tmp/idlegrid-escape", "w")
 *   sock_accept_<fd>=<wasi errno>         raw WASI sock_accept on fds 3..8
 *   sock_send_1=<wasi errno>              raw WASI sock_send on fd 1 (stdout)
 *   read_arg=ok <bytes>|denied            only if argv[1]: fopen(argv[1], "r")
 *   write_arg=ok|denied                   only if argv[2]: fopen(argv[2], "w")
 *
 * The sock_* values are the raw WASI errno numbers returned by the host
 * (0 would mean success). In a native (non-WASI) build the raw imports do not
 * exist and those lines read "unsupported".
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__wasi__)
__attribute__((import_module("wasi_snapshot_preview1"), import_name("sock_accept")))
int32_t escape_raw_sock_accept(int32_t fd, int32_t flags, int32_t *result_fd);

/* sock_send(fd, si_data: ciovec array, si_data_len, si_flags) -> (size, errno) */
__attribute__((import_module("wasi_snapshot_preview1"), import_name("sock_send")))
int32_t escape_raw_sock_send(int32_t fd, const void *iovs, int32_t iovs_len,
                             int32_t si_flags, int32_t *result_size);

typedef struct {
    const void *buf;
    uint32_t len;
} escape_ciovec; /* wasm32 layout of __wasi_ciovec_t */
#endif

static void try_open(const char *key, const char *path, const char *mode)
{
    FILE *f = fopen(path, mode);
    if (f == NULL) {
        printf("%s=denied\n", key);
        return;
    }
    if (mode[0] == 'w')
        fputs("idlegrid escape probe was here\n", f);
    fclose(f);
    printf("%s=OPENED\n", key);
}

static void try_opendir(const char *key, const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        printf("%s=denied\n", key);
        return;
    }
    closedir(d);
    printf("%s=OPENED\n", key);
}

int main(int argc, char **argv)
{
    int fd;

    try_open("open_etc_passwd", "/etc/passwd", "r");
    try_open("open_dotdot_etc_passwd", "../../etc/passwd", "r");
    try_open("open_etc_hostname", "/etc/hostname", "r");
    try_opendir("opendir_root", "/");
    try_opendir("opendir_cwd", ".");
    try_open("write_tmp", "/tmp/idlegrid-escape", "w");

    fflush(stdout);
    for (fd = 3; fd <= 8; fd++) {
#if defined(__wasi__)
        int32_t new_fd = -1;
        int32_t err = escape_raw_sock_accept(fd, 0, &new_fd);
        printf("sock_accept_%d=%d\n", fd, (int)err);
#else
        printf("sock_accept_%d=unsupported\n", fd);
#endif
    }
    fflush(stdout);
    {
#if defined(__wasi__)
        static const char msg[] = "";
        escape_ciovec iov;
        int32_t sent = -1;
        int32_t err;
        iov.buf = msg;
        iov.len = 0;
        err = escape_raw_sock_send(1, &iov, 1, 0, &sent);
        printf("sock_send_1=%d\n", (int)err);
#else
        printf("sock_send_1=unsupported\n");
#endif
    }

    if (argc > 1) {
        FILE *f = fopen(argv[1], "r");
        if (f == NULL) {
            printf("read_arg=denied\n");
        } else {
            char buf[4096];
            size_t got;
            unsigned long long total = 0;
            while ((got = fread(buf, 1, sizeof buf, f)) > 0)
                total += got;
            fclose(f);
            printf("read_arg=ok %llu\n", total);
        }
    }
    if (argc > 2) {
        FILE *f = fopen(argv[2], "w");
        if (f == NULL) {
            printf("write_arg=denied\n");
        } else {
            int ok = fputs("written by escape probe\n", f) >= 0;
            ok = (fclose(f) == 0) && ok;
            printf("write_arg=%s\n", ok ? "ok" : "denied");
        }
    }
    return 0;
}
