/*
 * wordcount: line / word / byte counts and the most frequent words of stdin.
 *
 *   usage: wordcount [TOP_N]
 *
 * Reads ALL of stdin (at most 64 MiB = 67108864 bytes; more is refused with
 * an error and exit status 1) and prints
 *
 *   lines=<n> words=<n> bytes=<n>
 *   <count> <word>          (up to TOP_N lines, default 10, max 1000)
 *
 * lines: number of '\n' bytes. words: maximal runs of non-whitespace bytes
 * (whitespace = space, \t, \n, \v, \f, \r), like `wc -w` in the C locale.
 * bytes: total bytes read.
 * Frequency words are maximal runs of ASCII letters/digits, lowercased (so
 * "Don't" counts as "don" and "t"); they are ranked by count, descending,
 * ties broken by byte-wise ascending word order. Counting uses an
 * open-addressing (linear probing, FNV-1a) hash table.
 *
 * Input is processed as a stream, so memory use is proportional to the number
 * of distinct words, not to the input size. Every symbol except main is
 * static and main keeps no state between calls (all memory is freed).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WC_MAX_INPUT (64LL * 1024 * 1024)
#define WC_MAX_TOP 1000L
#define WC_CHUNK 65536

typedef struct {
    uint64_t hash;
    size_t off; /* offset of the word in the arena */
    size_t len;
    uint64_t count; /* 0 = empty slot */
} wc_slot;

typedef struct {
    wc_slot *slots;
    size_t cap; /* power of two */
    size_t used;
    char *arena;
    size_t arena_len, arena_cap;
} wc_table;

