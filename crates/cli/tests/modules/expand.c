// Writes as many bytes as its second argument says to stdout: a xorshift64
// stream seeded by its first argument (the task's index), 8 bytes at a
// time, little-endian: what tests/data.rs computes again. An output too
// large to travel in a result, for the providers to keep.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: expand SEED BYTES\n");
        return 2;
    }
    uint64_t state = strtoull(argv[1], NULL, 10) * 0x9E3779B97F4A7C15ULL | 1;
    uint64_t left = strtoull(argv[2], NULL, 10);
    static unsigned char buffer[1 << 16];
    while (left > 0) {
        size_t len = left < sizeof buffer ? (size_t)left : sizeof buffer;
        for (size_t i = 0; i < len; i += 8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            unsigned char word[8];
            for (int b = 0; b < 8; b++) {
                word[b] = (unsigned char)(state >> (8 * b));
            }
            memcpy(buffer + i, word, len - i < 8 ? len - i : 8);
        }
        if (fwrite(buffer, 1, len, stdout) != len) {
            return 1;
        }
        left -= len;
    }
    return 0;
}
