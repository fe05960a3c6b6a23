/*
 * mandelbrot-gpu: the escape counts mandelbrot-gpu.wgsl computes, as a WASI
 * program, so a GPU task and a CPU task of the same work can be compared
 * (idlegrid-bench gpu) and checked against each other byte for byte.
 *
 *   usage: mandelbrot-gpu WIDTH HEIGHT MAX_ITER
 *
 * Output on stdout: WIDTH*HEIGHT little-endian u32 counts, row by row.
 * f32 arithmetic in the kernel's order, no contraction.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

static int parse(const char *text, long max, long *out)
{
    char *end = NULL;
    long value = strtol(text, &end, 10);
    if (end == text || *end != '\0' || value < 1 || value > max)
        return 0;
    *out = value;
    return 1;
}

int main(int argc, char **argv)
{
    long width, height, iterations;
    if (argc != 4 || !parse(argv[1], 16384, &width) || !parse(argv[2], 16384, &height)
        || !parse(argv[3], 60000, &iterations)) {
        fprintf(stderr, "usage: mandelbrot-gpu WIDTH HEIGHT MAX_ITER\n");
        return 2;
    }
    float x_step = 3.0f / (float)width;
    float y_step = 3.0f / (float)height;
    uint8_t *row = malloc((size_t)width * 4);
    if (row == NULL)
        return 1;
    for (long py = 0; py < height; py++) {
        for (long px = 0; px < width; px++) {
            float x0 = (float)px * x_step - 2.25f;
            float y0 = (float)py * y_step - 1.5f;
            float x = 0.0f, y = 0.0f;
            uint32_t i = 0;
            while (i < (uint32_t)iterations) {
                float x2 = x * x;
                float y2 = y * y;
                if (x2 + y2 > 4.0f)
                    break;
                float xt = x2 - y2 + x0;
                y = 2.0f * x * y + y0;
                x = xt;
                i++;
            }
            for (int b = 0; b < 4; b++)
                row[px * 4 + b] = (uint8_t)(i >> (8 * b));
        }
        fwrite(row, 1, (size_t)width * 4, stdout);
    }
    free(row);
    return 0;
}
