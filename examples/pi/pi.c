/*
 * pi: Monte Carlo estimate of pi.
 *
 *   usage: pi SAMPLES [SEED]
 *
 * Draws SAMPLES points uniformly from the unit square (as pairs of 32-bit
 * unsigned integer coordinates) and counts how many fall inside the quarter
 * circle. The hot loop is integer-only: a point (x, y) is inside when
 * x*x + y*y < 2^64, computed with 64-bit unsigned arithmetic (the sum carries
 * out exactly when the point is outside).
 *
 * The PRNG is xoshiro256**. With SEED it is seeded from SEED via splitmix64,
 * so output is reproducible; without SEED it is seeded from 32 bytes of
 * getentropy() (inside the idlegrid sandbox that stream is deterministic per
 * task, so replicas of one task agree).
 *
 * Output (stdout, one line):
 *   samples=<n> inside=<k> pi=<4k/n rounded half-up to 9 decimals>
 * The estimate is formatted with integer long division, so no floating point
 * is used anywhere in the program.
 *
 * Plain C (plus getentropy); every symbol except main is static and main keeps
 * no state between calls, so it can be linked into a larger binary with
 * -Dmain=<something> and called repeatedly.
 */
#define _DEFAULT_SOURCE 1 /* getentropy() in <unistd.h> on glibc */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define PI_MAX_SAMPLES UINT64_C(1000000000000000000) /* 1e18 */

typedef struct {
    uint64_t s[4];
} pi_rng;

static uint64_t pi_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t pi_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static void pi_rng_seed(pi_rng *rng, uint64_t seed)
{
    uint64_t sm = seed;
    int i;
    for (i = 0; i < 4; i++)
        rng->s[i] = pi_splitmix64(&sm);
}

static uint64_t pi_rng_next(pi_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = pi_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = pi_rotl(s[3], 45);
    return result;
}

/* Strict decimal parse: digits only, no sign, no overflow. */
static int pi_parse_u64(const char *str, uint64_t *out)
{
    uint64_t v = 0;
    if (str == NULL || *str == '\0')
        return 0;
    for (; *str; str++) {
        unsigned d;
        if (*str < '0' || *str > '9')
            return 0;
        d = (unsigned)(*str - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

static int pi_usage(void)
{
    fprintf(stderr,
            "usage: pi SAMPLES [SEED]\n"
            "  SAMPLES  number of random points, 1..1000000000000000000\n"
            "  SEED     optional unsigned 64-bit decimal seed; without it the\n"
            "           generator is seeded from getentropy()\n");
    return 2;
}

static uint64_t pi_count_inside(pi_rng *rng, uint64_t samples)
{
    uint64_t inside = 0;
    uint64_t i;
    for (i = 0; i < samples; i++) {
        uint64_t r = pi_rng_next(rng);
        uint64_t x = r >> 32;
        uint64_t y = r & UINT64_C(0xffffffff);
        uint64_t xx = x * x;
        uint64_t sum = xx + y * y;
        /* No carry out of the 64-bit add <=> x^2 + y^2 < 2^64. */
        inside += (uint64_t)(sum >= xx);
    }
    return inside;
}

int main(int argc, char **argv)
{
    pi_rng rng;
    uint64_t samples = 0, seed = 0, inside, num, ip, rem, frac;
    int i;

    if (argc < 2 || argc > 3)
        return pi_usage();
    if (!pi_parse_u64(argv[1], &samples) || samples == 0 ||
        samples > PI_MAX_SAMPLES) {
        fprintf(stderr, "pi: invalid SAMPLES '%s'\n", argv[1]);
        return pi_usage();
    }
    if (argc == 3) {
        if (!pi_parse_u64(argv[2], &seed)) {
            fprintf(stderr, "pi: invalid SEED '%s'\n", argv[2]);
            return pi_usage();
        }
        pi_rng_seed(&rng, seed);
    } else {
        unsigned char buf[32];
        if (getentropy(buf, sizeof buf) != 0) {
            fprintf(stderr, "pi: getentropy failed\n");
            return 1;
        }
        memset(&rng, 0, sizeof rng);
        for (i = 0; i < 32; i++)
            rng.s[i / 8] |= (uint64_t)buf[i] << (8 * (i % 8));
        if ((rng.s[0] | rng.s[1] | rng.s[2] | rng.s[3]) == 0)
            pi_rng_seed(&rng, 0); /* all-zero state is a fixed point */
    }

    inside = pi_count_inside(&rng, samples);

    /* pi ~= 4 * inside / samples, 9 decimals, round half up, integers only.
     * 4*inside <= 4e18 and 10*rem < 1e19 both fit in 64 bits. */
    num = 4 * inside;
    ip = num / samples;
    rem = num % samples;
    frac = 0;
    for (i = 0; i < 9; i++) {
        rem *= 10;
        frac = frac * 10 + rem / samples;
        rem %= samples;
    }
    if (rem >= samples - rem) { /* 2*rem >= samples, without overflow */
        frac++;
        if (frac == UINT64_C(1000000000)) {
            frac = 0;
            ip++;
        }
    }
    printf("samples=%llu inside=%llu pi=%llu.%09llu\n",
           (unsigned long long)samples, (unsigned long long)inside,
           (unsigned long long)ip, (unsigned long long)frac);
    return 0;
}
