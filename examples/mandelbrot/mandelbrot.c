/*
 * mandelbrot: render ONE tile of a larger Mandelbrot image as binary PPM.
 *
 *   usage: mandelbrot WIDTH HEIGHT TILE_X TILE_Y TILE_SIZE [MAX_ITER]
 *
 * The full image is WIDTH x HEIGHT pixels and is cut into square tiles of
 * TILE_SIZE pixels; TILE_X / TILE_Y are tile indices (not pixels). Tiles on the
 * right / bottom edge are clipped to the image. A tile that starts outside the
 * image is rejected (exit 2).
 *
 * The view is the classic region re = -2.5..1.0, im = -1.25..1.25, grown in one
 * direction to keep the image's aspect ratio (pixels are square), centred on
 * (-0.75, 0). Row 0 is the top (im = +1.25 side).
 *
 * Output on stdout: "P6\n<w> <h>\n255\n" followed by w*h RGB bytes, nothing else.
 *
 * Colouring uses the continuous ("smooth") escape count
 *   mu = n + 1 - log2(log2(|z|))
 * with bail-out radius 16, mapped through a cyclic gradient; points that do not
 * escape within MAX_ITER are black. The logarithm is a hand-written series on
 * the IEEE bit pattern (only +, -, *, / which are exactly rounded), so output
 * does not depend on the libm in use. FP contraction (FMA fusion) is disabled
 * so native builds on FMA-capable targets match the wasm build bit for bit.
 *
 * Every symbol except main is static and main keeps no state between calls.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* No FMA fusion: keeps native results identical to wasm (which has no FMA). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define MB_MAX_DIM 1048576LL     /* max image width / height */
#define MB_MAX_TILE 4096LL        /* max tile size (48 MiB of pixels) */
#define MB_MAX_ITER 100000000LL  /* max iterations per pixel */
#define MB_BAILOUT2 256.0        /* |z|^2 escape threshold (radius 16) */

/* Strict decimal parse into [lo, hi]. */
static int mb_parse_ll(const char *str, long long lo, long long hi, long long *out)
{
    long long v = 0;
    if (str == NULL || *str == '\0')
        return 0;
    for (; *str; str++) {
        if (*str < '0' || *str > '9')
            return 0;
        v = v * 10 + (*str - '0');
        if (v > hi)
            return 0;
    }
    if (v < lo)
        return 0;
    *out = v;
    return 1;
}

static int mb_usage(void)
{
    fprintf(stderr,
            "usage: mandelbrot WIDTH HEIGHT TILE_X TILE_Y TILE_SIZE [MAX_ITER]\n"
            "  WIDTH, HEIGHT  full image size in pixels, 1..1048576\n"
            "  TILE_X, TILE_Y tile index (in tiles) of the tile to render\n"
            "  TILE_SIZE      tile edge in pixels, 1..4096 (clipped at the image edge)\n"
            "  MAX_ITER       iteration limit, 1..100000000 (default 1000)\n"
            "writes the tile as a binary PPM (P6) to stdout\n");
    return 2;
}

/* log2(x) for finite x > 0: exponent from the bit pattern plus an atanh series
 * for the mantissa (relative error ~1e-9, plenty for colouring). */
static double mb_log2(double x)
{
    uint64_t bits;
    int e;
    double m, t, t2, ln;
    memcpy(&bits, &x, sizeof bits);
    e = (int)((bits >> 52) & 0x7ff) - 1023;
    bits = (bits & UINT64_C(0x000fffffffffffff)) | UINT64_C(0x3ff0000000000000);
    memcpy(&m, &bits, sizeof m); /* m in [1, 2) */
    if (m > 1.4142135623730951) {
        m *= 0.5;
        e += 1;
    } /* m in (0.707, 1.414] */
    t = (m - 1.0) / (m + 1.0);
    t2 = t * t;
    ln = 2.0 * t *
         (1.0 + t2 * (1.0 / 3 + t2 * (1.0 / 5 + t2 * (1.0 / 7 + t2 * (1.0 / 9 + t2 * (1.0 / 11))))));
    return (double)e + ln * 1.4426950408889634;
}

