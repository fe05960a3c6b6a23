/*
 * probe: reports what the sandbox exposes, one key=value per line.
 *
 *   realtime=<sec>.<nsec>      clock_gettime(CLOCK_REALTIME)
 *   monotonic=<sec>.<nsec>     clock_gettime(CLOCK_MONOTONIC)
 *   random=<32 hex digits>     16 bytes from getentropy()
 *   env_count=<n>              number of entries in environ
 *   argc=<n>
 *   arg<i>=<argv[i]>           for i in 0..argc-1
 *   nan_bits=<16 hex digits>   same as nan_div_bits (kept for convenience)
 *   nan_div_bits=<16 hex>      bit pattern of 0.0/0.0 (double, computed at run time)
 *   nan_sqrt_bits=<16 hex>     bit pattern of sqrt(-1.0) (double, run time)
 *   nan_f32_bits=<8 hex>       bit pattern of 0.0f/0.0f (float, run time)
 *   stdin_bytes=<n>            bytes read from stdin until EOF
 *
 * A failing call prints "<key>=error <errno>" instead of the value. Exit 0.
 */
#define _DEFAULT_SOURCE 1
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void print_clock(const char *key, clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        printf("%s=error %d\n", key, errno);
    else
        printf("%s=%lld.%09ld\n", key, (long long)ts.tv_sec, (long)ts.tv_nsec);
}

int main(int argc, char **argv)
{
    unsigned char rnd[16];
    volatile double zero = 0.0, minus_one = -1.0;
    volatile float zero_f = 0.0f;
    double nan_div, nan_sqrt;
    float nan_f32;
    uint64_t bits_div, bits_sqrt;
    uint32_t bits_f32;
    unsigned char buf[4096];
    unsigned long long stdin_bytes = 0;
    size_t got;
    int i, n;

    print_clock("realtime", CLOCK_REALTIME);
    print_clock("monotonic", CLOCK_MONOTONIC);

    if (getentropy(rnd, sizeof rnd) != 0) {
        printf("random=error %d\n", errno);
    } else {
        printf("random=");
        for (i = 0; i < (int)sizeof rnd; i++)
            printf("%02x", rnd[i]);
        printf("\n");
    }

    n = 0;
    if (environ != NULL)
        while (environ[n] != NULL)
            n++;
    printf("env_count=%d\n", n);

    printf("argc=%d\n", argc);
    for (i = 0; i < argc; i++)
        printf("arg%d=%s\n", i, argv[i]);

    nan_div = zero / zero;
    nan_sqrt = sqrt(minus_one);
    nan_f32 = zero_f / zero_f;
    memcpy(&bits_div, &nan_div, sizeof bits_div);
    memcpy(&bits_sqrt, &nan_sqrt, sizeof bits_sqrt);
    memcpy(&bits_f32, &nan_f32, sizeof bits_f32);
    printf("nan_bits=%016llx\n", (unsigned long long)bits_div);
    printf("nan_div_bits=%016llx\n", (unsigned long long)bits_div);
    printf("nan_sqrt_bits=%016llx\n", (unsigned long long)bits_sqrt);
    printf("nan_f32_bits=%08lx\n", (unsigned long)bits_f32);

    while ((got = fread(buf, 1, sizeof buf, stdin)) > 0)
        stdin_bytes += got;
    printf("stdin_bytes=%llu\n", stdin_bytes);
    return 0;
}
