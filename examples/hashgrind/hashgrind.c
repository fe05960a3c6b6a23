/*
 * hashgrind: iterated SHA-256 (self-contained SHA-256 implementation).
 *
 *   usage: hashgrind ITERATIONS [SEED_STRING]
 *          hashgrind --selftest
 *
 * Computes d = SHA-256(SEED_STRING) (default seed "idlegrid"), then replaces d
 * with SHA-256(d) (hashing the raw 32-byte digest) ITERATIONS times, and prints
 * the final digest as 64 lowercase hex digits plus a newline.
 * ITERATIONS = 0 therefore prints SHA-256 of the seed itself.
 *
 * --selftest checks the implementation against the FIPS 180-2 test vectors
 * ("abc", "", the 448-bit two-block message, one million 'a') and exits 0 when
 * all match, 1 otherwise.
 *
 * Integer-only. Every symbol except main is static and main keeps no state
 * between calls.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint32_t hg_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t hg_h0[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

#define HG_ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

/* Process one 64-byte block given as 16 big-endian words already loaded. */
static void hg_compress_words(uint32_t state[8], const uint32_t in[16])
{
    uint32_t w[64];
    uint32_t a, b, c, d, e, f, g, h;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = in[i];
    for (i = 16; i < 64; i++) {
        uint32_t s0 = HG_ROTR(w[i - 15], 7) ^ HG_ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = HG_ROTR(w[i - 2], 17) ^ HG_ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = state[0]; b = state[1]; c = state[2]; d = state[3];
    e = state[4]; f = state[5]; g = state[6]; h = state[7];
    for (i = 0; i < 64; i++) {
        uint32_t S1 = HG_ROTR(e, 6) ^ HG_ROTR(e, 11) ^ HG_ROTR(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = h + S1 + ch + hg_k[i] + w[i];
        uint32_t S0 = HG_ROTR(a, 2) ^ HG_ROTR(a, 13) ^ HG_ROTR(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        h = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    state[0] += a; state[1] += b; state[2] += c; state[3] += d;
    state[4] += e; state[5] += f; state[6] += g; state[7] += h;
}

static void hg_compress_bytes(uint32_t state[8], const unsigned char *p)
{
    uint32_t in[16];
    int i;
    for (i = 0; i < 16; i++)
        in[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) |
                ((uint32_t)p[4 * i + 2] << 8) | (uint32_t)p[4 * i + 3];
    hg_compress_words(state, in);
}

static void hg_state_to_bytes(const uint32_t state[8], unsigned char out[32])
{
    int i;
    for (i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(state[i] >> 24);
        out[4 * i + 1] = (unsigned char)(state[i] >> 16);
        out[4 * i + 2] = (unsigned char)(state[i] >> 8);
        out[4 * i + 3] = (unsigned char)state[i];
    }
}

/* One-shot SHA-256 of an arbitrary buffer. */
static void hg_sha256(const unsigned char *data, size_t len, unsigned char out[32])
{
    uint32_t state[8];
    unsigned char block[64];
    size_t off = 0, rem;
    uint64_t bits = (uint64_t)len * 8;
    int i;

    memcpy(state, hg_h0, sizeof state);
    while (len - off >= 64) {
        hg_compress_bytes(state, data + off);
        off += 64;
    }
    rem = len - off;
    memset(block, 0, sizeof block);
    if (rem > 0)
        memcpy(block, data + off, rem);
    block[rem] = 0x80;
    if (rem >= 56) {
        hg_compress_bytes(state, block);
        memset(block, 0, sizeof block);
    }
    for (i = 0; i < 8; i++)
        block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    hg_compress_bytes(state, block);
    hg_state_to_bytes(state, out);
}

/* digest <- SHA-256(digest) iterations times, working on words: a 32-byte
 * message is a single block with fixed padding (0x80, zeros, length 256). */
static void hg_grind(uint32_t digest[8], uint64_t iterations)
{
    uint32_t block[16];
    uint32_t state[8];
    uint64_t it;
    int i;
    for (i = 8; i < 16; i++)
        block[i] = 0;
    block[8] = 0x80000000u;
    block[15] = 256;
    for (it = 0; it < iterations; it++) {
        for (i = 0; i < 8; i++)
            block[i] = digest[i];
        memcpy(state, hg_h0, sizeof state);
        hg_compress_words(state, block);
        for (i = 0; i < 8; i++)
            digest[i] = state[i];
    }
}

static void hg_to_hex(const unsigned char *bytes, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = hex[bytes[i] >> 4];
        out[2 * i + 1] = hex[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hg_check(const char *name, const unsigned char *msg, size_t len, const char *want)
{
    unsigned char d[32];
    char hex[65];
    hg_sha256(msg, len, d);
    hg_to_hex(d, 32, hex);
    if (strcmp(hex, want) != 0) {
        fprintf(stderr, "hashgrind: selftest %s FAILED: got %s want %s\n", name, hex, want);
        return 0;
    }
    return 1;
}

static int hg_selftest(void)
{
    static const char two_block[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    unsigned char *million;
    int ok = 1;
    ok &= hg_check("abc", (const unsigned char *)"abc", 3,
                   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ok &= hg_check("empty", (const unsigned char *)"", 0,
                   "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    ok &= hg_check("448-bit", (const unsigned char *)two_block, sizeof two_block - 1,
                   "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    million = (unsigned char *)malloc(1000000);
    if (million == NULL) {
        fprintf(stderr, "hashgrind: out of memory\n");
        return 1;
    }
    memset(million, 'a', 1000000);
    ok &= hg_check("million-a", million, 1000000,
                   "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(million);
    {
        /* The word-level fast path must agree with the generic one. */
        unsigned char d[32], e[32];
        uint32_t w[8];
        int i;
        hg_sha256((const unsigned char *)"abc", 3, d);
        for (i = 0; i < 8; i++)
            w[i] = ((uint32_t)d[4 * i] << 24) | ((uint32_t)d[4 * i + 1] << 16) |
                   ((uint32_t)d[4 * i + 2] << 8) | (uint32_t)d[4 * i + 3];
        hg_grind(w, 1);
        hg_state_to_bytes(w, e);
        hg_sha256(d, 32, d);
        if (memcmp(d, e, 32) != 0) {
            fprintf(stderr, "hashgrind: selftest fast-path FAILED\n");
            ok = 0;
        }
    }
    if (!ok)
        return 1;
    printf("selftest ok\n");
    return 0;
}

static int hg_usage(void)
{
    fprintf(stderr,
            "usage: hashgrind ITERATIONS [SEED_STRING]\n"
            "       hashgrind --selftest\n"
            "  ITERATIONS   number of extra SHA-256 rounds over the 32-byte digest,\n"
            "               0..1000000000000000000\n"
            "  SEED_STRING  bytes hashed first (default \"idlegrid\")\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *seed = "idlegrid";
    const char *s;
    uint64_t iterations = 0;
    unsigned char d[32];
    uint32_t w[8];
    char hex[65];
    int i;

    if (argc == 2 && strcmp(argv[1], "--selftest") == 0)
        return hg_selftest();
    if (argc < 2 || argc > 3)
        return hg_usage();
    s = argv[1];
    if (*s == '\0')
        return hg_usage();
    for (; *s; s++) {
        unsigned dg;
        if (*s < '0' || *s > '9') {
            fprintf(stderr, "hashgrind: invalid ITERATIONS '%s'\n", argv[1]);
            return hg_usage();
        }
        dg = (unsigned)(*s - '0');
        iterations = iterations * 10 + dg;
        if (iterations > UINT64_C(1000000000000000000)) {
            fprintf(stderr, "hashgrind: ITERATIONS too large\n");
            return hg_usage();
        }
    }
    if (argc == 3)
        seed = argv[2];

    hg_sha256((const unsigned char *)seed, strlen(seed), d);
    for (i = 0; i < 8; i++)
        w[i] = ((uint32_t)d[4 * i] << 24) | ((uint32_t)d[4 * i + 1] << 16) |
               ((uint32_t)d[4 * i + 2] << 8) | (uint32_t)d[4 * i + 3];
    hg_grind(w, iterations);
    hg_state_to_bytes(w, d);
    hg_to_hex(d, 32, hex);
    printf("%s\n", hex);
    return 0;
}
