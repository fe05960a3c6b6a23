// Reads its own input file whole and a 64 KiB window of a file every task
// shares (placed by what its own file holds), and prints a hash of each
// (FNV-1a over little-endian 64-bit words) with the window's place and the
// shared file's size: what tests/data.rs computes again.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW 65536

// `len` is a multiple of 8 (the files' lengths are).
static uint64_t fnv(uint64_t hash, const unsigned char *bytes, size_t len) {
    for (size_t i = 0; i + 8 <= len; i += 8) {
        uint64_t word;
        memcpy(&word, bytes + i, 8);
        hash ^= word;
        hash *= 1099511628211ULL;
    }
    return hash;
}

int main(void) {
    static unsigned char buffer[1 << 16];
    FILE *own = fopen("/input/own.bin", "rb");
    if (!own) {
        fprintf(stderr, "no /input/own.bin\n");
        return 2;
    }
    uint64_t own_hash = 14695981039346656037ULL;
    size_t read;
    while ((read = fread(buffer, 1, sizeof buffer, own)) > 0) {
        own_hash = fnv(own_hash, buffer, read);
    }
    fclose(own);

    FILE *shared = fopen("/input/shared.bin", "rb");
    if (!shared) {
        fprintf(stderr, "no /input/shared.bin\n");
        return 3;
    }
    fseek(shared, 0, SEEK_END);
    long size = ftell(shared);
    long span = size > WINDOW ? size - WINDOW : 1;
    long at = (long)(own_hash % (uint64_t)span);
    fseek(shared, at, SEEK_SET);
    read = fread(buffer, 1, WINDOW, shared);
    uint64_t shared_hash = fnv(14695981039346656037ULL, buffer, read);
    fclose(shared);
    printf("own=%016llx shared=%016llx at=%ld size=%ld\n", (unsigned long long)own_hash,
           (unsigned long long)shared_hash, at, size);
    return 0;
}