static uint64_t wc_fnv1a(const char *s, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

static int wc_table_init(wc_table *t)
{
    memset(t, 0, sizeof *t);
    t->cap = 1024;
    t->slots = (wc_slot *)calloc(t->cap, sizeof(wc_slot));
    t->arena_cap = 65536;
    t->arena = (char *)malloc(t->arena_cap);
    return t->slots != NULL && t->arena != NULL;
}

static void wc_table_free(wc_table *t)
{
    free(t->slots);
    free(t->arena);
    memset(t, 0, sizeof *t);
}

static int wc_table_grow(wc_table *t)
{
    size_t ncap = t->cap * 2, i;
    wc_slot *ns = (wc_slot *)calloc(ncap, sizeof(wc_slot));
    if (ns == NULL)
        return 0;
    for (i = 0; i < t->cap; i++) {
        if (t->slots[i].count != 0) {
            size_t j = (size_t)t->slots[i].hash & (ncap - 1);
            while (ns[j].count != 0)
                j = (j + 1) & (ncap - 1);
            ns[j] = t->slots[i];
        }
    }
    free(t->slots);
    t->slots = ns;
    t->cap = ncap;
    return 1;
}

/* Count one occurrence of word w[0..n). Returns 0 on allocation failure. */
static int wc_table_add(wc_table *t, const char *w, size_t n)
{
    uint64_t h = wc_fnv1a(w, n);
    size_t j = (size_t)h & (t->cap - 1);
    for (;;) {
        wc_slot *s = &t->slots[j];
        if (s->count == 0)
            break;
        if (s->hash == h && s->len == n && memcmp(t->arena + s->off, w, n) == 0) {
            s->count++;
            return 1;
        }
        j = (j + 1) & (t->cap - 1);
    }
    /* New word: copy into the arena, fill the empty slot found above. */
    if (t->arena_len + n > t->arena_cap) {
        size_t ncap = t->arena_cap;
        char *na;
        while (t->arena_len + n > ncap)
            ncap *= 2;
        na = (char *)realloc(t->arena, ncap);
        if (na == NULL)
            return 0;
        t->arena = na;
        t->arena_cap = ncap;
    }
    memcpy(t->arena + t->arena_len, w, n);
    t->slots[j].hash = h;
    t->slots[j].off = t->arena_len;
    t->slots[j].len = n;
    t->slots[j].count = 1;
    t->arena_len += n;
    t->used++;
    if (t->used * 10 >= t->cap * 7)
        return wc_table_grow(t);
    return 1;
}

/* Current token buffer (a word can span read chunks). */
typedef struct {
    char *buf;
    size_t len, cap;
} wc_token;

static int wc_token_push(wc_token *tk, char c)
{
    if (tk->len == tk->cap) {
        size_t ncap = tk->cap ? tk->cap * 2 : 64;
        char *nb = (char *)realloc(tk->buf, ncap);
        if (nb == NULL)
            return 0;
        tk->buf = nb;
        tk->cap = ncap;
    }
    tk->buf[tk->len++] = c;
    return 1;
}

static int wc_cmp_arena_words(const wc_table *t, const wc_slot *a, const wc_slot *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(t->arena + a->off, t->arena + b->off, n);
    if (c != 0)
        return c;
    return a->len < b->len ? -1 : a->len > b->len ? 1 : 0;
}

/* Ranking: count descending, then word ascending (byte-wise). */
static int wc_better(const wc_table *t, const wc_slot *a, const wc_slot *b)
{
    if (a->count != b->count)
        return a->count > b->count;
    return wc_cmp_arena_words(t, a, b) < 0;
}

static int wc_usage(void)
{
    fprintf(stderr,
            "usage: wordcount [TOP_N] < input\n"
            "  TOP_N  number of most frequent words to list, 0..1000 (default 10)\n"
            "reads at most 64 MiB from stdin\n");
    return 2;
}

int main(int argc, char **argv)
{
    wc_table t;
    wc_token tk = {NULL, 0, 0};
    unsigned char *chunk = NULL;
    wc_slot **top = NULL;
    long top_n = 10;
    long long lines = 0, words = 0, bytes = 0;
    int in_space_word = 0, rc = 0;
    size_t ntop = 0, i, k;

    if (argc > 2)
        return wc_usage();
    if (argc == 2) {
        const char *s = argv[1];
        top_n = 0;
        if (*s == '\0')
            return wc_usage();
        for (; *s; s++) {
            if (*s < '0' || *s > '9' || (top_n = top_n * 10 + (*s - '0')) > WC_MAX_TOP) {
                fprintf(stderr, "wordcount: invalid TOP_N '%s'\n", argv[1]);
                return wc_usage();
            }
        }
    }

    /* A previous call (when linked into a bigger program) may have left the
     * EOF indicator set on stdin; stdin itself is the caller's to redirect. */
    clearerr(stdin);

    if (!wc_table_init(&t)) {
        wc_table_free(&t);
        fprintf(stderr, "wordcount: out of memory\n");
        return 1;
    }
    chunk = (unsigned char *)malloc(WC_CHUNK);
    top = (wc_slot **)malloc(((size_t)top_n + 1) * sizeof *top);
    if (chunk == NULL || top == NULL)
        goto oom;

    for (;;) {
        size_t got = fread(chunk, 1, WC_CHUNK, stdin);
        if (got == 0)
            break;
        bytes += (long long)got;
        if (bytes > WC_MAX_INPUT) {
            fprintf(stderr, "wordcount: input larger than 64 MiB (67108864 bytes), refusing\n");
            rc = 1;
            goto out;
        }
        for (i = 0; i < got; i++) {
            unsigned char c = chunk[i];
            int space = (c == ' ' || c == '\n' || c == '\t' || c == '\v' || c == '\f' || c == '\r');
            if (c == '\n')
                lines++;
            if (!space && !in_space_word)
                words++;
            in_space_word = !space;
            if (c >= 'A' && c <= 'Z')
                c = (unsigned char)(c - 'A' + 'a');
            if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
                if (!wc_token_push(&tk, (char)c))
                    goto oom;
            } else if (tk.len > 0) {
                if (!wc_table_add(&t, tk.buf, tk.len))
                    goto oom;
                tk.len = 0;
            }
        }
    }
    if (ferror(stdin)) {
        fprintf(stderr, "wordcount: read error\n");
        rc = 1;
        goto out;
    }
    if (tk.len > 0) {
        if (!wc_table_add(&t, tk.buf, tk.len))
            goto oom;
        tk.len = 0;
    }

    /* Top N by insertion into a small sorted array (N <= 1000). The ranking
     * is a total order (words are distinct), so the result is unique. */
    for (i = 0; i < t.cap && top_n > 0; i++) {
        wc_slot *s = &t.slots[i];
        if (s->count == 0)
            continue;
        if (ntop == (size_t)top_n && !wc_better(&t, s, top[ntop - 1]))
            continue;
        k = ntop < (size_t)top_n ? ntop++ : ntop - 1;
        while (k > 0 && wc_better(&t, s, top[k - 1])) {
            top[k] = top[k - 1];
            k--;
        }
        top[k] = s;
    }

    printf("lines=%lld words=%lld bytes=%lld\n", lines, words, bytes);
    for (i = 0; i < ntop; i++) {
        printf("%llu ", (unsigned long long)top[i]->count);
        fwrite(t.arena + top[i]->off, 1, top[i]->len, stdout);
        putchar('\n');
    }
    goto out;

oom:
    fprintf(stderr, "wordcount: out of memory\n");
    rc = 1;
out:
    free(top);
    free(chunk);
    free(tk.buf);
    wc_table_free(&t);
    return rc;
}
