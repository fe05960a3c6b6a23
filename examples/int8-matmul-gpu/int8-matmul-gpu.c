/*
 * int8-matmul-gpu: C = A × B for int8 matrices, the product
 * int8-matmul-gpu.wgsl computes, as a WASI program over the same bytes, so
 * a GPU task and a CPU task of the same work can be compared byte for byte.
 *
 *   usage: int8-matmul-gpu < INPUT > OUTPUT
 *
 * stdin: M, N, K as little-endian u32 (the kernel's params buffer), then
 * A's M·K int8 row-major (its a buffer), then B's K·N int8 row-major (its
 * b buffer), nothing after.
 * stdout: C's M·N i32 row-major, little-endian (its c buffer).
 *
 * 1 ≤ M, N, K ≤ 65536, so no sum overflows an i32 (|sum| ≤ K · 128²), and
 * A and B at most 64 MiB, C at most 256 MiB.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define DIMENSION_MAX 65536u
#define MATRIX_BYTES_MAX ((uint64_t)64 << 20)
#define OUTPUT_BYTES_MAX ((uint64_t)256 << 20)

static int read_exact(void *buffer, size_t bytes)
{
    return fread(buffer, 1, bytes, stdin) == bytes;
}

static uint32_t le32(const uint8_t *bytes)
{
    return (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16
        | (uint32_t)bytes[3] << 24;
}

static int fail(const char *why)
{
    fprintf(stderr, "int8-matmul-gpu: %s\n", why);
    return 1;
}

int main(void)
{
    uint8_t header[12];
    if (!read_exact(header, sizeof header))
        return fail("stdin ends before the header (M, N, K as u32)");
    uint64_t m = le32(header), n = le32(header + 4), k = le32(header + 8);
    if (m < 1 || n < 1 || k < 1 || m > DIMENSION_MAX || n > DIMENSION_MAX || k > DIMENSION_MAX)
        return fail("M, N and K must be 1 ... 65536");
    if (m * k > MATRIX_BYTES_MAX || k * n > MATRIX_BYTES_MAX || m * n * 4 > OUTPUT_BYTES_MAX)
        return fail("the matrices are larger than the limits (64 MiB in, 256 MiB out)");

    int8_t *a = malloc(m * k);
    int8_t *b = malloc(k * n);
    int32_t *sums = malloc(n * sizeof *sums);
    uint8_t *row = malloc(n * 4);
    if (a == NULL || b == NULL || sums == NULL || row == NULL)
        return fail("out of memory");
    if (!read_exact(a, m * k) || !read_exact(b, k * n))
        return fail("stdin ends before the end of A and B");
    if (fgetc(stdin) != EOF)
        return fail("stdin goes on after B");

    for (uint64_t i = 0; i < m; i++) {
        for (uint64_t j = 0; j < n; j++)
            sums[j] = 0;
        for (uint64_t inner = 0; inner < k; inner++) {
            int32_t value = a[i * k + inner];
            const int8_t *b_row = b + inner * n;
            for (uint64_t j = 0; j < n; j++)
                sums[j] += value * b_row[j];
        }
        for (uint64_t j = 0; j < n; j++) {
            uint32_t word = (uint32_t)sums[j];
            for (int byte = 0; byte < 4; byte++)
                row[j * 4 + byte] = (uint8_t)(word >> (8 * byte));
        }
        if (fwrite(row, 1, n * 4, stdout) != n * 4)
            return fail("cannot write stdout");
    }
    free(a);
    free(b);
    free(sums);
    free(row);
    return 0;
}