/* Cyclic gradient (the well-known "Ultra Fractal" palette). */
static void mb_palette(double t, unsigned char rgb[3])
{
    static const double pos[6] = {0.0, 0.16, 0.42, 0.6425, 0.8575, 1.0};
    static const double col[6][3] = {
        {0, 7, 100}, {32, 107, 203}, {237, 255, 255},
        {255, 170, 0}, {0, 2, 0}, {0, 7, 100},
    };
    int i, k;
    double f;
    for (i = 0; i < 4 && t >= pos[i + 1]; i++)
        ;
    f = (t - pos[i]) / (pos[i + 1] - pos[i]);
    if (f < 0.0)
        f = 0.0;
    if (f > 1.0)
        f = 1.0;
    for (k = 0; k < 3; k++) {
        double v = col[i][k] + (col[i + 1][k] - col[i][k]) * f;
        int iv = (int)(v + 0.5);
        rgb[k] = (unsigned char)(iv < 0 ? 0 : iv > 255 ? 255 : iv);
    }
}

static void mb_pixel(double cr, double ci, long long max_iter, unsigned char rgb[3])
{
    double zr = 0.0, zi = 0.0, zr2 = 0.0, zi2 = 0.0;
    long long n;
    for (n = 0; n < max_iter; n++) {
        zi = 2.0 * zr * zi + ci;
        zr = zr2 - zi2 + cr;
        zr2 = zr * zr;
        zi2 = zi * zi;
        if (zr2 + zi2 > MB_BAILOUT2)
            break;
    }
    if (n >= max_iter) {
        rgb[0] = rgb[1] = rgb[2] = 0;
        return;
    }
    {
        /* log2|z| = 0.5 * log2(|z|^2); |z| > 16 so log2|z| > 4 > 0. */
        double mu = (double)n + 1.0 - mb_log2(0.5 * mb_log2(zr2 + zi2));
        double t;
        if (mu < 0.0)
            mu = 0.0;
        t = mu / 40.0 + 0.2; /* one palette cycle per 40 iterations */
        t = t - (double)(long long)t;
        mb_palette(t, rgb);
    }
}

int main(int argc, char **argv)
{
    long long width, height, tx, ty, tsize, max_iter = 1000;
    long long x0, y0, tw, th, px, py;
    double scale;
    unsigned char *row;

    if (argc < 6 || argc > 7)
        return mb_usage();
    if (!mb_parse_ll(argv[1], 1, MB_MAX_DIM, &width) ||
        !mb_parse_ll(argv[2], 1, MB_MAX_DIM, &height) ||
        !mb_parse_ll(argv[3], 0, MB_MAX_DIM, &tx) ||
        !mb_parse_ll(argv[4], 0, MB_MAX_DIM, &ty) ||
        !mb_parse_ll(argv[5], 1, MB_MAX_TILE, &tsize) ||
        (argc == 7 && !mb_parse_ll(argv[6], 1, MB_MAX_ITER, &max_iter))) {
        fprintf(stderr, "mandelbrot: invalid argument\n");
        return mb_usage();
    }
    x0 = tx * tsize;
    y0 = ty * tsize;
    if (x0 >= width || y0 >= height) {
        fprintf(stderr, "mandelbrot: tile (%lld, %lld) of size %lld is outside the %lldx%lld image\n",
                tx, ty, tsize, width, height);
        return mb_usage();
    }
    tw = width - x0 < tsize ? width - x0 : tsize;
    th = height - y0 < tsize ? height - y0 : tsize;

    /* Square pixels: the 3.5 x 2.5 region is widened in the direction in
     * which the image is relatively longer. scale = plane units per pixel. */
    if ((double)width * 2.5 >= (double)height * 3.5)
        scale = 2.5 / (double)height; /* wide image: full 2.5 height */
    else
        scale = 3.5 / (double)width; /* tall image: full 3.5 width */

    row = (unsigned char *)malloc((size_t)tw * 3);
    if (row == NULL) {
        fprintf(stderr, "mandelbrot: out of memory\n");
        return 1;
    }
    printf("P6\n%lld %lld\n255\n", tw, th);
    for (py = y0; py < y0 + th; py++) {
        double ci = -(((double)py + 0.5) - 0.5 * (double)height) * scale;
        for (px = x0; px < x0 + tw; px++) {
            double cr = -0.75 + (((double)px + 0.5) - 0.5 * (double)width) * scale;
            mb_pixel(cr, ci, max_iter, row + 3 * (px - x0));
        }
        if (fwrite(row, 3, (size_t)tw, stdout) != (size_t)tw) {
            free(row);
            fprintf(stderr, "mandelbrot: write error\n");
            return 1;
        }
    }
    free(row);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "mandelbrot: write error\n");
        return 1;
    }
    return 0;
}
