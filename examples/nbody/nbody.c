/*
 * nbody: the classic 5-body Jovian planets simulation (Sun, Jupiter, Saturn,
 * Uranus, Neptune), as in the Computer Language Benchmarks Game.
 *
 *   usage: nbody STEPS
 *
 * Offsets the Sun's momentum, prints the total energy, advances the system
 * STEPS times with dt = 0.01 (symplectic Euler, double precision), and prints
 * the energy again. Output: two lines, "%.9f" each.
 *
 * Only +, -, *, / and sqrt are used (all exactly rounded in IEEE 754), and FP
 * contraction is disabled, so native and wasm builds agree bit for bit.
 *
 * Every symbol except main is static; main copies the initial conditions into
 * a local array on every call, so it can be called repeatedly.
 */
#include <math.h>
#include <stdio.h>

/* No FMA fusion: keeps native results identical to wasm (which has no FMA). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define NB_PI 3.141592653589793
#define NB_SOLAR_MASS (4 * NB_PI * NB_PI)
#define NB_DAYS_PER_YEAR 365.24
#define NB_BODIES 5
#define NB_MAX_STEPS 1000000000000LL /* 1e12 */

typedef struct {
    double x, y, z, vx, vy, vz, mass;
} nb_body;

static const nb_body nb_initial[NB_BODIES] = {
    /* sun */
    {0, 0, 0, 0, 0, 0, NB_SOLAR_MASS},
    /* jupiter */
    {4.84143144246472090e+00, -1.16032004402742839e+00, -1.03622044471123109e-01,
     1.66007664274403694e-03 * NB_DAYS_PER_YEAR, 7.69901118419740425e-03 * NB_DAYS_PER_YEAR,
     -6.90460016972063023e-05 * NB_DAYS_PER_YEAR, 9.54791938424326609e-04 * NB_SOLAR_MASS},
    /* saturn */
    {8.34336671824457987e+00, 4.12479856412430479e+00, -4.03523417114321381e-01,
     -2.76742510726862411e-03 * NB_DAYS_PER_YEAR, 4.99852801234917238e-03 * NB_DAYS_PER_YEAR,
     2.30417297573763929e-05 * NB_DAYS_PER_YEAR, 2.85885980666130812e-04 * NB_SOLAR_MASS},
    /* uranus */
    {1.28943695621391310e+01, -1.51111514016986312e+01, -2.23307578892655734e-01,
     2.96460137564761618e-03 * NB_DAYS_PER_YEAR, 2.37847173959480950e-03 * NB_DAYS_PER_YEAR,
     -2.96589568540237556e-05 * NB_DAYS_PER_YEAR, 4.36624404335156298e-05 * NB_SOLAR_MASS},
    /* neptune */
    {1.53796971148509165e+01, -2.59193146099879641e+01, 1.79258772950371181e-01,
     2.68067772490389322e-03 * NB_DAYS_PER_YEAR, 1.62824170038242295e-03 * NB_DAYS_PER_YEAR,
     -9.51592254519715870e-05 * NB_DAYS_PER_YEAR, 5.15138902046611451e-05 * NB_SOLAR_MASS},
};

static void nb_advance(nb_body *b, double dt)
{
    int i, j;
    for (i = 0; i < NB_BODIES; i++) {
        for (j = i + 1; j < NB_BODIES; j++) {
            double dx = b[i].x - b[j].x;
            double dy = b[i].y - b[j].y;
            double dz = b[i].z - b[j].z;
            double d2 = dx * dx + dy * dy + dz * dz;
            double mag = dt / (d2 * sqrt(d2));
            b[i].vx -= dx * b[j].mass * mag;
            b[i].vy -= dy * b[j].mass * mag;
            b[i].vz -= dz * b[j].mass * mag;
            b[j].vx += dx * b[i].mass * mag;
            b[j].vy += dy * b[i].mass * mag;
            b[j].vz += dz * b[i].mass * mag;
        }
    }
    for (i = 0; i < NB_BODIES; i++) {
        b[i].x += dt * b[i].vx;
        b[i].y += dt * b[i].vy;
        b[i].z += dt * b[i].vz;
    }
}

static double nb_energy(const nb_body *b)
{
    double e = 0.0;
    int i, j;
    for (i = 0; i < NB_BODIES; i++) {
        e += 0.5 * b[i].mass * (b[i].vx * b[i].vx + b[i].vy * b[i].vy + b[i].vz * b[i].vz);
        for (j = i + 1; j < NB_BODIES; j++) {
            double dx = b[i].x - b[j].x;
            double dy = b[i].y - b[j].y;
            double dz = b[i].z - b[j].z;
            e -= (b[i].mass * b[j].mass) / sqrt(dx * dx + dy * dy + dz * dz);
        }
    }
    return e;
}

static void nb_offset_momentum(nb_body *b)
{
    double px = 0.0, py = 0.0, pz = 0.0;
    int i;
    for (i = 0; i < NB_BODIES; i++) {
        px += b[i].vx * b[i].mass;
        py += b[i].vy * b[i].mass;
        pz += b[i].vz * b[i].mass;
    }
    b[0].vx = -px / NB_SOLAR_MASS;
    b[0].vy = -py / NB_SOLAR_MASS;
    b[0].vz = -pz / NB_SOLAR_MASS;
}

static int nb_usage(void)
{
    fprintf(stderr,
            "usage: nbody STEPS\n"
            "  STEPS  number of dt=0.01 steps to simulate, 0..1000000000000\n");
    return 2;
}

int main(int argc, char **argv)
{
    nb_body bodies[NB_BODIES];
    long long steps = 0, n;
    const char *s;
    int i;

    if (argc != 2 || argv[1][0] == '\0')
        return nb_usage();
    for (s = argv[1]; *s; s++) {
        if (*s < '0' || *s > '9') {
            fprintf(stderr, "nbody: invalid STEPS '%s'\n", argv[1]);
            return nb_usage();
        }
        steps = steps * 10 + (*s - '0');
        if (steps > NB_MAX_STEPS) {
            fprintf(stderr, "nbody: STEPS too large\n");
            return nb_usage();
        }
    }

    for (i = 0; i < NB_BODIES; i++)
        bodies[i] = nb_initial[i];
    nb_offset_momentum(bodies);
    printf("%.9f\n", nb_energy(bodies));
    for (n = 0; n < steps; n++)
        nb_advance(bodies, 0.01);
    printf("%.9f\n", nb_energy(bodies));
    return 0;
}
